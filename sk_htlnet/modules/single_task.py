"""Single-task DNNs: one independent model (embedding, tower, head) per task, no shared parameters.

The baseline against which multi-task learning has to pay off (HTLNet §5, "single-task DNN").
"""

from torch import nn

from .base import MultiTaskModel, head_widths, join_outputs
from .embedding import SharedEmbedding
from .tower import Tower


class SingleTask(MultiTaskModel):
    """Independent DNNs per task; ``embedding`` is None (there is nothing to arbitrate).

    Parameters: as :class:`~sk_htlnet.modules.HTLNet`'s cardinalities, n_numeric, n_stages,
    embedding_dim, tower_units, dropout, stage_logit_priors, core_prior, numeric_encoding,
    numeric_edges.
    """

    def __init__(self, cardinalities, n_numeric, n_stages, embedding_dim=16, tower_units=(128, 64, 32),
                 dropout=0.0, stage_logit_priors=None, core_prior=0.0,
                 numeric_encoding="linear", numeric_edges=None):
        super().__init__(cardinalities, n_numeric, n_stages, embedding_dim, numeric_encoding, numeric_edges,
                         shared=False)
        self.embeddings = nn.ModuleList(
            SharedEmbedding(cardinalities, n_numeric, embedding_dim, numeric_encoding, numeric_edges) for _ in range(self.n_tasks)
        )
        e_dim = self.embeddings[0].output_dim
        self.towers = nn.ModuleList(Tower(e_dim, tower_units, dropout) for _ in range(self.n_tasks))
        self.heads = nn.ModuleList(
            nn.Linear(t.output_dim, w) for t, w in zip(self.towers, head_widths(self.n_stages, core_prior))
        )
        self.init_heads(self.heads, stage_logit_priors, core_prior)

    def forward(self, cat, num, num_missing, generator=None):
        outs = []
        for emb, tower, head in zip(self.embeddings, self.towers, self.heads):
            outs.append(head(tower(emb(cat, num, num_missing))[1]))
        return join_outputs(outs)
