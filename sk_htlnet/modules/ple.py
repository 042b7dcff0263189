"""PLE: Progressive Layered Extraction (Tang et al., RecSys 2020).

Each extraction level has ``n_experts`` task-specific experts per task and ``n_experts`` shared
experts, all of ``tower_units[0]`` units; a task's gate mixes its own and the shared experts, and
(except at the last level) a shared gate mixes all experts for the next level.  ``n_levels=2`` as in
the paper; ``n_levels=1`` is CGC.  Task towers have ``tower_units[1:]`` layers.
"""

import torch
from torch import nn

from .base import MultiTaskModel, TowersAndHeads, head_widths, mlp


class _Level(nn.Module):
    def __init__(self, input_dim, width_units, n_tasks, n_experts, last, dropout):
        super().__init__()
        make = lambda: mlp(input_dim, width_units, dropout)[0]  # noqa: E731
        self.specific = nn.ModuleList(nn.ModuleList(make() for _ in range(n_experts)) for _ in range(n_tasks))
        self.shared = nn.ModuleList(make() for _ in range(n_experts))
        self.task_gates = nn.ModuleList(nn.Linear(input_dim, 2 * n_experts) for _ in range(n_tasks))
        self.shared_gate = None if last else nn.Linear(input_dim, (n_tasks + 1) * n_experts)

    def forward(self, task_inputs, shared_input):
        shared = [expert(shared_input) for expert in self.shared]
        specific = [[expert(x) for expert in experts] for x, experts in zip(task_inputs, self.specific)]
        outputs = []
        for x, own, gate in zip(task_inputs, specific, self.task_gates):
            pool = torch.stack(own + shared, dim=1)
            outputs.append((torch.softmax(gate(x), dim=1).unsqueeze(-1) * pool).sum(1))
        shared_out = None
        if self.shared_gate is not None:
            pool = torch.stack([e for own in specific for e in own] + shared, dim=1)
            shared_out = (torch.softmax(self.shared_gate(shared_input), dim=1).unsqueeze(-1) * pool).sum(1)
        return outputs, shared_out


class PLE(MultiTaskModel):
    """Shared embedding, ``n_levels`` extraction levels, one tower per task."""

    def __init__(self, cardinalities, n_numeric, n_stages, embedding_dim=16, tower_units=(128, 64, 32),
                 n_experts=2, n_levels=2, dropout=0.0, stage_logit_priors=None, core_prior=0.0,
                 numeric_encoding="linear", numeric_edges=None):
        super().__init__(cardinalities, n_numeric, n_stages, embedding_dim, numeric_encoding, numeric_edges)
        units = list(tower_units)
        width = units[0]
        dims = [self.embedding.output_dim] + [width] * (int(n_levels) - 1)
        self.levels = nn.ModuleList(
            _Level(d, units[:1], self.n_tasks, int(n_experts), i == int(n_levels) - 1, dropout)
            for i, d in enumerate(dims)
        )
        self.tasks = TowersAndHeads([width] * self.n_tasks, units[1:], dropout,
                                    head_widths(self.n_stages, core_prior))
        self.init_heads(self.tasks.heads, stage_logit_priors, core_prior)

    def forward_from_embedding(self, e, generator=None):
        task_inputs, shared = [e] * self.n_tasks, e
        for level in self.levels:
            task_inputs, shared = level(task_inputs, shared)
        return self.tasks(task_inputs)
