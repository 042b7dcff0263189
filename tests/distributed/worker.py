"""Run by tests/test_distributed.py under torchrun (2 processes, gloo): each mode writes one JSON
file per rank into the folder given as its last argument; the test reads and compares them."""

import copy
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _helpers import batch  # noqa: E402

from sk_htlnet import HTLNetRegressor  # noqa: E402
from sk_htlnet.datasets import make_funnel  # noqa: E402
from sk_htlnet.distributed import join  # noqa: E402
from sk_htlnet.modules.label_embedding import LabelEmbedding  # noqa: E402

SMALL = dict(embedding_dim=4, tower_units=(16, 8), label_embedding_dim=4, fusion_dim=8, n_threads=1)


def _params(net):
    return {name: p.detach().clone() for name, p in net.module_.named_parameters()}


def _grads(net):
    """Every parameter's gradient after the step (dense; zeros where none), criterion's included."""
    out = {}
    for name, p in net.get_all_learnable_params():
        g = p.grad
        out[name] = torch.zeros_like(p) if g is None else (g.to_dense() if g.is_sparse else g).detach().clone()
    return out


def step(out):
    """One training step on 2 ranks, each with half of a batch of 128 rows, against one step of one
    process on the whole batch, for each gradient rule."""
    group = join()
    # the Gumbel noise is drawn per rank by design; the comparison takes it out (expected labels)
    LabelEmbedding.label_probability = lambda self, logit, generator=None: torch.sigmoid(logit)
    X, Y = make_funnel(600, n_stages=2, random_state=0)
    result = {}
    for rule in ("none", "htlnet", "pcgrad", "metabalance", "uncertainty"):
        for sparse in (True, False):
            est = HTLNetRegressor(gradient_adjustment=rule, sparse_updates=sparse, max_iter=1, random_state=0,
                                  early_stopping=False, **SMALL).fit(X, Y)
            x, y = batch(est, X.iloc[:128], Y.iloc[:128])
            half = slice(64 * group.rank, 64 * (group.rank + 1))
            mine = ({k: v[half] for k, v in x.items()}, y[half])
            one, two = copy.deepcopy(est.net_), copy.deepcopy(est.net_)
            before = _params(one)
            one.train_step((x, y))
            two.group = group
            two.train_step(mine)
            expected, got = _params(one), _params(two)
            g_one, g_two = _grads(one), _grads(two)
            key = f"{rule}/{'sparse' if sparse else 'dense'}"
            result[key] = {
                "max_abs_diff": max(float((expected[n] - got[n]).abs().max()) for n in expected),
                "max_change": max(float((expected[n] - before[n]).abs().max()) for n in expected),
                # the gradients themselves (Adam's step hides their scale): relative to the largest
                "grad_rel_diff": max(float((g_one[n] - g_two[n]).abs().max()) / max(float(g_one[n].abs().max()), 1e-30)
                                     for n in g_one if float(g_one[n].abs().max()) > 0),
                "n_grads": sum(float(g.abs().max()) > 0 for g in g_one.values()),
            }
            # what the other rank ended with: equal parameters everywhere
            flat = torch.cat([p.reshape(-1) for p in got.values()])
            gathered = [torch.zeros_like(flat) for _ in range(group.world_size)]
            dist.all_gather(gathered, flat)
            result[key]["ranks_equal"] = bool(torch.equal(gathered[0], gathered[1]))
    return result


def fit(out):
    """A whole fit on 2 ranks, each on its half of 12,000 rows, rank 1 alone holding cat_0's
    categories 15-19: the parameters, vocabularies, stopping epoch and predictions on both ranks,
    and (rank 0) the quality of one process on all rows."""
    from sk_htlnet.metrics import funnel_report

    group = join()
    X, Y = make_funnel(15_000, n_stages=2, random_state=1)
    X_test, Y_test, X, Y = X.iloc[12_000:], Y.iloc[12_000:], X.iloc[:12_000], Y.iloc[:12_000]
    late = X["cat_0"].cat.codes.to_numpy() >= 15  # categories only rank 1 sees
    order = np.concatenate([np.flatnonzero(~late), np.flatnonzero(late)])
    shards = np.array_split(order, 2)
    mine = np.sort(shards[group.rank])
    params = dict(max_iter=40, early_stopping=True, n_iter_no_change=2, batch_size=256, random_state=0, **SMALL)
    est = HTLNetRegressor(distributed=True, **params).fit(X.iloc[mine], Y.iloc[mine])
    flat = torch.cat([p.detach().reshape(-1) for p in est.net_.module_.parameters()])
    gathered = [torch.zeros_like(flat) for _ in range(group.world_size)]
    dist.all_gather(gathered, flat)
    pred = est.predict(X_test)
    result = {
        "ranks_equal": bool(torch.equal(gathered[0], gathered[1])),
        "n_iter": int(est.n_iter_),
        "best_epoch_valid_loss": float(np.nanmin(est.history_[:, "valid_loss"])),
        "n_batches_epoch_1": len(est.history_[0]["batches"]),
        "vocabulary_cat_0": [str(v) for v in est.feature_encoder_.vocabularies_[0]],
        "local_categories": sorted(str(v) for v in X["cat_0"].iloc[mine].unique()),
        "pred_digest": float(np.abs(pred).sum()),
        "report": funnel_report(Y_test, pred).drop(columns="task").to_dict(orient="index"),
        "batch_size": int(est.batch_size_),
    }
    refused = {}
    for name, call in [("partial_fit", lambda: est.partial_fit(X.iloc[mine], Y.iloc[mine])),
                       ("checkpoint_dir", lambda: HTLNetRegressor(distributed=True, checkpoint_dir=str(out / "ck"),
                                                                  **params).fit(X.iloc[mine], Y.iloc[mine]))]:
        try:
            call()
            refused[name] = None
        except ValueError as exc:
            refused[name] = str(exc)
    result["refused"] = refused
    if group.rank == 0:  # one process on all the rows, same parameters
        alone = HTLNetRegressor(**params).fit(X, Y)
        result["single_report"] = funnel_report(Y_test, alone.predict(X_test)).drop(columns="task").to_dict(
            orient="index")
        result["single_n_iter"] = int(alone.n_iter_)
    return result


def nan(out):
    """Rank 1 alone gets a NaN core loss from its 12th training step on (rank 0's stay finite): both
    ranks must stop at that step with the same TrainingDivergedError, for the rule's path and the
    plain sum's (a rank that trained on would wait forever in the next step's collectives)."""
    from sk_htlnet import TrainingDivergedError
    from sk_htlnet.losses import HybridLoss

    group = join()
    X, Y = make_funnel(2_000, n_stages=2, random_state=0)
    X, Y = X.iloc[group.rank::2], Y.iloc[group.rank::2]
    original, calls = HybridLoss.task_loss, [0]

    def task_loss(self, t, out, y_true, sample_weight=None):
        loss = original(self, t, out, y_true, sample_weight)
        if torch.is_grad_enabled() and t == 2:
            calls[0] += 1
            if group.rank == 1 and calls[0] >= 12:
                return loss * float("nan")
        return loss

    HybridLoss.task_loss = task_loss
    result = {}
    for rule in ("htlnet", "none"):
        calls[0] = 0
        est = HTLNetRegressor(distributed=True, gradient_adjustment=rule, max_iter=5, early_stopping=False,
                              batch_size=256, random_state=0, **SMALL)
        try:
            est.fit(X, Y)
            result[rule] = None
        except TrainingDivergedError as exc:
            result[rule] = dict(epoch=exc.epoch, tasks=list(exc.tasks), reason=exc.reason, steps=calls[0])
    HybridLoss.task_loss = original
    return result


MODES = {"step": step, "fit": fit, "nan": nan}

if __name__ == "__main__":
    mode, folder = sys.argv[1], Path(sys.argv[2])
    torch.set_num_threads(1)
    result = MODES[mode](folder)
    rank = dist.get_rank() if dist.is_initialized() else 0
    (folder / f"{mode}_{rank}.json").write_text(json.dumps(result, default=float))
    if dist.is_initialized():
        dist.barrier()  # neither rank tears gloo down while the other still uses it
        dist.destroy_process_group()
