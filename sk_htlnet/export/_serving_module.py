"""The numeric part of a fitted estimator as one torch module, for export (issue 19).

:class:`ServingModule` maps the raw numeric columns (float64, NaN = missing) and the categorical
columns' ids (int64, as :class:`~sk_htlnet.preprocessing.FeatureEncoder` assigns them) to what
``predict`` returns, in float64: the numeric encoding (clipping to the training range, missing
flags, standardisation, quantile buckets), the network in eval mode, the stage sigmoids, the core
head's mean and the retransformation of :class:`~sk_htlnet.core_transform.CoreTransform` with its
clipping.  The string lookup of the categorical columns is the ONNX graph's (:mod:`._graph`): a
torch module cannot take strings.
"""

import copy

import numpy as np
import torch
from torch import nn

from ..core_losses import core_loss
from ..preprocessing import MISSING_ID

__all__ = ["ServingModule"]


def _buffer(values, dtype=torch.float64):
    return torch.as_tensor(np.asarray(values, dtype=np.float64), dtype=dtype)


class ServingModule(nn.Module):
    """``forward(*columns)`` = ``predict`` on the columns, in the fitted column order.

    Parameters
    ----------
    network : torch.nn.Module
        The fitted network (``estimator.net_.module_``); a copy is put in eval mode.
    encoder : sk_htlnet.preprocessing.FeatureEncoder
        The fitted encoder (``estimator.feature_encoder_``).
    transform : sk_htlnet.core_transform.CoreTransform
        The fitted core transform (``estimator.core_transform_``).
    core_loss_name : str
        ``estimator.core_loss_``.
    n_stages : int
        ``estimator.n_stages_``.
    one_dimensional : bool
        Return (n,) instead of (n, 1) (an estimator fitted on a 1-D y).

    Notes
    -----
    ``forward`` takes one tensor (n,) per fitted column, in order: float64 for a numeric column
    (NaN = missing), int64 ids for a categorical one (0 = out of vocabulary, 1 = missing, 2 + i =
    the i-th vocabulary entry).  It returns float64 (n, k + 1), or (n,) when ``one_dimensional``.
    """

    def __init__(self, network, encoder, transform, core_loss_name, n_stages, one_dimensional):
        super().__init__()
        self.network = copy.deepcopy(network).eval()  # tracing must not touch the estimator's
        mask = np.asarray(encoder.categorical_mask_, dtype=bool)
        self.categorical = [bool(m) for m in mask]
        self.quantile = encoder.numeric_encoding == "quantile"
        self.register_buffer("low", _buffer(encoder.min_))
        self.register_buffer("high", _buffer(encoder.max_))
        self.register_buffer("mean", _buffer(encoder.mean_))
        self.register_buffer("scale", _buffer(encoder.scale_))
        # quantile buckets: id 2 + the number of inner edges at or below the clipped value
        # (numpy.searchsorted(edges[1:-1], x, side="right") + 2, as FeatureEncoder computes it)
        self.inner_edges = nn.ParameterList()
        for edges in encoder.bin_edges_ if self.quantile else []:
            self.inner_edges.append(nn.Parameter(_buffer(np.asarray(edges)[1:-1]), requires_grad=False))
        self.n_stages = int(n_stages)
        self.one_dimensional = bool(one_dimensional)
        self.core = core_loss(core_loss_name)
        t = transform
        self.kind = t.kind
        self.smearing = float(t.smearing)
        self.core_mean, self.core_std = float(t.mean), float(t.std)
        self.clip_low, self.clip_high = float(t.low), float(t.high)
        self.isotonic = t.knots_z is not None
        if self.isotonic:
            # np.interp as a sum of clamped segments: y_0 + sum_i slope_i clamp(z - z_i, 0, z_{i+1} - z_i)
            z, y = np.asarray(t.knots_z, dtype=np.float64), np.asarray(t.knots_y, dtype=np.float64)
            width = np.diff(z)
            self.register_buffer("knot_start", _buffer(z[:-1]))
            self.register_buffer("knot_width", _buffer(width))
            self.register_buffer("knot_slope", _buffer(np.diff(y) / width if width.size else width))
            self.first_z, self.first_y = float(z[0]), float(y[0])
            self.tilt = 1e-9 * (self.clip_high - self.clip_low)

    def encode(self, columns):
        """(cat int64 (n, n_cat), num float32 (n, n_num), num_missing bool (n, n_num)) as
        ``FeatureEncoder.transform`` builds them."""
        cat, num, missing = [], [], []
        j = 0
        for column, is_cat in zip(columns, self.categorical):
            if is_cat:
                cat.append(column)
                continue
            absent = torch.isnan(column)
            clipped = torch.minimum(torch.maximum(column, self.low[j]), self.high[j])
            if self.quantile:
                edges = self.inner_edges[j]
                ids = (clipped.unsqueeze(-1) >= edges).sum(-1) + 2 if edges.numel() else \
                    torch.full_like(column, 2, dtype=torch.long)
                cat_id = torch.where(absent, torch.full_like(ids, MISSING_ID), ids)
                num.append(("bucket", cat_id))
            else:
                value = (clipped - self.mean[j]) / self.scale[j]
                num.append(("value", torch.where(absent, torch.zeros_like(value), value).to(torch.float32)))
                missing.append(absent)
            j += 1
        n = columns[0].shape[0]
        buckets = [v for kind, v in num if kind == "bucket"]
        values = [v for kind, v in num if kind == "value"]
        ids = cat + buckets
        cat = torch.stack(ids, dim=1).to(torch.int32) if ids else torch.zeros((n, 0), dtype=torch.int32)
        if values:
            return cat, torch.stack(values, dim=1), torch.stack(missing, dim=1)
        return cat, torch.zeros((n, 0), dtype=torch.float32), torch.zeros((n, 0), dtype=torch.bool)

    def retransform(self, z):
        """:meth:`CoreTransform.inverse`, float64 (n,)."""
        if self.isotonic:
            step = torch.minimum(torch.clamp(z.unsqueeze(-1) - self.knot_start, min=0.0), self.knot_width)
            y = self.first_y + (step * self.knot_slope).sum(-1) + self.tilt * (z - self.first_z)
        elif self.kind == "log1p":
            y = self.smearing * torch.exp(z) - 1.0
        else:
            y = z * self.core_std + self.core_mean
        return torch.clamp(y, self.clip_low, self.clip_high)

    def forward(self, *columns):
        cat, num, missing = self.encode(list(columns))
        raw = self.network(cat, num, missing).to(torch.float64)
        k = self.n_stages
        core = self.retransform(self.core.mean(raw[:, k:]))
        if self.one_dimensional:
            return core
        return torch.cat([torch.sigmoid(raw[:, :k]), core.unsqueeze(1)], dim=1)
