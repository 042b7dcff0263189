"""The data pipeline of the net: encoded funnel data as tensors (:class:`FunnelDataset`), batches
sliced from them without per-row Python (:class:`BatchIterator`), and the validation split
stratified on funnel depth (:func:`funnel_depth`, the one definition, also used by the tuning's
splits; :class:`FunnelValidSplit`), and the batch size that ``batch_size="auto"`` gives a number of
training rows (:func:`resolve_batch_size`)."""

import copy

import numpy as np
import torch
from sklearn.model_selection import train_test_split

__all__ = ["BatchIterator", "FunnelDataset", "FunnelValidSplit", "funnel_depth", "resolve_batch_size"]

INPUT_KEYS = ("cat", "num", "num_missing")

# batch_size="auto": benchmarks/batch_size.py measured the choice on the real funnels (docs/comparison.md)
AUTO_MIN_STEPS = 2  # optimisation steps an epoch takes at least, until the batch reaches its cap
AUTO_MIN_BATCH = 32
AUTO_MAX_BATCH = 1024


def resolve_batch_size(batch_size, n_rows):
    """The rows per optimisation step that ``batch_size`` gives a fit on ``n_rows`` training rows.

    Parameters
    ----------
    batch_size : int or "auto"
        An int is returned as it is.  ``"auto"`` is the largest power of two at most half the
        training rows (so an epoch takes at least two steps), kept within 32 to 1024: 1024 from
        2,048 rows on (the fixed default before "auto"), 512 for 1,024 to 2,047 rows, 64 for 128 to
        255, 32 below 128.  One batch of 1024 on 200 rows leaves 30 steps in ``max_iter=30`` epochs,
        too few to fit them (R² 0.23 on scikit-learn's ``check_regressors_train`` problem, 0.75 at
        64 rows a step); on the real funnels of ``benchmarks/batch_size.py`` (1,000 to 58,000
        rows) batches of 512 and 1024 do as well as any and smaller ones than 256 do worse.
    n_rows : int
        Rows the net trains on (without the early-stopping validation rows).

    Returns
    -------
    int
    """
    if batch_size != "auto":
        return int(batch_size)
    target = max(int(n_rows) // AUTO_MIN_STEPS, 1)
    return int(min(AUTO_MAX_BATCH, max(AUTO_MIN_BATCH, 1 << (target.bit_length() - 1))))


def funnel_depth(stages):
    """Number of leading stages each row passed, int64 (n,) in 0..k: the count of 1s before the
    row's first 0 or missing (NaN) label in the stage columns ``stages`` (n, k), in funnel order.

    For a nested funnel (a stage is 1 only where the one before it is) without missing labels this
    is the number of stages passed."""
    passed = np.nan_to_num(np.asarray(stages, dtype=np.float64), nan=0.0) == 1.0
    if passed.ndim != 2 or passed.shape[1] == 0:
        return np.zeros(len(passed), dtype=np.int64)
    return np.cumprod(passed, axis=1).sum(axis=1).astype(np.int64)


class FunnelDataset(torch.utils.data.Dataset):
    """Tensors of an encoded funnel data set, built once and sliced per batch.

    Parameters
    ----------
    cat : int32 or int64 array-like (n, n_categorical)
        Per-field ids, kept in their integer type (other types become int64).
    num : float32 array-like (n, n_numeric), missing values set to 0
    num_missing : bool array-like (n, n_numeric)
    y : float32 array-like (n, n_tasks), NaN for a missing label, optional
    sample_weight : float32 array-like (n,), optional
        Per-row loss weights; batches then carry them under the key ``"sample_weight"``.

    Notes
    -----
    Arrays of the right dtype are shared with the caller, not copied.  :meth:`subset` gives a view
    of some rows: the tensors stay shared and only the row indices are stored (``rows``).
    """

    def __init__(self, cat, num, num_missing, y=None, sample_weight=None):
        self.cat = torch.as_tensor(cat)
        if self.cat.dtype not in (torch.int32, torch.int64):
            self.cat = self.cat.long()
        self.num = torch.as_tensor(num, dtype=torch.float32)
        self.num_missing = torch.as_tensor(num_missing, dtype=torch.bool)
        self.y = None if y is None else torch.as_tensor(y, dtype=torch.float32)
        self.sample_weight = None if sample_weight is None else torch.as_tensor(sample_weight, dtype=torch.float32)
        self.rows = None  # int64 row indices of a view made by subset(); None: every row

    def __len__(self):
        return self.cat.shape[0] if self.rows is None else self.rows.numel()

    def _slice(self, idx):
        if self.rows is not None:
            idx = self.rows[idx]
        x = {"cat": self.cat[idx], "num": self.num[idx], "num_missing": self.num_missing[idx]}
        if self.sample_weight is not None:
            x["sample_weight"] = self.sample_weight[idx]
        y = None if self.y is None else self.y[idx]
        return x, y

    def __getitem__(self, i):
        x, y = self._slice(i)
        return x, (torch.zeros(0) if y is None else y)

    def targets(self):
        """The labels of this data set's rows, float32 (len(self), n_tasks), or None."""
        if self.y is None or self.rows is None:
            return self.y
        return self.y[self.rows]

    def subset(self, idx):
        """A view of the rows ``idx`` of this data set (positions in it): no tensor is copied."""
        view = copy.copy(self)
        idx = torch.as_tensor(np.asarray(idx), dtype=torch.long)
        view.rows = idx if self.rows is None else self.rows[idx]
        return view



class BatchIterator:
    """Yields ``(X_dict, y)`` batches by slicing a :class:`FunnelDataset` (no per-row Python).

    ``n_batches`` (a rank of a distributed fit) splits the rows into exactly that many batches of
    near-equal size (``torch.tensor_split``) instead of batches of ``batch_size`` rows."""

    def __init__(self, dataset, batch_size, shuffle=False, generator=None, n_batches=None):
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.generator = generator
        self.n_batches = n_batches

    def __len__(self):
        return self.n_batches if self.n_batches is not None else -(-len(self.dataset) // self.batch_size)

    def __iter__(self):
        n = len(self.dataset)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else None
        if self.n_batches is not None:
            for idx in torch.tensor_split(order if order is not None else torch.arange(n), self.n_batches):
                yield self.dataset._slice(idx)
            return
        for start in range(0, n, self.batch_size):
            stop = min(start + self.batch_size, n)
            idx = order[start:stop] if order is not None else slice(start, stop)
            yield self.dataset._slice(idx)

class FunnelValidSplit:
    """Hold out a validation fraction, stratified on funnel depth, never on the core target.

    The funnel depth of a row is the number of stages it passed (0..k).  Stratifying on it keeps the
    rare late stages represented in the validation set; with missing stage labels, or a depth class
    too small to split, the split is a plain shuffle.

    Parameters
    ----------
    validation_fraction : float in (0, 1)
    n_stages : int
    random_state : int or None
    """

    def __init__(self, validation_fraction, n_stages, random_state=None):
        self.validation_fraction = validation_fraction
        self.n_stages = n_stages
        self.random_state = random_state

    def __call__(self, dataset, y=None, **fit_params):
        n = len(dataset)
        stratify = None
        y = dataset.targets()
        if self.n_stages and y is not None:
            stages = y[:, : self.n_stages].numpy()
            if not np.isnan(stages).any():
                depth = funnel_depth(stages)
                counts = np.bincount(depth)
                n_valid = int(np.ceil(self.validation_fraction * n))
                n_classes = (counts > 0).sum()
                if counts[counts > 0].min() >= 2 and min(n_valid, n - n_valid) >= n_classes:
                    stratify = depth
        train_idx, valid_idx = train_test_split(
            np.arange(n),
            test_size=self.validation_fraction,
            random_state=self.random_state,
            stratify=stratify,
        )
        return dataset.subset(np.sort(train_idx)), dataset.subset(np.sort(valid_idx))
