"""Data-parallel training on ``torch.distributed`` (``HTLNetRegressor(distributed=True)``).

Every process (rank) holds its own rows (its shard) and a full copy of the network.  A training step
is one step on the *global* batch, the union of the ranks' local batches:

- each rank weights its per-task losses by its share of the task's observed labels in the global
  batch (``c_t = max(D_t^r, 1) / max(D_t, 1)``, ``D`` the summed row weights of the observed labels:
  the global task loss is the weighted mean over all ranks' rows, :meth:`Group.step_totals`);
- the per-task gradients on the shared embedding are summed across ranks *before* the gradient rule
  combines them (HTLNet §4 on the global batch: the rule is nonlinear, so combining first and
  averaging afterwards would not be the rule), on the union of the table rows the ranks' batches
  touch (:func:`gather_rows`, a row-wise all-gather of the row ids, and :func:`align_rows`, so that
  a dense all-reduce of those rows only sums them and NCCL, which cannot all-reduce sparse tensors,
  works as gloo does);
- every other gradient, and the count of non-finite losses, is summed in the same dense all-reduce
  (:func:`sum_dense_grads` with ``extra``).

A step thus calls three collectives for a model with one embedding table (every architecture but
``single_task``, which has one table per task and so one all-gather of row ids per task): one
all-gather of the label counts and of a bound on the rows (:meth:`Group.step_totals`), one of the
row ids (none without categorical fields), one all-reduce.

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

__all__ = ["Group", "align_rows", "gather_rows", "join", "set_table_grad", "sum_dense_grads", "table_grad_rows"]


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
    def step_totals(self, y, weight=None, lookups=0):
        """What a training step must know of the global batch before its backward pass, in one
        all-gather: this rank's share of each task's loss and a bound, equal on every rank, on the
        table rows any rank's batch touches.

        The shares are ``c_t = max(D_t^r, 1) / max(D_t, 1)``, which turn this rank's mean task
        losses into its part of the global batch's mean (:meth:`sk_htlnet.losses.HybridLoss.task_loss`
        divides by ``max(D, 1)``; ``D`` the summed row weights of the observed labels).

        Parameters
        ----------
        y : Tensor (batch, k + 1)
            The local batch's labels, NaN for missing.
        weight : Tensor (batch,), optional
        lookups : int
            This rank's table look-ups in the batch (rows times categorical fields), an upper bound
            on the distinct rows it touches.

        Returns
        -------
        shares : Tensor (k + 1,), float32, on ``y``'s device
        longest : int
            The largest ``lookups`` over the ranks (:func:`gather_rows`' padding).
        """
        if not self.active:
            return torch.ones(y.shape[1], dtype=torch.float32, device=y.device), int(lookups)
        import torch.distributed as dist

        # float64: the look-up count and integer sums of labels or weights are exact up to 2**53
        observed = (~torch.isnan(y)).to(torch.float64)
        if weight is not None:
            observed = observed * weight.to(torch.float64).unsqueeze(1)
        local = observed.sum(0)
        mine = torch.cat([local, torch.tensor([float(lookups)], dtype=torch.float64, device=local.device)])
        parts = [torch.empty_like(mine) for _ in range(self.world_size)]
        dist.all_gather(parts, mine)
        every = torch.stack(parts)
        shares = local.clamp_min(1.0) / every[:, :-1].sum(0).clamp_min(1.0)
        return shares.to(torch.float32), int(every[:, -1].max().item())

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


def sum_dense_grads(group, params, extra=()):
    """Sum the ``.grad`` of ``params`` over the ranks, and the tensors of ``extra`` with them, in
    one all-reduce of their concatenation (dense gradients; a parameter without one counts as
    zeros and keeps None where every rank has None).

    Parameters
    ----------
    group : Group
    params : iterable of Parameter
    extra : sequence of Tensor
        Summed in the same all-reduce (flags, row-wise gradients: what a step would otherwise
        send in collectives of their own).

    Returns
    -------
    list of Tensor
        The summed ``extra``, each in its own shape (in the parameters' dtype).
    """
    params, extra = list(params), list(extra)
    if not group.active or not (params or extra):
        return extra
    device, dtype = group.device, params[0].dtype if params else torch.float32
    pieces = [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).to(dtype) for p in params]
    pieces.append(torch.tensor([float(p.grad is not None) for p in params], device=device, dtype=dtype))
    pieces += [t.reshape(-1).to(device=device, dtype=dtype) for t in extra]
    flat = group.sum_(torch.cat(pieces))
    sizes = [p.numel() for p in params] + [len(params)] + [t.numel() for t in extra]
    parts = list(torch.split(flat, sizes))
    has = parts[len(params)] > 0
    for p, summed, h in zip(params, parts, has.tolist()):  # views of ``flat``: one buffer, no copies
        p.grad = summed.view_as(p).to(p.dtype) if h else None
    return [summed.view(t.shape) for summed, t in zip(parts[len(params) + 1:], extra)]


def gather_rows(group, rows, longest, table_rows):
    """The sorted union of every rank's ``rows`` (int64 (n,) tensors of one table's rows), with one
    all-gather padded to ``min(longest, table_rows)``, none when that is 0.

    Parameters
    ----------
    group : Group
    rows : Tensor (n,), int64
        This rank's distinct rows of the table.
    longest : int
        :meth:`Group.step_totals`' bound (equal on every rank, at least every rank's look-ups).
    table_rows : int
        The table's number of rows, the other bound on the distinct rows.

    Raises
    ------
    RuntimeError
        If ``rows`` is longer than the bound: a broken invariant of the caller (the other ranks
        then wait in the all-gather until the process group's timeout).
    """
    longest = min(int(longest), int(table_rows))
    if not group.active or longest == 0:
        return rows
    import torch.distributed as dist

    if rows.numel() > longest:
        raise RuntimeError(f"gather_rows: {rows.numel()} rows exceed the bound {longest}")
    padded = torch.full((longest,), -1, dtype=torch.long, device=rows.device)
    padded[: rows.numel()] = rows
    parts = [torch.empty_like(padded) for _ in range(group.world_size)]
    dist.all_gather(parts, padded)
    union = torch.unique(torch.cat(parts))
    return union[union >= 0]


def align_rows(rows, values, union, d):
    """Row-wise gradients laid out on ``union`` (zeros on the rows this rank did not touch).

    Parameters
    ----------
    rows : Tensor (n_rows,), int64
        This rank's distinct table rows, sorted, each in ``union``.
    values : Tensor (n_tasks, n_rows * d + extra)
        Per task, the rows' flattened gradients, then ``extra`` dense entries (the numeric
        parameters of :meth:`sk_htlnet.modules.SharedEmbedding.sparse_grad`).
    union : Tensor (n_union,), int64, sorted
    d : int
        Entries per row.

    Returns
    -------
    Tensor (n_tasks, n_union * d + extra)
    """
    n_tasks = values.shape[0]
    extra = values.shape[1] - rows.numel() * d
    out = values.new_zeros(n_tasks, union.numel() * d + extra)
    if rows.numel():
        where = torch.searchsorted(union, rows)
        block = out[:, : union.numel() * d].view(n_tasks, union.numel(), d)
        block[:, where] = values[:, : rows.numel() * d].view(n_tasks, rows.numel(), d)
    out[:, union.numel() * d:] = values[:, rows.numel() * d:]
    return out


def table_grad_rows(table):
    """The rows an embedding table's ``.grad`` touches and their gradients:
    ``(rows (n,) int64 sorted, values (n, d))`` (none when the table has no gradient)."""
    grad = table.grad
    if grad is None:
        return torch.zeros(0, dtype=torch.long, device=table.device), table.new_zeros(0, table.shape[1])
    if grad.is_sparse:
        grad = grad.coalesce()
        return grad.indices()[0], grad.values()
    rows = torch.nonzero(grad.abs().sum(1) > 0).reshape(-1)
    return rows, grad[rows]


def set_table_grad(table, union, summed, sparse):
    """Set ``table.grad`` from gradients summed on the rows ``union`` ((n, d) ``summed``): sparse
    COO (coalesced) when ``sparse`` (``sparse_updates``), else dense."""
    summed = summed.reshape(union.numel(), table.shape[1]).to(table.dtype)
    if sparse:
        table.grad = torch.sparse_coo_tensor(union.unsqueeze(0), summed, table.shape, is_coalesced=True,
                                             check_invariants=False)
    else:
        dense = torch.zeros_like(table)
        dense[union] = summed
        table.grad = dense

