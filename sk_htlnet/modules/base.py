"""Common frame of the multi-task baselines: a shared field embedding, k stage heads and a core head.

Every model in :mod:`sk_htlnet.modules` maps ``(cat, num, num_missing)`` to float32 (batch, k + 1): the
k stage logits, then the core prediction on the loss's scale.  Models with a shared embedding expose
``embedding`` (a :class:`~sk_htlnet.modules.SharedEmbedding`), ``embed`` and
``forward_from_embedding`` so the gradient strategies of :mod:`sk_htlnet.gradient` can arbitrate the
shared embedding's gradient; a model without shared parameters sets ``embedding = None``.
"""

import torch
from torch import nn

from .embedding import SharedEmbedding
from .tower import Tower

__all__ = ["MultiTaskModel"]


class MultiTaskModel(nn.Module):
    """Base class: shared embedding, ``forward`` = ``forward_from_embedding(embed(...))``.

    Parameters
    ----------
    cardinalities, n_numeric, embedding_dim
        As in :class:`~sk_htlnet.modules.SharedEmbedding`.
    n_stages : int
        Number k >= 0 of binary stages.
    """

    def __init__(self, cardinalities, n_numeric, n_stages, embedding_dim):
        super().__init__()
        self.n_stages = int(n_stages)
        self.n_tasks = self.n_stages + 1
        self.embedding = SharedEmbedding(cardinalities, n_numeric, embedding_dim)

    def embed(self, cat, num, num_missing):
        return self.embedding(cat, num, num_missing)

    def forward_from_embedding(self, e, generator=None):
        raise NotImplementedError

    def forward(self, cat, num, num_missing, generator=None):
        return self.forward_from_embedding(self.embed(cat, num, num_missing), generator)

    @staticmethod
    def init_heads(heads, stage_logit_priors, core_prior):
        """Set each head's bias to its prior (stage base-rate logits, then the core mean)."""
        with torch.no_grad():
            for head, prior in zip(heads, list(stage_logit_priors or []) + [core_prior]):
                head.bias.fill_(float(prior))


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
    """One MLP tower and one linear head per task on per-task inputs; returns (batch, n_tasks)."""

    def __init__(self, input_dims, units, dropout=0.0):
        super().__init__()
        towers, heads = [], []
        for dim in input_dims:
            tower, out = mlp(dim, units, dropout)
            towers.append(tower)
            heads.append(nn.Linear(out, 1))
        self.towers = nn.ModuleList(towers)
        self.heads = nn.ModuleList(heads)

    def forward(self, inputs):
        return torch.stack(
            [head(tower(x)).squeeze(-1) for x, tower, head in zip(inputs, self.towers, self.heads)], dim=1
        )
