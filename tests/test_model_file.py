"""The model file is data (issue 14): ``load_model`` checks every field against a schema before it
allocates anything, reads a bounded number of bytes, resets settings that would steer later calls
(``checkpoint_dir``, ``net_kwargs``, ``callbacks``), writes nothing, and lets only ``ModelFileError``
out for anything about the file; ``save_model`` stores MultiIndex (tuple) and int column labels.

The fuzz tests (hypothesis) mutate a valid file (bytes flipped or cut, with and without recomputed
digests; JSON fields replaced, deleted or swapped with recomputed digests; random JSON in place of
a member) and check the property: ``load_model`` returns an estimator whose ``predict`` works on
rows of the training data, or raises ``ModelFileError``.
"""

import copy
import hashlib
import json
import os
import subprocess
import sys
import textwrap
import warnings
import zipfile

import numpy as np
import pandas as pd
import pytest

from sk_htlnet import HTLNetRegressor
from sk_htlnet.datasets import make_funnel
from sk_htlnet.io import ModelFileError, load_model, save_model
from sk_htlnet.modules import ARCHITECTURES

from _sizes import SMALL_NET

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

FAST = dict(SMALL_NET, max_iter=1, random_state=0, n_threads=1)
# Deterministic by default (250 examples per fuzz test, about 15 s in all); a longer random search:
# SK_HTLNET_FUZZ_EXAMPLES=5000 pytest tests/test_model_file.py -k fuzz
_LONG_FUZZ = os.environ.get("SK_HTLNET_FUZZ_EXAMPLES")
FUZZ = settings(max_examples=int(_LONG_FUZZ or 250), deadline=2000, derandomize=not _LONG_FUZZ,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def funnel():
    return make_funnel(400, n_stages=2, n_categorical=2, n_numeric=2, stage_rates=0.5, random_state=0)


@pytest.fixture(scope="module")
def fitted(funnel):
    X, Y = funnel
    return HTLNetRegressor(**FAST).fit(X, Y)


@pytest.fixture(scope="module")
def saved(fitted, tmp_path_factory):
    """The members of a valid file: {"config": parsed config.json, "weights": bytes, "file": bytes}."""
    path = tmp_path_factory.mktemp("model") / "m.htlnet"
    save_model(fitted, path)
    with zipfile.ZipFile(path) as z:
        return {"config": json.loads(z.read("config.json")), "weights": z.read("weights.safetensors"),
                "file": path.read_bytes()}


def _write(path, config, weights, manifest=None, digests=True):
    """A model file from its members (config as a JSON value or bytes), with recomputed digests."""
    config = config if isinstance(config, bytes) else json.dumps(config).encode()
    if manifest is None:
        manifest = json.dumps({
            "config.json": hashlib.sha256(config).hexdigest() if digests else "0" * 64,
            "weights.safetensors": hashlib.sha256(weights).hexdigest() if digests else "0" * 64,
        }).encode()
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("config.json", config)
        z.writestr("weights.safetensors", weights)
        z.writestr("manifest.json", manifest)
    return path


def _edited(saved, edit):
    config = copy.deepcopy(saved["config"])
    edit(config)
    return config


def _loads_and_predicts_or_refuses(path, X):
    """The fuzz property.  Returns "refused" or "loaded"; any other exception fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            est = load_model(path)
        except ModelFileError as exc:
            hypothesis.event(f"refused: {str(exc)[:40]}")
            return "refused"
        pred = est.predict(X)  # raises FloatingPointError on a non-finite prediction: fails the test
    assert pred.shape == (len(X), est.n_stages_ + 1)
    hypothesis.event("loaded")
    return "loaded"


# ---- settings that would steer later calls --------------------------------------------------------
def test_paths_and_skorch_settings_in_a_file_are_reset_and_loading_writes_nothing(
        saved, funnel, tmp_path, monkeypatch):
    """A file naming a checkpoint folder (relative to the user's cwd) and skorch settings: the old
    loader created the folder (skorch's Checkpoint makes it when the net is initialised), the next
    fit or partial_fit of the loaded estimator read or wrote checkpoints there, and ``net_kwargs``
    reached skorch's internals (here the name of the checkpoint's history file)."""
    X, Y = funnel
    cwd = tmp_path / "cwd"
    (cwd / "planted").mkdir(parents=True)
    (cwd / "planted" / "params.pt").write_bytes(b"a pickle the author of the file chose")
    (cwd / "victim.txt").write_text("precious")
    before = sorted(p.relative_to(cwd) for p in cwd.rglob("*"))
    monkeypatch.chdir(cwd)
    for folder in ("planted", "created_by_load"):
        hostile = _write(tmp_path / "hostile.htlnet", _edited(saved, lambda c: c["params"].update(
            checkpoint_dir=folder,
            net_kwargs={"callbacks__checkpoint__f_history": "../victim.txt"},
            callbacks=["a callback"],
        )), saved["weights"])
        with pytest.warns(UserWarning, match=r"sets \['checkpoint_dir', 'net_kwargs', 'callbacks'\].*reset to None"):
            est = load_model(hostile)
        assert (est.checkpoint_dir, est.net_kwargs, est.callbacks) == (None, None, None)
        assert sorted(p.relative_to(cwd) for p in cwd.rglob("*")) == before  # nothing created
        est.partial_fit(X, Y)
        est.set_params(max_iter=1).fit(X, Y)  # a fresh fit: no checkpoint read, none written
        assert sorted(p.relative_to(cwd) for p in cwd.rglob("*")) == before
        assert (cwd / "victim.txt").read_text() == "precious"


def test_save_model_does_not_store_paths_skorch_settings_or_callbacks(funnel, tmp_path):
    from skorch.callbacks import EpochTimer

    X, Y = funnel
    est = HTLNetRegressor(**FAST, checkpoint_dir=tmp_path / "ck", net_kwargs={"optimizer__betas": (0.9, 0.99)},
                          callbacks=[("timer2", EpochTimer())]).fit(X, Y)
    with pytest.warns(UserWarning, match=r"did not store \['checkpoint_dir', 'net_kwargs', 'callbacks'\]"):
        save_model(est, tmp_path / "m.htlnet")
    with zipfile.ZipFile(tmp_path / "m.htlnet") as z:
        params = json.loads(z.read("config.json"))["params"]
    assert (params["checkpoint_dir"], params["net_kwargs"], params["callbacks"]) == (None, None, None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a file save_model wrote loads without a warning
        loaded = load_model(tmp_path / "m.htlnet")
    assert loaded.checkpoint_dir is None and loaded.net_kwargs is None and loaded.callbacks is None
    np.testing.assert_array_equal(loaded.predict(X), est.predict(X))


def test_numpy_parameter_values_are_stored_as_plain_json(funnel, tmp_path):
    X, Y = funnel
    est = HTLNetRegressor(**{**FAST, "tower_units": np.array([16, 8]), "learning_rate": np.float64(0.002),
                             "batch_size": np.int64(128), "task_weights": np.array([1.0, 1.0, 2.0]),
                             "random_state": np.int64(3)}).fit(X, Y)
    save_model(est, tmp_path / "m.htlnet")
    loaded = load_model(tmp_path / "m.htlnet")
    assert (loaded.tower_units, loaded.batch_size, loaded.task_weights) == ([16, 8], 128, [1.0, 1.0, 2.0])
    np.testing.assert_array_equal(loaded.predict(X), est.predict(X))


# ---- sizes declared in the file -----------------------------------------------------------------------
_PEAK_RSS = textwrap.dedent("""
    import gc, resource, sys, warnings
    from sk_htlnet.io import ModelFileError, load_model
    warnings.simplefilter("ignore")

    def status(key):  # kB, from /proc/self/status
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(key))

    def reset_peak():  # Linux resets the peak RSS (VmHWM) on "5"; else the peak since the start
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            return status("VmRSS"), lambda: status("VmHWM")
        except OSError:
            usage = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            return usage(), usage

    for path in sys.argv[1:]:
        gc.collect()
        before, peak = reset_peak()
        try:
            load_model(path)
            outcome = "loaded"
        except ModelFileError as exc:
            outcome = "refused: " + str(exc)[:120]
        print(path, (peak() - before) // 1024, "MiB", outcome, flush=True)
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the peak memory from /proc")
def test_small_files_declaring_huge_sizes_are_refused_before_allocating(saved, tmp_path):
    """Peak memory of a fresh process loading, in turn: the valid file (twice); a 2 GiB embedding table
    declared by a ~20 KB file (the old loader allocated it); a 64 MiB config.json compressed to
    ~80 KB (a zip bomb; the old loader inflated and parsed it).  Both are refused, each with a peak
    of less than 100 MiB above the memory in use before the call."""
    valid = _write(tmp_path / "valid.htlnet", saved["config"], saved["weights"])
    huge_table = _write(tmp_path / "huge_table.htlnet", _edited(
        saved, lambda c: c["fitted"]["net_spec"]["module"].update(cardinalities=[2**27, 22])), saved["weights"])
    bomb = _write(tmp_path / "bomb.htlnet", json.dumps(saved["config"]).encode() + b" " * (64 << 20),
                  saved["weights"])
    assert os.path.getsize(huge_table) < 30_000 and os.path.getsize(bomb) < 200_000
    out = subprocess.run([sys.executable, "-c", _PEAK_RSS, str(valid), str(valid), str(huge_table), str(bomb)],
                         capture_output=True, text=True, timeout=300, check=True).stdout.splitlines()
    print(f"{os.path.getsize(huge_table)} and {os.path.getsize(bomb)} bytes")  # shown with pytest -s
    print("\n".join(out))  # (the first load of the valid file warms up torch)
    assert [line.split()[3] for line in out] == ["loaded", "loaded", "refused:", "refused:"]
    assert "cardinalities" in out[2] and "zip bomb" in out[3]
    assert all(int(line.split()[1]) < 100 for line in out[2:])


def test_max_bytes_bounds_the_file_and_its_decompressed_members(saved, tmp_path):
    path = _write(tmp_path / "m.htlnet", saved["config"], saved["weights"])
    size = os.path.getsize(path)
    with pytest.raises(ModelFileError, match=f"the file has {size} bytes, more than max_bytes={size - 1}"):
        load_model(path, max_bytes=size - 1)
    padded = _write(tmp_path / "padded.htlnet", json.dumps(saved["config"]).encode() + b" " * 200_000,
                    saved["weights"])
    assert os.path.getsize(padded) < 30_000
    with pytest.raises(ModelFileError, match="decompresses to more than .* max_bytes=100000"):
        load_model(padded, max_bytes=100_000)
    load_model(padded)  # the same file within the default limit
    for bad in (0, -1, 1.5, True, "1"):
        with pytest.raises(ValueError, match="max_bytes must be a positive int") as info:
            load_model(path, max_bytes=bad)
        assert not isinstance(info.value, ModelFileError)


def test_thread_counts_and_sizes_above_the_caps_are_refused(saved, fitted, tmp_path):
    for name, value in [("n_threads", 10**6), ("embedding_dim", 10**6), ("n_bins", 10**6),
                        ("n_experts", 10**5), ("tower_units", [16] * 1000), ("tower_units", [10**7])]:
        path = _write(tmp_path / "m.htlnet", _edited(saved, lambda c: c["params"].update({name: value})),
                      saved["weights"])
        with pytest.raises(ModelFileError, match=f"params.{name}: expected"):
            load_model(path)
    with pytest.raises(ValueError, match="n_threads"):  # save_model does not write what load_model refuses
        save_model(copy.deepcopy(fitted).set_params(n_threads=10**6), tmp_path / "m.htlnet")


# ---- errors other than ModelFileError -----------------------------------------------------------------
def test_deeply_nested_json_is_a_model_file_error(saved, tmp_path):
    # padded with spaces: fewer than one array per 8 bytes, so the parser, not the pre-scan, refuses it
    deep = b"[" * 100_000 + b"]" * 100_000 + b" " * 700_000
    header = len(deep).to_bytes(8, "little") + deep
    for name, members in [("config.json", (deep, saved["weights"], None)),
                          ("manifest.json", (saved["config"], saved["weights"], deep[99_000:-799_000])),
                          ("weights.safetensors header", (saved["config"], header, None))]:
        # the manifest (at most 4096 bytes) cannot nest deep enough under one array per 8 bytes
        why = ": 1000 JSON objects" if name == "manifest.json" else " is not valid JSON: RecursionError"
        with pytest.raises(ModelFileError, match=name + why):
            load_model(_write(tmp_path / "deep.htlnet", *members))


@pytest.mark.parametrize("config, weights, match", [
    (b"[]", None, "config.json: expected a JSON object"),  # the old loader: AttributeError
    (None, b"not safetensors", "weights.safetensors: .* too short|declares a header"),  # SafetensorError
    (None, (10**6).to_bytes(8, "little") + b"{}", "declares a header of 1000000 bytes"),
    (None, (2).to_bytes(8, "little") + b"{}", "tensors .* are missing"),
    (b'{"format": "sk_htlnet-model", "format": "x"}', None, "repeats the key"),
    (b"\xff\xfe", None, "config.json is not valid JSON: UnicodeDecodeError"),
])
def test_malformed_members_are_model_file_errors(saved, tmp_path, config, weights, match):
    path = _write(tmp_path / "m.htlnet", saved["config"] if config is None else config,
                  saved["weights"] if weights is None else weights)
    with pytest.raises(ModelFileError, match=match):
        load_model(path)


# ---- fields that contradict each other ----------------------------------------------------------------
def _set(path, value):
    def edit(config):
        node = config
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value(node[path[-1]]) if callable(value) else value
    return edit


@pytest.mark.parametrize("edit, match", [
    (_set(("fitted", "vocabularies", 0), lambda v: v[:-1]), "module.cardinalities: expected"),
    (_set(("fitted", "vocabularies", 0), lambda v: v + v[:1]), r"vocabularies\[0\]: expected distinct values"),
    (_set(("fitted", "mean"), lambda v: v[:-1]), "fitted.mean: expected a list of 2 items"),
    (_set(("fitted", "bin_edges", 0), lambda v: v[::-1]), r"bin_edges\[0\]: expected strictly increasing"),
    (_set(("fitted", "scale", 0), 0.0), "fitted.scale items: expected finite positive numbers"),
    (_set(("fitted", "min", 0), 1e9), r"fitted.min\[0\]: expected at most max\[0\]"),
    (_set(("fitted", "categorical_mask", 2), True), "vocabularies: expected a list of 3 items"),
    (_set(("fitted", "target_names"), lambda v: ["extra"] + v), "n_stages: expected an int in"),
    (_set(("fitted", "y_1d"), True), "y_1d: expected false for 3 targets"),
    (_set(("fitted", "feature_names_in", 0), "other"), "feature_names_in: expected the column labels when"),
    (_set(("fitted", "n_features_in"), 5), "n_features_in: expected an int in"),
    (_set(("fitted", "transform", "knots_y"), lambda v: v[:-1]), "knots_y: expected a list of"),
    (_set(("fitted", "transform", "std"), -1.0), "transform.std: expected a finite positive number"),
    (_set(("fitted", "transform", "low"), 1e9), "transform.low: expected at most high"),
    (_set(("fitted", "net_spec", "criterion", "core_loss"), "mse"), "module.core_prior: expected a finite number"),
    (_set(("fitted", "net_spec", "criterion", "n_stages"), 1), "criterion.n_stages: expected an int in"),
    (_set(("fitted", "net_spec", "criterion", "task_weights"), [1.0, 2.0]), "criterion.task_weights: expected"),
    (_set(("fitted", "net_spec", "criterion", "not_a_setting"), 1.0), r"unknown settings \['not_a_setting'\]"),
    (_set(("fitted", "net_spec", "module", "embedding_dim"), 8), "module.embedding_dim: expected 4"),
    (_set(("fitted", "net_spec", "module", "tau"), 2.0), "module.tau: expected 1.0"),
    (_set(("fitted", "net_spec", "module", "numeric_edges", 0), lambda v: v[:-1]), r"numeric_edges\[0\]: expected"),
    (_set(("fitted", "net_spec", "architecture"), "mmoe"), "architecture: expected one of"),
    (_set(("params", "numeric_encoding"), "linear"), r"bin_edges\[0\]: expected at most 0 edges"),
    (_set(("params", "numeric_encoding"), "quantile"), "module.cardinalities: expected"),
    (_set(("params", "core_loss"), "tweedie"), "criterion.core_loss: expected 'tweedie'"),
    (_set(("params", "target_transform"), "log1p"), "target_transform: expected 'none' with"),
    (_set(("params", "device"), "meta"), "params.device: expected 'cpu', 'cuda' or 'cuda:N'"),
    (_set(("params", "not_a_parameter"), 1), r"unknown parameter\(s\) \['not_a_parameter'\]"),
    (_set(("params", "learning_rate"), float("inf")), "params.learning_rate: expected finite numbers"),
    (_set(("params", "batch_size"), True), "params.batch_size: expected a number, not true or false"),
    (_set(("fitted", "feature_names_in"), None), "feature_names_in: expected the column labels when"),
    (_set(("fitted", "net_spec", "criterion", "core_scale"), -1.0), "criterion.core_scale: expected a finite positive"),
])
def test_contradictory_fields_are_refused_at_load(saved, tmp_path, edit, match):
    """Each file has valid digests: the old loader loaded most of these, and predict then failed
    (an index or shape error) or was silently wrong (a flipped scale, a core loss read as another)."""
    path = _write(tmp_path / "m.htlnet", _edited(saved, edit), saved["weights"])
    with pytest.raises(ModelFileError, match=match):
        load_model(path)


def test_weights_of_other_shapes_or_not_finite_are_refused(saved, fitted, tmp_path):
    import torch
    from safetensors.torch import save as save_safetensors

    state = {k: v.clone() for k, v in fitted.net_.module_.state_dict().items()}
    name = next(iter(state))
    for bad, match in [({**state, name: state[name][:-1]}, f"{name}: expected dtype F32 and shape"),
                       ({**state, name: state[name].double()}, f"{name}: expected dtype F32"),
                       ({**state, name: torch.full_like(state[name], float("nan"))}, "expected finite values"),
                       ({k: v for k, v in state.items() if k != name}, "are missing")]:
        path = _write(tmp_path / "m.htlnet", saved["config"], save_safetensors(bad))
        with pytest.raises(ModelFileError, match=match):
            load_model(path)


def test_finite_weights_that_overflow_fail_at_load_not_in_predict(saved, fitted, funnel, tmp_path):
    """Every field agrees, but the net's outputs overflow: the probe prediction refuses the file
    (the old loader loaded it, and predict raised FloatingPointError on every row)."""
    from safetensors.torch import save as save_safetensors

    state = {k: v.clone() for k, v in fitted.net_.module_.state_dict().items()}
    for name, tensor in state.items():  # large activations, then heads of +3e38 and -3e38 in turn, which
        if name.startswith("towers."):  # sum +inf and -inf to NaN
            tensor.fill_(100.0)
        elif name.startswith("heads.") and name.endswith("weight"):
            tensor[..., 0::2], tensor[..., 1::2] = 3e38, -3e38
    path = _write(tmp_path / "m.htlnet", saved["config"], save_safetensors(state))
    with pytest.raises(ModelFileError, match="cannot predict: a probe prediction on 22 rows .* fails with "
                                             "FloatingPointError: 22 of 22 rows got a non-finite prediction"):
        load_model(path)


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_every_architecture_and_encoding_round_trips(funnel, tmp_path, architecture):
    """The weights' expected shapes come from building each net on the meta device."""
    X, Y = funnel
    for encoding, core_loss in [("piecewise_linear", "ziln"), ("quantile", "mse"), ("periodic", "tweedie")]:
        est = HTLNetRegressor(**FAST, architecture=architecture, numeric_encoding=encoding,
                              core_loss=core_loss).fit(X, Y)
        save_model(est, tmp_path / "m.htlnet")
        np.testing.assert_array_equal(load_model(tmp_path / "m.htlnet").predict(X), est.predict(X))


# ---- column labels ------------------------------------------------------------------------------------
@pytest.mark.parametrize("labels", [
    lambda n: pd.MultiIndex.from_tuples([("group", i, f"c{i}") for i in range(n)]),
    lambda n: pd.Index([10 + 3 * i for i in range(n)]),
])
def test_multiindex_and_int_column_labels_round_trip(funnel, tmp_path, labels):
    X, Y = funnel
    X = X.set_axis(labels(X.shape[1]), axis=1)
    est = HTLNetRegressor(**FAST).fit(X, Y)
    save_model(est, tmp_path / "m.htlnet")
    loaded = load_model(tmp_path / "m.htlnet")
    assert loaded.feature_encoder_.columns_ == est.feature_encoder_.columns_ == list(X.columns)
    assert [type(c) for c in loaded.feature_encoder_.columns_] == [type(c) for c in X.columns]
    np.testing.assert_array_equal(loaded.predict(X), est.predict(X))


def test_a_model_fitted_on_an_array_round_trips(funnel, tmp_path):
    X, Y = funnel
    values = X.to_numpy(dtype=object)
    est = HTLNetRegressor(**FAST, categorical_features=[0, 1]).fit(values, Y.to_numpy())
    save_model(est, tmp_path / "m.htlnet")
    loaded = load_model(tmp_path / "m.htlnet")
    assert not hasattr(loaded, "feature_names_in_") and loaded.feature_encoder_.columns_ == [0, 1, 2, 3]
    np.testing.assert_array_equal(loaded.predict(values), est.predict(values))


def test_a_column_label_the_file_cannot_store_is_a_clear_error(funnel, tmp_path):
    X, Y = funnel
    est = HTLNetRegressor(**FAST).fit(X.set_axis(pd.Index([("a", ("nested", i)) for i in range(X.shape[1])],
                                                          tupleize_cols=False), axis=1), Y)
    with pytest.raises(ValueError, match="nests tuples"):
        save_model(est, tmp_path / "m.htlnet")


# ---- fuzzing --------------------------------------------------------------------------------------------
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=10,
)
_SPECIAL = st.sampled_from([0, -1, 1, 2, 10**6, 2**31, 2**63, -2**63, 10**400, 0.0, -0.0, 1e-300, 1e300,
                            float("nan"), float("inf"), -float("inf"), True, False, None, "", "x", [], {}])


def _paths(node, prefix=()):
    if prefix:
        yield prefix
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in children:
        yield from _paths(child, prefix + (key,))


def _get(node, path):
    """The node at path; KeyError where an earlier mutation removed it or changed its parent's type."""
    for key in path:
        if not (isinstance(node, dict) and key in node or isinstance(node, list) and type(key) is int
                and 0 <= key < len(node)):
            raise KeyError(path)
        node = node[key]
    return node


def _mutate(config, data):
    """Replace, delete or swap fields of a copy of config (drawn from ``data``)."""
    config = copy.deepcopy(config)
    paths = list(_paths(config))
    for _ in range(data.draw(st.integers(1, 3), label="n_mutations")):
        path = data.draw(st.sampled_from(paths), label="path")
        try:
            parent = _get(config, path[:-1])
            _get(config, path)
        except KeyError:
            continue
        op = data.draw(st.sampled_from(["replace", "special", "delete", "swap", "duplicate"]), label="op")
        if op == "delete":
            del parent[path[-1]]
        elif op == "swap":
            other = data.draw(st.sampled_from(paths), label="other")
            try:
                other_parent, other_value = _get(config, other[:-1]), _get(config, other)
            except KeyError:
                continue
            if other[:len(path)] == path or path[:len(other)] == other:
                continue
            parent[path[-1]], other_parent[other[-1]] = copy.deepcopy(other_value), copy.deepcopy(parent[path[-1]])
        elif op == "duplicate" and isinstance(parent, list):
            parent.insert(path[-1], copy.deepcopy(parent[path[-1]]))
        else:
            parent[path[-1]] = data.draw(_JSON if op == "replace" else _SPECIAL, label="value")
    return config


@FUZZ
@given(data=st.data())
def test_fuzz_fields_replaced_deleted_or_swapped_with_recomputed_digests(saved, funnel, tmp_path, data):
    config = _mutate(saved["config"], data)
    path = _write(tmp_path / "m.htlnet", json.dumps(config).encode(), saved["weights"])
    _loads_and_predicts_or_refuses(path, funnel[0].iloc[:50])


@FUZZ
@given(member=st.sampled_from(["config", "weights"]),
       flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)), min_size=1, max_size=4),
       cut=st.none() | st.floats(0, 1, exclude_max=True), digests=st.booleans())
def test_fuzz_member_bytes_flipped_or_cut(saved, funnel, tmp_path, member, flips, cut, digests):
    config, weights = json.dumps(saved["config"]).encode(), saved["weights"]
    target = bytearray(config if member == "config" else weights)
    for where, xor in flips:
        target[int(where * len(target))] ^= xor
    if cut is not None:
        target = target[: int(cut * len(target))]
    config, weights = (bytes(target), weights) if member == "config" else (config, bytes(target))
    path = _write(tmp_path / "m.htlnet", config, weights, digests=digests)
    outcome = _loads_and_predicts_or_refuses(path, funnel[0].iloc[:50])
    assert digests or outcome == "refused"


@FUZZ
@given(flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)), max_size=4),
       cut=st.none() | st.floats(0, 1, exclude_max=True))
def test_fuzz_file_bytes_flipped_or_cut(saved, funnel, tmp_path, flips, cut):
    data = bytearray(saved["file"])
    for where, xor in flips:
        data[int(where * len(data))] ^= xor
    if cut is not None:
        data = data[: int(cut * len(data))]
    path = tmp_path / "m.htlnet"
    path.write_bytes(bytes(data))
    _loads_and_predicts_or_refuses(path, funnel[0].iloc[:50])  # a flipped timestamp still loads


@FUZZ
@given(member=st.sampled_from(["config.json", "manifest.json", "header"]), value=_JSON)
def test_fuzz_random_json_in_place_of_a_member(saved, funnel, tmp_path, member, value):
    text = json.dumps(value).encode()
    config, weights, manifest = saved["config"], saved["weights"], None
    if member == "config.json":
        config = text
    elif member == "manifest.json":
        manifest = text
    else:
        weights = len(text).to_bytes(8, "little") + text + weights[8 + int.from_bytes(weights[:8], "little"):]
    path = _write(tmp_path / "m.htlnet", config, weights, manifest)
    assert _loads_and_predicts_or_refuses(path, funnel[0].iloc[:50]) == "refused"


@FUZZ
@given(data=st.data())
def test_fuzz_weights_header_fields_with_recomputed_digests(saved, funnel, tmp_path, data):
    weights = saved["weights"]
    size = int.from_bytes(weights[:8], "little")
    header = _mutate(json.loads(weights[8:8 + size]), data)
    text = json.dumps(header).encode()
    path = _write(tmp_path / "m.htlnet", saved["config"], len(text).to_bytes(8, "little") + text + weights[8 + size:])
    _loads_and_predicts_or_refuses(path, funnel[0].iloc[:50])


# ---- the attacker's report on the file format (round 2) -----------------------------------------
_NO_WRITES = textwrap.dedent("""
    import sys
    from sk_htlnet.io import ModelFileError, load_model
    if sys.argv[2] == "valid":
        load_model(sys.argv[1])
    else:
        try:
            load_model(sys.argv[1])
            raise AssertionError("loaded a file with a tensor missing")
        except ModelFileError as exc:
            assert "are missing" in str(exc), exc  # refused by the weights' header, after the meta build
        assert "torch._dynamo" not in sys.modules
""")


@pytest.mark.parametrize("weights", ["valid", "a tensor missing"])
def test_loading_creates_no_folder_or_temp_file(saved, fitted, tmp_path, weights):
    """Building the net on the meta device ran torch's Python reference kernels (``randn(...) *
    0.05``), which import torch._dynamo: that created ``$TMPDIR/torchinductor_<user>`` and a temp file.
    A file refused by its weights' header has been through the meta build and nothing else that
    imports torch's compiler: it must leave nothing and import no dynamo.  A valid file goes on to
    build the net, whose optimiser imports torch._dynamo, which creates its (empty) cache folder,
    as every fit does: that folder, and nothing else, may appear."""
    from safetensors.torch import save as save_safetensors

    if weights == "valid":
        data = saved["weights"]
    else:
        state = fitted.net_.module_.state_dict()
        data = save_safetensors({k: v.contiguous() for k, v in list(state.items())[1:]})
    path = _write(tmp_path / "m.htlnet", saved["config"], data)
    empty = tmp_path / "empty"
    empty.mkdir()
    env = dict(os.environ, TMPDIR=str(empty), TEMP=str(empty), TMP=str(empty))
    env["PYTHONPATH"] = os.pathsep.join([os.getcwd(), env.get("PYTHONPATH", "")])
    subprocess.run([sys.executable, "-c", _NO_WRITES, str(path), weights], cwd=empty, env=env, check=True, timeout=300)
    left = list(empty.iterdir())
    if weights == "valid":  # torch's own cache folder, left empty
        left = [p for p in left if not (p.name.startswith("torchinductor_") and p.is_dir() and not any(p.iterdir()))]
    assert left == []


def test_json_made_of_empty_containers_is_refused_before_parsing(saved, tmp_path):
    """``[{},{},...]`` costs about 25 times its bytes as Python objects (a 63 MB config.json, 0.36 MB
    compressed, took 1.5 GB before it was refused)."""
    body = json.dumps(saved["config"])[:-1] + ', "pad": [' + "{}," * 200_000 + "0]}"
    path = _write(tmp_path / "m.htlnet", body.encode(), saved["weights"])
    with pytest.raises(ModelFileError, match="JSON objects and arrays in .* bytes, more than one per 8"):
        load_model(path)
    # brackets inside strings do not count
    strings = _edited(saved, lambda c: c["fitted"]["target_names"].__setitem__(0, "[{" * 5000))
    load_model(_write(tmp_path / "s.htlnet", strings, saved["weights"]))


def test_config_json_has_its_own_lower_cap(saved, tmp_path):
    padded = json.dumps(saved["config"]).encode() + b" " * (17 << 20)
    path = _write(tmp_path / "m.htlnet", padded, saved["weights"])
    with pytest.raises(ModelFileError, match=r"config.json decompresses to more than .*max_bytes // 8"):
        load_model(path, max_bytes=100 << 20)


def test_a_zip64_record_declaring_more_members_is_refused(saved, tmp_path):
    import struct

    raw = _write(tmp_path / "m.htlnet", saved["config"], saved["weights"]).read_bytes()
    at = raw.rfind(b"PK\x05\x06")
    _, _, _, _, _, cd_size, cd_off, _ = struct.unpack("<4s4H2LH", raw[at:at + 22])
    out = bytearray(raw[:cd_off + cd_size])
    z64 = len(out)
    out += struct.pack("<4sQ2H2L2Q2Q", b"PK\x06\x06", 44, 45, 45, 0, 0, 10**6, 10**6, cd_size, cd_off)
    out += struct.pack("<4sLQL", b"PK\x06\x07", 0, z64, 1)
    out += struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 3, 3, cd_size, 0xFFFFFFFF, 0)
    path = tmp_path / "z64.htlnet"
    path.write_bytes(bytes(out))
    with pytest.raises(ModelFileError, match="declares 1000000 members"):
        load_model(path)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_or_folder_is_not_read(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ModelFileError, match="not a regular file"):
        load_model(fifo)  # used to block forever
    with pytest.raises(IsADirectoryError):
        load_model(tmp_path)


def test_the_probe_covers_out_of_vocabulary_rows_and_many_categories(funnel, tmp_path):
    from safetensors.torch import load as load_st, save as save_st

    X, Y = funnel
    X = X.copy()
    X["many"] = pd.Series(np.arange(len(X)) % 300, index=X.index).astype(str)
    est = HTLNetRegressor(**FAST).fit(X, Y)
    path = tmp_path / "m.htlnet"
    save_model(est, path)
    with zipfile.ZipFile(path) as z:
        config, weights = json.loads(z.read("config.json")), z.read("weights.safetensors")
    state = load_st(weights)
    cards = config["fitted"]["net_spec"]["module"]["cardinalities"]
    offsets = np.r_[0, np.cumsum(cards)[:-1]]
    for row in (int(offsets[0]), int(offsets[-1]) + 2 + 200):  # an OOV row; category 200 of "many"
        edited = {k: v.clone() for k, v in state.items()}
        edited["embedding.table"][row] = 3e38
        with pytest.raises(ModelFileError, match="cannot predict"):
            load_model(_write(tmp_path / "e.htlnet", config, save_st(edited)))


def test_bin_buffers_must_match_the_numeric_edges(funnel, tmp_path):
    from safetensors.torch import load as load_st, save as save_st

    X, Y = funnel
    est = HTLNetRegressor(**dict(FAST, numeric_encoding="piecewise_linear")).fit(X, Y)
    path = tmp_path / "m.htlnet"
    save_model(est, path)
    with zipfile.ZipFile(path) as z:
        config, weights = json.loads(z.read("config.json")), z.read("weights.safetensors")
    state = load_st(weights)
    for name, value in [("embedding.bin_low", state["embedding.bin_low"] + 0.5),
                        ("embedding.bin_width", state["embedding.bin_width"] * 0)]:
        edited = dict(state, **{name: value})
        with pytest.raises(ModelFileError, match=f"{name}: expected the values computed from"):
            load_model(_write(tmp_path / "e.htlnet", config, save_st(edited)))


def test_the_probe_runs_under_the_callers_threads(saved, tmp_path):
    import threading

    import torch

    path = _write(tmp_path / "m.htlnet", _edited(saved, lambda c: c["params"].update(n_threads=1024)),
                  saved["weights"])
    before = torch.get_num_threads()
    est = load_model(path)
    assert est.n_threads == 1024 and torch.get_num_threads() == before
    if os.path.isdir("/proc/self/task"):
        assert len(os.listdir("/proc/self/task")) < 256  # not 2046 OS threads
    assert threading.active_count() < 256


@pytest.mark.parametrize("edit, match", [
    (lambda c: c["fitted"]["target_names"].__setitem__(1, "stage_\ud800"), "encodable as UTF-8"),
    (lambda c: c["params"].update(device="cpu:0"), "params.device: expected 'cpu', 'cuda' or 'cuda:N'"),
    (lambda c: c["params"].update(device="cpu:5"), "params.device"),
    (lambda c: c["params"].update(categorical_features=[True]), "categorical_features: expected a mask of"),
])
def test_fields_that_would_fail_later_calls_are_refused(saved, tmp_path, edit, match):
    path = tmp_path / "m.htlnet"
    config = json.dumps(_edited(saved, edit), ensure_ascii=True).encode()
    with pytest.raises(ModelFileError, match=match):
        load_model(_write(path, config, saved["weights"]))
