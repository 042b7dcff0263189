"""ESMM adapted to hybrid targets (Ma et al., SIGIR 2018; the adaptation is ours).

ESMM models a funnel in the entire space: each stage's tower predicts the *conditional* probability
of passing it given the previous stage, and the entire-space probability of stage t is the product
of the conditional ones, p_t = prod_{j <= t} q_j, trained with BCE on every row.  ESMM has no notion
of a continuous target, so the core task here is a plain tower on the shared embedding with a linear
head (a shared-bottom core tower), as in HTLNet §5's description of the adapted baseline.
"""

import torch
from torch.nn import functional as F

from .base import MultiTaskModel, TowersAndHeads, head_widths


class ESMM(MultiTaskModel):
    """Shared embedding; stage outputs are logits of the entire-space products."""

    def __init__(self, cardinalities, n_numeric, n_stages, embedding_dim=16, tower_units=(128, 64, 32),
                 dropout=0.0, stage_logit_priors=None, core_prior=0.0,
                 numeric_encoding="linear", numeric_edges=None):
        super().__init__(cardinalities, n_numeric, n_stages, embedding_dim, numeric_encoding, numeric_edges)
        self.tasks = TowersAndHeads([self.embedding.output_dim] * self.n_tasks, tower_units, dropout,
                                    head_widths(self.n_stages, core_prior))
        priors = list(stage_logit_priors or [])
        # conditional priors: log q_t = log p_t - log p_{t-1}, from the entire-space base rates
        log_p = [float(F.logsigmoid(torch.tensor(v))) for v in priors]
        conditional = []
        for t, lp in enumerate(log_p):
            lq = min(lp - (log_p[t - 1] if t else 0.0), -1e-6)
            conditional.append(lq - float(torch.log(-torch.expm1(torch.tensor(lq)))))
        self.init_heads(self.tasks.heads, None if stage_logit_priors is None else conditional, core_prior)

    def forward_from_embedding(self, e, generator=None):
        raw = self.tasks([e] * self.n_tasks)
        k = self.n_stages
        if k == 0:
            return raw
        log_p = torch.cumsum(F.logsigmoid(raw[:, :k]), dim=1)  # log of the entire-space products
        log_p = log_p.clamp(max=-1e-7)
        stage_logits = log_p - torch.log(-torch.expm1(log_p))  # logit(p) = log p - log(1 - p)
        return torch.cat([stage_logits, raw[:, k:]], dim=1)
