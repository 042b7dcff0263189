"""Information Fusion Unit (IFU), HTLNet §2.4.

For a task ``t >= 2`` the IFU fuses a set ``U`` of vectors coming from the preceding tasks: once for
their implicit representations ``rep_1 .. rep_{t-1}`` and once for their explicit label embeddings
``le_1 .. le_{t-1}``.  AITM's attention form (Xi et al., KDD 2021) is used:
``w_u = softmax_u(<h2(u), h3(u)> / sqrt(d))``, ``out = sum_u w_u h1(u)`` with ``h1, h2, h3`` linear maps
to ``d``.  As in AITM, the set also holds the task's own candidate, a linear map of the shared
embedding, so attention has a real choice even with a single predecessor (our decision where the paper is silent: docs/method.md, Model).

``fusion="concat"`` replaces the attention by a linear map of the concatenated set (the paper's
ablation "concat instead of attention").
"""

import math

import torch
from torch import nn


class InformationFusion(nn.Module):
    """Fuse a set of same-sized vectors into one.

    Parameters
    ----------
    input_dim : int
        Size of every vector in the set.
    n_inputs : int
        Number of vectors in the set (predecessors plus the task's own candidate).
    fusion_dim : int
        Output size ``d``.
    fusion : {"attention", "concat"}, default="attention"
        AITM attention or the concatenation ablation.

    Notes
    -----
    ``forward(vectors)``: float32 (batch, n_inputs, input_dim) -> float32 (batch, fusion_dim).
    After a forward pass in attention mode, ``last_weights`` holds the detached attention weights
    (batch, n_inputs) for inspection.
    """

    def __init__(self, input_dim, n_inputs, fusion_dim, fusion="attention"):
        super().__init__()
        if fusion not in ("attention", "concat"):
            raise ValueError(f"fusion must be 'attention' or 'concat', got {fusion!r}")
        self.fusion = fusion
        self.fusion_dim = int(fusion_dim)
        if fusion == "attention":
            self.value = nn.Linear(input_dim, fusion_dim)
            self.query = nn.Linear(input_dim, fusion_dim)
            self.key = nn.Linear(input_dim, fusion_dim)
        else:
            self.proj = nn.Linear(input_dim * n_inputs, fusion_dim)
        self.last_weights = None

    def forward(self, vectors):
        if self.fusion == "concat":
            return self.proj(vectors.flatten(1))
        scores = (self.query(vectors) * self.key(vectors)).sum(-1) / math.sqrt(self.fusion_dim)
        weights = torch.softmax(scores, dim=1)
        self.last_weights = weights.detach()
        return (weights.unsqueeze(-1) * self.value(vectors)).sum(1)
