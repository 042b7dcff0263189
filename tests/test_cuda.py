"""``device="cuda"``: the estimator trains, predicts, saves and reloads on a GPU.

These tests run only where torch sees a CUDA GPU (CI has none, so they are skipped there); the
message given without a GPU is tested in test_robustness.py, and loading a GPU model file on a
CPU-only machine below.
"""

import copy
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

from sk_htlnet import HTLNetRegressor
from sk_htlnet.datasets import make_funnel
from sk_htlnet.gradient import GRADIENT_ADJUSTMENTS
from sk_htlnet.io import load_model, save_model
from sk_htlnet.metrics import funnel_report
from sk_htlnet.modules import ARCHITECTURES
from sk_htlnet.preprocessing import NUMERIC_ENCODINGS
from sk_htlnet.core_losses import CORE_LOSSES

from _helpers import raw_outputs
from _sizes import SMALL_NET

FAST = dict(SMALL_NET, max_iter=3, random_state=0, n_threads=1)
gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def funnel():
    return make_funnel(4000, n_stages=2, n_categorical=3, n_numeric=3, signal=1.5, stage_rates=0.4,
                       random_state=0)


def _on_gpu(est):
    return all(p.is_cuda for p in est.net_.module_.parameters())


def _assert_outputs_match_the_cpu(est, X):
    """The fitted network's outputs on its device equal those of a CPU copy of the same weights
    (float32 kernels differ in rounding only)."""
    module = copy.deepcopy(est.net_.module_).cpu().eval()
    inputs, _ = est.make_dataset(X)[:]
    with torch.no_grad():
        expected = module(**inputs).numpy()
    np.testing.assert_allclose(raw_outputs(est, X), expected, rtol=1e-3, atol=1e-4)


@gpu
@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_every_architecture_trains_and_predicts_on_the_gpu(funnel, architecture):
    X, Y = funnel
    est = HTLNetRegressor(**FAST, architecture=architecture, device="cuda").fit(X, Y)
    assert _on_gpu(est)
    pred = est.predict(X)
    assert isinstance(pred, np.ndarray) and pred.dtype == np.float64 and pred.shape == Y.shape
    _assert_outputs_match_the_cpu(est, X)


@gpu
@pytest.mark.parametrize("rule", GRADIENT_ADJUSTMENTS)
@pytest.mark.parametrize("sparse_updates", [True, False])
def test_every_gradient_rule_with_row_weights_on_the_gpu(funnel, rule, sparse_updates):
    X, Y = funnel
    weight = np.random.default_rng(0).uniform(0.5, 2.0, len(X))
    est = HTLNetRegressor(**FAST, gradient_adjustment=rule, sparse_updates=sparse_updates, device="cuda")
    est.fit(X, Y, sample_weight=weight)
    assert _on_gpu(est)
    _assert_outputs_match_the_cpu(est, X)


@gpu
@pytest.mark.parametrize("encoding", NUMERIC_ENCODINGS)
@pytest.mark.parametrize("core_loss", [c for c in CORE_LOSSES if c != "auto"])
def test_every_encoding_and_core_loss_on_the_gpu(funnel, encoding, core_loss):
    X, Y = funnel
    est = HTLNetRegressor(**FAST, numeric_encoding=encoding, core_loss=core_loss, device="cuda").fit(X, Y)
    assert _on_gpu(est)
    _assert_outputs_match_the_cpu(est, X)


@gpu
def test_a_gpu_fit_learns_as_well_as_a_cpu_fit(funnel):
    """Same seed, same initial weights and batch order; the GPU's kernels and noise stream differ, so
    the two models are close in quality, not equal."""
    X, Y = funnel
    params = dict(FAST, max_iter=8, early_stopping=False)
    cpu = HTLNetRegressor(**params).fit(X, Y)
    gpu_est = HTLNetRegressor(**params, device="cuda").fit(X, Y)
    a, b = funnel_report(Y, cpu.predict(X)), funnel_report(Y, gpu_est.predict(X))
    assert (b["AUC"][:2] > 0.6).all()
    np.testing.assert_allclose(b["AUC"][:2], a["AUC"][:2], atol=0.03)
    np.testing.assert_allclose(b["Gini"].iloc[2], a["Gini"].iloc[2], atol=0.06)


@gpu
def test_a_gpu_model_file_loads_on_either_device(funnel, tmp_path):
    X, Y = funnel
    est = HTLNetRegressor(**FAST, device="cuda").fit(X, Y)
    save_model(est, tmp_path / "m.htlnet")
    on_gpu = load_model(tmp_path / "m.htlnet")
    on_cpu = load_model(tmp_path / "m.htlnet", device="cpu")
    assert _on_gpu(on_gpu) and not any(p.is_cuda for p in on_cpu.net_.module_.parameters())
    np.testing.assert_allclose(on_gpu.predict(X), est.predict(X), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(on_cpu.predict(X), est.predict(X), rtol=1e-4, atol=1e-5)


@gpu
def test_a_pickled_gpu_model_predicts_in_a_process_without_a_gpu(funnel, tmp_path):
    X, Y = funnel
    est = HTLNetRegressor(**FAST, device="cuda").fit(X, Y)
    path = tmp_path / "m.pkl"
    path.write_bytes(pickle.dumps((est, X)))
    code = (
        "import pickle, sys, warnings, numpy as np, torch; warnings.simplefilter('ignore'); "
        "assert not torch.cuda.is_available(); est, X = pickle.loads(open(sys.argv[1], 'rb').read()); "
        "np.save(sys.argv[2], est.predict(X))"
    )
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    subprocess.run([sys.executable, "-c", code, str(path), str(tmp_path / "p.npy")], env=env, check=True)
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), est.predict(X), rtol=1e-4, atol=1e-5)


@gpu
def test_partial_fit_and_a_resumed_checkpoint_on_the_gpu(funnel, tmp_path):
    X, Y = funnel
    est = HTLNetRegressor(**FAST, device="cuda")
    for chunk in np.array_split(np.arange(len(X)), 4):
        est.partial_fit(X.iloc[chunk], Y.iloc[chunk])
    assert _on_gpu(est) and est.n_iter_ == 4  # one epoch per call
    _assert_outputs_match_the_cpu(est, X)
    params = dict(FAST, max_iter=2, early_stopping=False, checkpoint_dir=tmp_path / "ck", device="cuda")
    HTLNetRegressor(**params).fit(X, Y)
    resumed = HTLNetRegressor(**{**params, "max_iter": 4}).fit(X, Y)
    assert len(resumed.history_) == 4 and _on_gpu(resumed)


@gpu
def test_gpu_fits_with_the_same_seed_agree_closely(funnel):
    """Bit-identical refits are not promised on a GPU (scatter-adds in the embedding backward run in
    no fixed order); two fits must still agree to a small tolerance."""
    X, Y = funnel
    a = HTLNetRegressor(**FAST, device="cuda").fit(X, Y).predict(X)
    b = HTLNetRegressor(**FAST, device="cuda").fit(X, Y).predict(X)
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)


def test_a_model_saved_from_a_gpu_loads_on_the_cpu_with_a_warning(funnel, tmp_path, monkeypatch):
    """Runs everywhere: a CPU-fitted model whose ``device`` parameter says "cuda" stands in for a
    file written on a GPU machine; here torch is made to report no GPU."""
    X, Y = funnel
    est = HTLNetRegressor(**FAST).fit(X, Y)
    save_model(est.set_params(device="cuda"), tmp_path / "m.htlnet")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.warns(UserWarning, match="no GPU is available"):
        loaded = load_model(tmp_path / "m.htlnet")
    assert loaded.device == "cpu"
    np.testing.assert_allclose(loaded.predict(X), est.set_params(device="cpu").predict(X), rtol=1e-6)
    with pytest.raises(ValueError, match="torch.cuda.is_available"):
        load_model(tmp_path / "m.htlnet", device="cuda")


def test_random_generators_survive_pickling_and_a_change_of_device(funnel):
    """Runs everywhere.  A pickled net stores its generators as (device, state): on the same device
    training continues exactly as without the round trip; a generator saved from a GPU (simulated
    here) is rebuilt on the CPU from the net's seed instead of failing to load."""
    X, Y = funnel
    est = HTLNetRegressor(**FAST).fit(X, Y)
    copy = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(copy.partial_fit(X, Y).predict(X), est.partial_fit(X, Y).predict(X))
    state = est.net_.__getstate__()
    assert state["noise_generator_"][0] == "cpu"
    state["noise_generator_"] = ("cuda:0", torch.zeros(16, dtype=torch.uint8))
    net = type(est.net_).__new__(type(est.net_))
    net.__setstate__(state)
    assert net.noise_generator_.device.type == "cpu"
    assert net.noise_generator_.initial_seed() == est.net_.noise_generator_.initial_seed()  # from the seed
