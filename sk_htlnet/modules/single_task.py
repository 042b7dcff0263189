"""Single-task DNNs: one independent model (embedding, tower, head) per task, no shared parameters.

The baseline against which multi-task learning has to pay off (HTLNet §5, "single-task DNN").
"""

import torch
from torch import nn

from .base import MultiTaskModel
from .embedding import SharedEmbedding
from .tower import Tower


class SingleTask(MultiTaskModel):
    """Independent DNNs per task; ``embedding`` is None (there is nothing to arbitrate).

    Parameters: as :class:`~sk_htlnet.modules.HTLNet`'s cardinalities, n_numeric, n_stages,
    embedding_dim, tower_units, dropout, stage_logit_priors, core_prior.
    """

    def __init__(self, cardinalities, n_numeric, n_stages, embedding_dim=16, tower_units=(128, 64, 32),
                 dropout=0.0, stage_logit_priors=None, core_prior=0.0):
        nn.Module.__init__(self)
        self.n_stages = int(n_stages)
        self.n_tasks = self.n_stages + 1
        self.embedding = None
        self.embeddings = nn.ModuleList(
            SharedEmbedding(cardinalities, n_numeric, embedding_dim) for _ in range(self.n_tasks)
        )
        e_dim = self.embeddings[0].output_dim
        self.towers = nn.ModuleList(Tower(e_dim, tower_units, dropout) for _ in range(self.n_tasks))
        self.heads = nn.ModuleList(nn.Linear(t.output_dim, 1) for t in self.towers)
        self.init_heads(self.heads, stage_logit_priors, core_prior)

    def forward(self, cat, num, num_missing, generator=None):
        outs = []
        for emb, tower, head in zip(self.embeddings, self.towers, self.heads):
            outs.append(head(tower(emb(cat, num, num_missing))[1]).squeeze(-1))
        return torch.stack(outs, dim=1)
