"""The probe prediction that :func:`sk_htlnet.io.load_model` runs on a model it has just rebuilt.

:func:`probe` predicts rows made from the fitted encoding (:func:`probe_frame`): every category of
each field (up to 1024), numeric values across the training range, a row of out-of-vocabulary
values and a row of missing values.  A failure, or a prediction that is not finite or of the wrong
shape, is a ``ModelFileError``: fields that contradict each other fail at load, not in a later
``predict``.  Moved from ``io.py`` unchanged.
"""

import warnings

import numpy as np
import pandas as pd
import torch

from ._model_fields import ModelFileError

_PROBE_CATEGORIES = 1024  # categories of each field the probe covers (plus its out-of-vocabulary row)


def _unseen(vocab):
    """A value that is not in ``vocab``: it maps to the field's out-of-vocabulary row."""
    value = "sk_htlnet probe: out of vocabulary"
    while value in vocab:
        value += "!"
    return value


def probe_frame(enc):
    """Rows in the fitted columns: row i holds category i of each categorical column (cycling; up to
    1024 rows, so every category of a vocabulary of up to 1024 values is seen) and a numeric value
    running from the training minimum to the maximum; then a row with a value out of every
    vocabulary (the out-of-vocabulary rows) and a row with every value missing."""
    n = min(_PROBE_CATEGORIES, max([len(v) for v in enc.vocabularies_] + [2]))
    columns, cats, nums = {}, iter(enc.vocabularies_), iter(range(len(enc.mean_)))
    for position, categorical in enumerate(enc.categorical_mask_):
        if categorical:
            vocab = next(cats)
            values = [vocab[i % len(vocab)] for i in range(n)] if len(vocab) else [None] * n
            columns[position] = pd.Series(values + [_unseen(vocab), None], dtype=object)
        else:
            j = next(nums)
            values = np.linspace(enc.min_[j], enc.max_[j], n + 1)
            columns[position] = pd.Series(np.r_[values, np.nan], dtype=np.float64)
    frame = pd.DataFrame(columns)
    frame.columns = pd.Index(enc.columns_)
    return frame


def probe(est):
    """Predict the probe rows through the encoder, the net and the inverse transform: a failure,
    or a prediction that is not finite or of the wrong shape, refuses the file at load rather than
    in a later ``predict``.  It runs under the caller's torch thread setting, not the file's
    ``n_threads`` (a file must not make the loader start threads)."""
    frame = probe_frame(est.feature_encoder_)
    rows = len(frame)
    what = (f"the model in the file cannot predict: a probe prediction on {rows} rows (its categories, numeric "
            "values across the training range, out-of-vocabulary values, missing values)")
    n_threads, est.n_threads = est.n_threads, None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            pred = est.predict(frame)
        except (MemoryError, torch.cuda.OutOfMemoryError):
            raise
        except Exception as exc:
            raise ModelFileError(f"{what} fails with {type(exc).__name__}: {str(exc)[:300]}") from exc
        finally:
            est.n_threads = n_threads
    shape = (rows,) if est.fitted_state()["y_1d"] else (rows, est.n_stages_ + 1)
    if pred.shape != shape or not np.isfinite(pred).all():
        raise ModelFileError(f"{what} has shape {pred.shape} (expected {shape}) or is not finite")

