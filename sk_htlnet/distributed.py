"""Data-parallel training on ``torch.distributed`` (``HTLNetRegressor(distributed=True)``).

Every process (rank) holds its own rows (its shard) and a full copy of the network.  A training step
is one step on the *global* batch, the union of the ranks' local batches:

- each rank weights its per-task losses by its share of the task's observed labels in the global
  batch (``c_t = max(D_t^r, 1) / max(D_t, 1)``, ``D`` the summed row weights of the observed labels:
  the global task loss is the weighted mean over all ranks' rows, :meth:`Group.loss_shares`);
- the per-task gradients on the shared embedding are summed across ranks *before* the gradient rule
  combines them (HTLNet §4 on the global batch: the rule is nonlinear, so combining first and
  averaging afterwards would not be the rule), on the union of the table rows the ranks' batches
  touch (:func:`sum_rows`: a row-wise all-gather of the row ids, then a dense all-reduce of those
  rows only, so NCCL, which cannot all-reduce sparse tensors, works as gloo does);
- every other gradient is summed with one dense all-reduce (:func:`sum_dense_grads`).

The ranks then take the same optimiser step on the same gradient, so their parameters stay equal
(they start equal: rank 0's initialisation is broadcast).  No ``DistributedDataParallel``: it
all-reduces inside ``backward``, which the per-task backward passes of the gradient rule would
desynchronise (pytorch#47562).

Only public ``torch.distributed`` collectives are used, on the default process group that a
launcher (``torchrun``, ``accelerate launch``, Ray Train's TorchTrainer, Spark's TorchDistributor)
set up; :func:`join` initialises it from the launcher's environment variables when the launcher
did not.
"""

import os

import numpy as np
import pandas as pd
import torch

__all__ = ["Group", "join", "sum_dense_grads", "sum_rows", "sum_table_grad"]


class Group:
    """The processes of one fit: ``rank``, ``world_size`` and the collectives the fit uses.

    With ``world_size == 1`` every collective returns its input (one process, no process group).

    Parameters
    ----------
    rank, world_size : int
    device : str or torch.device, default="cpu"
        Where tensors for the collectives live (NCCL needs them on the GPU).
    """

    def __init__(self, rank=0, world_size=1, device="cpu"):
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.device = torch.device(device)

    @property
    def active(self):
        """Whether more than one process takes part (bool)."""
        return self.world_size > 1

    def __repr__(self):
        return f"Group(rank={self.rank}, world_size={self.world_size})"

    def __reduce__(self):  # a pickled model is used by one process: the group is not kept
        return (_single, ())

    # ---- collectives ----------------------------------------------------------------------------
    def all_gather_object(self, obj):
        """List of every rank's ``obj``, in rank order (picklable objects)."""
        if not self.active:
            return [obj]
        import torch.distributed as dist

        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast_object(self, obj, src=0):
        """Rank ``src``'s ``obj`` on every rank."""
        if not self.active:
            return obj
        import torch.distributed as dist

        box = [obj if self.rank == src else None]
        dist.broadcast_object_list(box, src=src)
        return box[0]

    def sum_(self, tensor):
        """Sum ``tensor`` over the ranks, in place (and returned)."""
        if self.active:
            import torch.distributed as dist

            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def broadcast_(self, tensor, src=0):
        """Rank ``src``'s ``tensor`` on every rank, in place."""
        if self.active:
            import torch.distributed as dist

            dist.broadcast(tensor, src=src)
        return tensor

    def total(self, value):
        """Sum of a Python number over the ranks (float)."""
        return float(sum(self.all_gather_object(float(value))))

    # ---- what a fit needs -----------------------------------------------------------------------
    def loss_shares(self, y, weight=None):
        """Per-task factors ``c_t = max(D_t^r, 1) / max(D_t, 1)`` (float32 (k + 1,), on ``y``'s
        device) that turn this rank's mean task losses into its part of the global batch's mean
        (:meth:`sk_htlnet.losses.HybridLoss.task_loss` divides by ``max(D, 1)``).

        Parameters
        ----------
        y : Tensor (batch, k + 1)
            The local batch's labels, NaN for missing.
        weight : Tensor (batch,), optional

        Returns
        -------
        shares : Tensor (k + 1,)
        """
        observed = (~torch.isnan(y)).to(torch.float32)
        if weight is not None:
            observed = observed * weight.unsqueeze(1)
        local = observed.sum(0)
        total = self.sum_(local.clone())
        return local.clamp_min(1.0) / total.clamp_min(1.0)

    def any_(self, flags):
        """Element-wise OR over the ranks of a bool tensor (returned as a new bool tensor)."""
        return self.sum_(flags.to(torch.float32).clone()) > 0

    def reference(self, frames, cap, seed, witnesses=()):
        """The same sample of the ranks' rows on every rank, for what a fit learns from its data.

        Each rank contributes all its rows when the ranks hold at most ``cap`` rows together, else a
        uniform sample of its share of ``cap`` (drawn with ``seed`` and the rank) plus the
        ``witnesses`` rows (row positions that must be in it: the core's extremes, a row of each
        stage class).  Row order: rank 0's rows, then rank 1's, ...

        Parameters
        ----------
        frames : dict of str to DataFrame, ndarray or None
            Equally long row collections of this rank (None entries stay None).
        cap : int
        seed : int
        witnesses : sequence of int

        Returns
        -------
        dict of str to DataFrame or ndarray
        """
        if not self.active:
            return frames
        n_local = len(next(v for v in frames.values() if v is not None))
        n_total = int(self.total(n_local))
        rows = np.arange(n_local)
        if n_total > cap:
            quota = int(np.ceil(cap * n_local / n_total))
            if quota < n_local:
                rng = np.random.default_rng([int(seed), self.rank])
                rows = np.union1d(rng.choice(n_local, quota, replace=False), np.asarray(witnesses, dtype=int))
        mine = {key: None if value is None else _take(value, rows) for key, value in frames.items()}
        gathered = self.all_gather_object(mine)
        return {key: None if value is None else _concat([part[key] for part in gathered], value)
                for key, value in frames.items()}


def _take(value, rows):
    return value.iloc[rows] if isinstance(value, (pd.DataFrame, pd.Series)) else np.asarray(value)[rows]


def _concat(parts, like):
    if isinstance(like, pd.DataFrame):
        out = pd.concat(parts, ignore_index=True)
        for column in like.columns:  # categories differ between shards: pandas falls back to object
            if isinstance(like[column].dtype, pd.CategoricalDtype) and not isinstance(out[column].dtype,
                                                                                   pd.CategoricalDtype):
                out[column] = out[column].astype("category")
        return out
    return np.concatenate(parts)


def _single():
    return SINGLE


SINGLE = Group()


def join(device="cpu"):
    """The :class:`Group` of a fit with ``distributed=True``.

    Uses the default ``torch.distributed`` process group when one is initialised; otherwise, when
    the launcher's environment says ``WORLD_SIZE > 1`` (torchrun, accelerate, Ray Train and Spark's
    TorchDistributor set ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``), initialises
    it with gloo on the CPU and NCCL on a GPU; otherwise returns the one-process group, so the same
    script runs unchanged without a launcher.

    Parameters
    ----------
    device : str or torch.device
        The estimator's device.

    Returns
    -------
    Group

    Raises
    ------
    RuntimeError
        If ``torch.distributed`` is not available in this torch build while a launcher asked for
        several processes.
    """
    import torch.distributed as dist

    device = torch.device(device)
    if dist.is_available() and dist.is_initialized():
        return Group(dist.get_rank(), dist.get_world_size(), device)
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Group(0, 1, device)
    if not dist.is_available():
        raise RuntimeError("distributed=True under a launcher (WORLD_SIZE > 1), but this torch build has no "
                           "torch.distributed")
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Group(dist.get_rank(), dist.get_world_size(), device)


def sum_dense_grads(group, params):
    """Sum the ``.grad`` of ``params`` over the ranks with one all-reduce of their concatenation
    (dense gradients; a parameter without one counts as zeros and keeps None where every rank
    has None)."""
    params = list(params)
    if not group.active or not params:
        return
    has = group.any_(torch.tensor([p.grad is not None for p in params], device=group.device))
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                      for p, h in zip(params, has.tolist()) if h]) if bool(has.any()) else None
    if flat is None:
        return
    group.sum_(flat)
    start = 0
    for p, h in zip(params, has.tolist()):
        if h:
            p.grad = flat[start:start + p.numel()].view_as(p).clone()
            start += p.numel()


def _gather_rows(group, rows):
    """The sorted union of every rank's ``rows`` (int64), via an all-gather padded to the longest."""
    sizes = torch.tensor([rows.numel()], device=rows.device)
    all_sizes = [torch.zeros_like(sizes) for _ in range(group.world_size)]
    import torch.distributed as dist

    dist.all_gather(all_sizes, sizes)
    longest = int(max(s.item() for s in all_sizes))
    padded = torch.full((longest,), -1, dtype=torch.long, device=rows.device)
    padded[: rows.numel()] = rows
    parts = [torch.empty_like(padded) for _ in range(group.world_size)]
    dist.all_gather(parts, padded)
    union = torch.unique(torch.cat(parts))
    return union[union >= 0]


def sum_rows(group, rows, values, d):
    """Sum row-wise gradients over the ranks on the union of the rows they touch.

    Parameters
    ----------
    group : Group
    rows : Tensor (n_rows,), int64
        This rank's distinct table rows, sorted (``torch.unique``).
    values : Tensor (n_tasks, n_rows * d + extra)
        Per task, the rows' flattened gradients, then ``extra`` dense entries (the numeric
        parameters of :meth:`sk_htlnet.modules.SharedEmbedding.sparse_grad`).
    d : int
        Entries per row.

    Returns
    -------
    (union, summed) : Tensor (n_union,), Tensor (n_tasks, n_union * d + extra)
        Equal on every rank.
    """
    if not group.active:
        return rows, values
    union = _gather_rows(group, rows)
    n_tasks = values.shape[0]
    extra = values.shape[1] - rows.numel() * d
    out = values.new_zeros(n_tasks, union.numel() * d + extra)
    if rows.numel():
        where = torch.searchsorted(union, rows)
        block = out[:, : union.numel() * d].view(n_tasks, union.numel(), d)
        block[:, where] = values[:, : rows.numel() * d].view(n_tasks, rows.numel(), d)
    out[:, union.numel() * d:] = values[:, rows.numel() * d:]
    return union, group.sum_(out)


def sum_table_grad(group, table, sparse):
    """Sum an embedding table's gradient over the ranks, on the union of the rows any rank's
    gradient touches; ``sparse``: the gradients are sparse COO (``sparse_updates``) and the sum is
    one too (coalesced), else dense."""
    if not group.active:
        return
    grad = table.grad
    d = table.shape[1]
    if grad is None:
        rows, values = torch.zeros(0, dtype=torch.long, device=table.device), table.new_zeros(0, d)
    elif grad.is_sparse:
        grad = grad.coalesce()
        rows, values = grad.indices()[0], grad.values()
    else:
        rows = torch.nonzero(grad.abs().sum(1) > 0).reshape(-1)
        values = grad[rows]
    union, summed = sum_rows(group, rows, values.reshape(1, -1), d)
    summed = summed.view(union.numel(), d)
    if sparse:
        table.grad = torch.sparse_coo_tensor(union.unsqueeze(0), summed, table.shape, is_coalesced=True,
                                             check_invariants=False)
    else:
        dense = torch.zeros_like(table)
        dense[union] = summed
        table.grad = dense
