"""The objective's folds, stratified on funnel depth (:func:`sk_htlnet.data.funnel_depth`, the one
definition the estimator's validation split uses too).  Private to :mod:`sk_htlnet.tuning`.
"""

import math
import numbers

import numpy as np
from sklearn.model_selection import KFold, StratifiedKFold, check_cv, train_test_split

from ..data import funnel_depth


def _stratifiable(depth, n_splits):
    counts = np.bincount(depth)
    return counts[counts > 0].min() >= n_splits if depth.size else False


def _splits(X, values, cv, test_size, groups, random_state):
    """The (train, test) positions of every fold, computed once."""
    n = values.shape[0]
    depth = funnel_depth(values[:, :-1])
    index = np.arange(n)
    if cv is None:
        if not (isinstance(test_size, numbers.Real) and 0 < test_size < 1):
            raise ValueError(f"test_size must be a float in (0, 1), got {test_size!r}.")
        n_test = math.ceil(test_size * n)
        stratify = depth if _stratifiable(depth, 2) and n_test >= np.unique(depth).size else None
        train, test = train_test_split(index, test_size=test_size, random_state=random_state,
                                       stratify=stratify)
        splits = [(np.sort(train), np.sort(test))]
    elif isinstance(cv, numbers.Integral) and not isinstance(cv, bool):
        if cv < 2:
            raise ValueError(f"cv must be at least 2 folds, got {cv}.")
        splitter = (StratifiedKFold if _stratifiable(depth, cv) else KFold)(
            int(cv), shuffle=True, random_state=random_state
        )
        splits = list(splitter.split(np.zeros((n, 1)), depth))
    else:
        splitter = check_cv(cv, depth, classifier=False)
        splits = [(np.asarray(tr), np.asarray(te)) for tr, te in splitter.split(X, depth, groups)]
    if not splits or any(len(tr) < 2 or len(te) < 1 for tr, te in splits):
        raise ValueError("Every split needs at least 2 training rows and 1 test row.")
    return splits
