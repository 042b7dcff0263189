"""AITM adapted to hybrid targets (Xi et al., KDD 2021; the adaptation is ours).

Every task has a tower on the shared embedding.  For task t >= 2 the Adaptive Information Transfer
module attends over {transfer(z_{t-1}), q_t}, where q_t is task t's tower output, z_{t-1} the
previous task's fused output and ``transfer`` a linear map; the attention is AITM's
(``sk_htlnet.modules.InformationFusion``).  The core target, last in the chain, gets a linear
regression head on its fused output.  AITM's behavioural expectation calibrator (a constraint that
later stages stay below earlier ones) has no meaning for a continuous target and is left out.
"""

import torch
from torch import nn

from .base import MultiTaskModel, head_widths, join_outputs, mlp
from .fusion import InformationFusion


class AITM(MultiTaskModel):
    """Shared embedding, towers, AIT modules between consecutive tasks, linear heads."""

    def __init__(self, cardinalities, n_numeric, n_stages, embedding_dim=16, tower_units=(128, 64, 32),
                 dropout=0.0, stage_logit_priors=None, core_prior=0.0,
                 numeric_encoding="linear", numeric_edges=None):
        super().__init__(cardinalities, n_numeric, n_stages, embedding_dim, numeric_encoding, numeric_edges)
        towers = [mlp(self.embedding.output_dim, tower_units, dropout) for _ in range(self.n_tasks)]
        self.towers = nn.ModuleList(m for m, _ in towers)
        width = towers[0][1]
        self.transfers = nn.ModuleList(nn.Linear(width, width) for _ in range(self.n_stages))
        self.fusions = nn.ModuleList(InformationFusion(width, 2, width) for _ in range(self.n_stages))
        self.heads = nn.ModuleList(nn.Linear(width, w) for w in head_widths(self.n_stages, core_prior))
        self.init_heads(self.heads, stage_logit_priors, core_prior)

    def forward_from_embedding(self, e, generator=None):
        outputs, previous = [], None
        for t, (tower, head) in enumerate(zip(self.towers, self.heads)):
            q = tower(e)
            z = q if t == 0 else self.fusions[t - 1](torch.stack([self.transfers[t - 1](previous), q], dim=1))
            outputs.append(head(z))
            previous = z
        return join_outputs(outputs)
