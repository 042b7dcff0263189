"""MMoE: Multi-gate Mixture-of-Experts (Ma et al., KDD 2018).

``n_experts`` expert layers of ``tower_units[0]`` units read the shared embedding; each task mixes
them with its own softmax gate and feeds the mixture to its tower of ``tower_units[1:]`` layers.
"""

import torch
from torch import nn

from .base import MultiTaskModel, TowersAndHeads, head_widths, mlp


class MMoE(MultiTaskModel):
    """Shared embedding, ``n_experts`` experts, one gate and one tower per task."""

    def __init__(self, cardinalities, n_numeric, n_stages, embedding_dim=16, tower_units=(128, 64, 32),
                 n_experts=4, dropout=0.0, stage_logit_priors=None, core_prior=0.0,
                 numeric_encoding="linear", numeric_edges=None):
        super().__init__(cardinalities, n_numeric, n_stages, embedding_dim, numeric_encoding, numeric_edges)
        units = list(tower_units)
        e_dim = self.embedding.output_dim
        experts = [mlp(e_dim, units[:1], dropout) for _ in range(int(n_experts))]
        self.experts = nn.ModuleList(m for m, _ in experts)
        width = experts[0][1]
        self.gates = nn.ModuleList(nn.Linear(e_dim, int(n_experts)) for _ in range(self.n_tasks))
        self.tasks = TowersAndHeads([width] * self.n_tasks, units[1:], dropout,
                                    head_widths(self.n_stages, core_prior))
        self.init_heads(self.tasks.heads, stage_logit_priors, core_prior)

    def forward_from_embedding(self, e, generator=None):
        experts = torch.stack([expert(e) for expert in self.experts], dim=1)  # (B, n_experts, width)
        mixtures = [
            (torch.softmax(gate(e), dim=1).unsqueeze(-1) * experts).sum(1) for gate in self.gates
        ]
        return self.tasks(mixtures)
