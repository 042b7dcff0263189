"""What a fit with ``distributed=True`` learns from its data before and after training, the same on
every rank (issue 18; the training step itself is :mod:`sk_htlnet.distributed` and
:class:`sk_htlnet.net.HybridNet`).

- vocabularies: the union of every rank's (rank 0's categories first, in order of first appearance);
- numeric scalers, bin edges, the target transform, the core's scale and the head priors: from a
  reference sample of the ranks' rows, every row when the ranks hold at most ``REFERENCE_ROWS``
  together (then equal to one process fitted on all rows), else a uniform sample of that many that
  also holds the core's smallest and largest value and a row of each class of each stage;
- the row weights' normalisation: over all ranks' rows;
- the retransformation of the core and the dead-network check: on a sample of every rank's
  training rows (at most ``_CALIBRATION_ROWS`` in all).
"""

import numpy as np
import pandas as pd
from sklearn.utils import check_random_state

from .data import INPUT_KEYS, FunnelDataset
from .distributed import SINGLE, join
from .preprocessing import FeatureEncoder
from .targets import check_targets

REFERENCE_ROWS = 200_000


def _witnesses(values):
    """Rows a reference sample must hold: the core's extremes, the first row of each stage class."""
    k = values.shape[1] - 1
    core = values[:, k]
    observed = np.flatnonzero(~np.isnan(core))
    rows = []
    if observed.size:
        rows += [observed[np.argmin(core[observed])], observed[np.argmax(core[observed])]]
    for j in range(k):
        for label in (0.0, 1.0):
            hit = np.flatnonzero(values[:, j] == label)
            if hit.size:
                rows.append(hit[0])
    return rows


class _DistributedFit:
    """Mixin of :class:`~sk_htlnet._base.BaseHTLNet`: the steps of a fit that differ on several ranks."""

    def _join_group(self, keep):
        """The fit's :class:`~sk_htlnet.distributed.Group` (one process unless ``distributed``)."""
        if not self.distributed:
            return SINGLE
        group = join(self.device)
        if group.active and keep:
            raise ValueError("distributed=True trains a fresh fit on several processes; warm_start and partial_fit "
                             "continue one process's model and are not distributed (use distributed=False)")
        if group.active and self.checkpoint_dir is not None:
            raise ValueError("checkpoint_dir is not supported with distributed=True on several processes yet: "
                             "save the fitted model once, on rank 0 (save_model)")
        return group

    def _distributed_inputs(self, X, y, sample_weight, group):
        """(X, encoder, inputs, values, names, was_1d, sample_weight, reference) of a fresh fit on
        several ranks; ``reference`` holds the reference sample's ``values`` and ``weight``."""
        X = self._validate_X(X, reset=True)
        n_rows = X.shape[0]
        # a shard may miss a class of a rare stage: the class checks run on the reference sample
        values, names, was_1d = check_targets(y, n_rows, incremental=True)
        all_names = group.all_gather_object(names)
        if any(other != names for other in all_names):
            raise ValueError(f"distributed fit: the ranks' y have different targets: {all_names}")
        sample_weight = self._distributed_weights(sample_weight, X, values, names, group)
        seed = group.broadcast_object(int(check_random_state(self.random_state).randint(2**31)))
        frame = X.reset_index(drop=True) if hasattr(X, "reset_index") else X
        reference = group.reference({"X": frame, "values": values, "weight": sample_weight}, REFERENCE_ROWS,
                                       seed, _witnesses(values))
        # every class check, on the ranks' rows
        check_targets(pd.DataFrame(reference["values"], columns=names), len(reference["values"]))
        encoder = self._distributed_encoder(X, reference["X"], group)
        return X, encoder, encoder.transform(X), values, names, was_1d, sample_weight, reference

    def _distributed_encoder(self, X, reference_X, group):
        """A FeatureEncoder fitted on the reference sample, with the union of the ranks' vocabularies."""
        encoder = FeatureEncoder(self.categorical_features, self.numeric_encoding, self.n_bins)
        mask, vocabularies = encoder.shard_vocabularies(X)
        parts = group.all_gather_object((mask.tolist(), vocabularies))
        masks = [mask for mask, _ in parts]
        if any(mask != masks[0] for mask in masks):
            raise ValueError("distributed fit: the ranks' X differ in which columns are categorical "
                             f"({masks}); give every rank the same columns with the same dtypes")
        encoder.fit_transform(reference_X)
        encoder.set_vocabularies([vocabs for _, vocabs in parts])
        return encoder

    @staticmethod
    def _distributed_weights(sample_weight, X, values, names, group):
        """:meth:`_normalised_weights` over all ranks: the largest weight and the mean of the
        positive ones are taken over every rank's rows."""
        from sklearn.utils.validation import _check_sample_weight

        if not any(group.all_gather_object(sample_weight is not None)):
            return None
        sample_weight = np.ones(len(values)) if sample_weight is None else \
            _check_sample_weight(sample_weight, X, ensure_non_negative=True)
        stats = group.all_gather_object((
            float(sample_weight.max(initial=0.0)), float(sample_weight[sample_weight > 0].sum()),
            int((sample_weight > 0).sum()), bool((sample_weight[~np.isnan(values[:, -1])] > 0).any())))
        if not any(s[3] for s in stats):
            raise ValueError(f"no row with an observed core target ({names[-1]!r}) has a positive sample_weight")
        top = max(s[0] for s in stats)
        mean = sum(s[1] for s in stats) / top / max(sum(s[2] for s in stats), 1)
        return sample_weight / top / mean

    def _distributed_calibration_sample(self, dataset, inputs, core, sample_weight, group, cap):
        """(inputs, raw outputs, core, weights, dataset) on a sample of every rank's training rows,
        the same on every rank: what the retransformation and the dead-network check are fitted on."""
        n_local = len(dataset)
        n_total = sum(group.all_gather_object(n_local))
        quota = min(n_local, int(np.ceil(cap * n_local / max(n_total, 1))))
        rng = np.random.default_rng([int(self.net_.seed or 0), group.rank])
        rows = np.sort(rng.choice(n_local, quota, replace=False)) if quota < n_local else np.arange(n_local)
        raw = self._forward(dataset.subset(rows))
        mine = {key: np.asarray(inputs[key])[rows] for key in INPUT_KEYS if key in inputs}
        mine.update(raw=raw, core=core[rows], weight=None if sample_weight is None else sample_weight[rows])
        parts = group.all_gather_object(mine)
        out = {key: None if mine[key] is None else np.concatenate([p[key] for p in parts]) for key in mine}
        gathered = FunnelDataset(out["cat"], out["num"], out["num_missing"])
        return {key: out[key] for key in INPUT_KEYS if key in out}, out["raw"], out["core"], out["weight"], gathered
