"""Shared-Bottom (Caruana, 1997): a shared embedding and a shared first layer, then one tower per task.

For equal sizes with HTLNet, the shared bottom is one layer of ``tower_units[0]`` units and each task
tower has the remaining ``tower_units[1:]`` layers.
"""

from .base import MultiTaskModel, TowersAndHeads, head_widths, mlp


class SharedBottom(MultiTaskModel):
    """Shared embedding + shared bottom layer + task towers (HTLNet §5 baseline and ablation)."""

    def __init__(self, cardinalities, n_numeric, n_stages, embedding_dim=16, tower_units=(128, 64, 32),
                 dropout=0.0, stage_logit_priors=None, core_prior=0.0,
                 numeric_encoding="linear", numeric_edges=None):
        super().__init__(cardinalities, n_numeric, n_stages, embedding_dim, numeric_encoding, numeric_edges)
        units = list(tower_units)
        self.bottom, width = mlp(self.embedding.output_dim, units[:1], dropout)
        self.tasks = TowersAndHeads([width] * self.n_tasks, units[1:], dropout,
                                    head_widths(self.n_stages, core_prior))
        self.init_heads(self.tasks.heads, stage_logit_priors, core_prior)

    def forward_from_embedding(self, e, generator=None):
        shared = self.bottom(e)
        return self.tasks([shared] * self.n_tasks)
