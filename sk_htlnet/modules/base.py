"""Common frame of the multi-task baselines: a shared field embedding, k stage heads and a core head.

Every model in :mod:`sk_htlnet.modules` maps ``(cat, num, num_missing)`` to float32 (batch, k + 1): the
k stage logits, then the core head's outputs on the loss's scale (one column, or the m distribution
parameters of a core loss such as the zero-inflated lognormal: (batch, k + m)).  Models with a shared embedding expose
``embedding`` (a :class:`~sk_htlnet.modules.SharedEmbedding`), ``embed`` and
``forward_from_embedding`` so the gradient strategies of :mod:`sk_htlnet.gradient` can arbitrate the
shared embedding's gradient; a model without shared parameters sets ``embedding = None``.
"""

import torch
from torch import nn

from .embedding import SharedEmbedding
from .tower import Tower

__all__ = ["MultiTaskModel", "core_width", "head_widths", "init_heads", "join_outputs"]


class MultiTaskModel(nn.Module):
    """Base class: shared embedding, ``forward`` = ``forward_from_embedding(embed(...))``.

    Parameters
    ----------
    cardinalities, n_numeric, embedding_dim, numeric_encoding, numeric_edges
        As in :class:`~sk_htlnet.modules.SharedEmbedding`.
    n_stages : int
        Number k >= 0 of binary stages.
    shared : bool, default=True
        Build the shared embedding (``embedding``); False leaves ``embedding = None`` for a model
        without shared parameters (:class:`~sk_htlnet.modules.SingleTask`), which then builds its own.
    """

    def __init__(self, cardinalities, n_numeric, n_stages, embedding_dim, numeric_encoding="linear",
                 numeric_edges=None, shared=True):
        super().__init__()
        self.n_stages = int(n_stages)
        self.n_tasks = self.n_stages + 1
        self.embedding = SharedEmbedding(cardinalities, n_numeric, embedding_dim, numeric_encoding,
                                         numeric_edges) if shared else None

    def embed(self, cat, num, num_missing):
        return self.embedding(cat, num, num_missing)

    def forward_from_embedding(self, e, generator=None):
        raise NotImplementedError

    def forward(self, cat, num, num_missing, generator=None):
        return self.forward_from_embedding(self.embed(cat, num, num_missing), generator)

    @staticmethod
    def init_heads(heads, stage_logit_priors, core_prior):
        """Set each head's bias to its prior (stage base-rate logits, then the core prior(s))."""
        init_heads(heads, stage_logit_priors, core_prior)


def core_width(core_prior):
    """Outputs of the core head: 1 for a float prior, m for a sequence of m (distribution parameters)."""
    return 1 if isinstance(core_prior, (int, float)) else len(core_prior)


def head_widths(n_stages, core_prior):
    """Output width of each task head: 1 per stage, then :func:`core_width`."""
    return [1] * int(n_stages) + [core_width(core_prior)]


def init_heads(heads, stage_logit_priors, core_prior):
    """Set each head's bias to its prior: the k stage heads' to ``stage_logit_priors`` (base-rate
    logits; None keeps their default initialisation), the last (core) head's to ``core_prior``
    (a float, or a sequence of the head's width).

    Raises
    ------
    ValueError
        If ``stage_logit_priors`` does not hold one value per stage head.
    """
    heads = list(heads)
    stages = [None] * (len(heads) - 1) if stage_logit_priors is None else list(stage_logit_priors)
    if len(stages) != len(heads) - 1:
        raise ValueError(f"stage_logit_priors holds {len(stages)} values for {len(heads) - 1} stage heads")
    with torch.no_grad():
        for head, prior in zip(heads, stages + [core_prior]):
            if prior is not None:
                head.bias.copy_(torch.as_tensor(prior, dtype=head.bias.dtype).expand_as(head.bias))


def join_outputs(outputs):
    """Concatenate per-task head outputs of shape (batch, width) or (batch,) into (batch, sum of widths)."""
    return torch.cat([o.reshape(o.shape[0], -1) for o in outputs], dim=1)


def mlp(input_dim, units, dropout=0.0):
    """A ReLU MLP (a :class:`Tower`) or, with no units, the identity; returns (module, output_dim)."""
    units = list(units)
    if not units:
        return nn.Identity(), int(input_dim)
    tower = Tower(input_dim, units, dropout)
    return _LastLayer(tower), tower.output_dim


class _LastLayer(nn.Module):
    def __init__(self, tower):
        super().__init__()
        self.tower = tower

    def forward(self, x):
        return self.tower(x)[1]


class TowersAndHeads(nn.Module):
    """One MLP tower and one linear head per task on per-task inputs; returns (batch, sum of widths).

    ``widths`` gives each head's number of outputs (default 1 each).
    """

    def __init__(self, input_dims, units, dropout=0.0, widths=None):
        super().__init__()
        towers, heads = [], []
        widths = widths or [1] * len(input_dims)
        for dim, width in zip(input_dims, widths):
            tower, out = mlp(dim, units, dropout)
            towers.append(tower)
            heads.append(nn.Linear(out, width))
        self.towers = nn.ModuleList(towers)
        self.heads = nn.ModuleList(heads)

    def forward(self, inputs):
        return join_outputs([head(tower(x)) for x, tower, head in zip(inputs, self.towers, self.heads)])
