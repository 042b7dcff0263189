"""Data-parallel training on torch.distributed (issue 18): 2 processes under torchrun on the CPU
(gloo), run by tests/distributed/worker.py; the one-process behaviour of ``distributed=True``."""

import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.base import clone

from sk_htlnet import HTLNetRegressor
from sk_htlnet.datasets import make_funnel
from sk_htlnet.distributed import SINGLE, Group, join

WORKER = Path(__file__).resolve().parent / "distributed" / "worker.py"
dist = pytest.importorskip("torch.distributed")
pytestmark = pytest.mark.skipif(not dist.is_available(), reason="this torch build has no torch.distributed")


def _torchrun(mode, tmp_path, timeout=300):
    """Run the worker's ``mode`` on 2 ranks; return each rank's result."""
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(WORKER), mode,
         str(tmp_path)], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return [json.loads((tmp_path / f"{mode}_{rank}.json").read_text()) for rank in (0, 1)]


def test_one_step_on_two_ranks_is_one_step_on_the_whole_batch(tmp_path):
    """Each rank holds half of a 128-row batch: the gradients (relative to their largest entry) and
    the parameters after the step equal one process's on the whole batch, for every gradient rule,
    with sparse and dense embedding updates, and both ranks hold the same parameters."""
    results = _torchrun("step", tmp_path)
    assert set(results[0]) == {f"{rule}/{kind}" for rule in ("none", "htlnet", "pcgrad", "metabalance", "uncertainty")
                               for kind in ("sparse", "dense")}
    for result in results:
        for key, r in result.items():
            assert r["ranks_equal"], key
            assert r["n_grads"] >= 50, key  # every parameter of the network received a gradient
            assert r["grad_rel_diff"] < 1e-4, (key, r)
            assert r["max_abs_diff"] < 1e-6 < r["max_change"], (key, r)


def test_a_whole_fit_on_two_ranks(tmp_path):
    """Each rank fits on its half of the rows (rank 1 alone holds five categories of cat_0): the
    same parameters, vocabularies and predictions on both ranks, early stopping at the same epoch,
    every rank's batches in the history, quality within noise of one process on all rows."""
    r0, r1 = _torchrun("fit", tmp_path)
    assert r0["ranks_equal"] and r1["ranks_equal"]
    assert r0["n_iter"] == r1["n_iter"] < 40  # early stopping stopped both, at the same epoch
    assert r0["pred_digest"] == r1["pred_digest"]
    assert r0["vocabulary_cat_0"] == r1["vocabulary_cat_0"]
    assert set(r0["vocabulary_cat_0"]) == set(r1["local_categories"]) | set(r0["local_categories"])
    assert not {"15", "16", "17", "18", "19"} & set(r0["local_categories"])
    assert r0["batch_size"] == 256
    # 10,800 training rows: ceil(10800 / 256) = 43 steps on each rank, and 3 validation batches each
    assert r0["n_batches_epoch_1"] == 2 * (43 + 3)
    ours, alone = r0["report"], r0["single_report"]
    for stage in ("stage_1", "stage_2"):
        assert abs(ours[stage]["AUC"] - alone[stage]["AUC"]) < 0.02, (stage, ours[stage], alone[stage])
    assert abs(ours["core"]["Gini"] - alone["core"]["Gini"]) < 0.05
    for result in (r0, r1):
        assert "partial_fit" in result["refused"]["partial_fit"]
        assert "checkpoint_dir" in result["refused"]["checkpoint_dir"]


def test_a_nan_on_one_rank_stops_every_rank_at_the_same_step(tmp_path):
    """Only rank 1's core loss turns NaN (at its 12th step: epoch 2, of 8 steps each): the count
    of non-finite losses travels with the gradients, so both ranks raise the same error there."""
    r0, r1 = _torchrun("nan", tmp_path, timeout=150)
    for rule in ("htlnet", "none"):
        assert r0[rule] is not None and r1[rule] is not None, rule  # neither rank trained on
        assert r0[rule] == r1[rule], rule  # same epoch, same task, same step
        assert r0[rule]["reason"] == "nan" and r0[rule]["steps"] == 12, r0[rule]
        assert len(r0[rule]["tasks"]) == 1, r0[rule]


def test_without_a_launcher_distributed_is_an_ordinary_fit():
    """The same script runs on one process: distributed=True then gives the model of distributed=False."""
    assert join() is not SINGLE and not join().active  # no process group, WORLD_SIZE unset
    X, Y = make_funnel(600, n_stages=2, random_state=0)
    params = dict(max_iter=3, random_state=0, n_threads=1, batch_size=128)
    one = HTLNetRegressor(distributed=True, **params).fit(X, Y)
    plain = HTLNetRegressor(**params).fit(X, Y)
    np.testing.assert_array_equal(one.predict(X), plain.predict(X))
    assert clone(one).distributed is True  # clone copies a flag, never a process group (skorch#944)


def test_a_group_is_not_pickled_with_the_net():
    """A net trained on several ranks is saved and used by one process: its group pickles as the
    one-process group."""
    group = Group(rank=1, world_size=4)
    assert pickle.loads(pickle.dumps(group)) is SINGLE
    assert group.active and not SINGLE.active
    shares, _ = SINGLE.step_totals(torch.tensor([[1.0, float("nan")], [0.0, 2.0]]))
    torch.testing.assert_close(shares, torch.ones(2))  # one process: its losses are the global ones
