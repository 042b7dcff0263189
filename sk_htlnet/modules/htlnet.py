"""HTLNet: Hybrid Targets Learning Network (Tang et al., RecSys 2024, arXiv 2403.17442), HTLNet §2.

Tasks are ordered as in the funnel: ``k >= 0`` binary stages, then the continuous core target.
Task 1's tower reads the shared embedding ``e``; task ``t >= 2``'s tower reads
``concat(IFU_rep(rep_1..rep_{t-1}, cand), IFU_le(le_1..le_{t-1}, cand), e)`` (HTLNet §2.5), so the core
task sees every stage's representation and label embedding.

Stop-gradient (HTLNet §2.6, our decision): the upstream logit is detached before the LEU and the
upstream representation before the IFU, so a downstream loss never reaches an upstream tower or head;
LEU tables and IFU weights are trained by the downstream losses, and the shared embedding receives
every task's gradient (arbitrated by the gradient rule, HTLNet §4).
"""

import torch
from torch import nn

from .base import MultiTaskModel, head_widths, init_heads, join_outputs
from .fusion import InformationFusion
from .label_embedding import LabelEmbedding
from .tower import Tower


class HTLNet(MultiTaskModel):
    """The full HTLNet model.

    Parameters
    ----------
    cardinalities : sequence of int
        Embedding rows per categorical field (OOV and missing rows included).
    n_numeric : int
        Number of numeric fields.
    n_stages : int
        Number ``k >= 0`` of binary stages before the core target.
    embedding_dim : int, default=16
        Size of each field embedding.
    tower_units : sequence of int, default=(128, 64, 32)
        Hidden layer widths of every task tower.
    label_embedding_dim : int, default=16
        Size of each label embedding (LEU).
    fusion_dim : int, default=32
        Output size of each IFU.
    fusion : {"attention", "concat"}, default="attention"
        Fusion operator of the IFU.
    label_sampling : {"hard", "relaxed"}, default="hard"
        LEU sampling mode.
    tau : float, default=1.0
        Gumbel-softmax temperature.
    dropout : float, default=0.0
        Dropout in the towers.
    stage_logit_priors : sequence of float, optional
        Initial bias of each stage head (the logit of the stage's base rate helps rare stages).
    core_prior : float or sequence of float, default=0.0
        Initial bias of the core head (mean of the transformed core target); a sequence of m values
        gives a core head with m outputs (the distribution parameters of ``core_loss="ziln"``).
    label_embedding : bool, default=True
        Pass the stages' label embeddings downstream (False: the paper's "without LEU" ablation).
    representation_transfer : bool, default=True
        Pass the stages' representations downstream (False: "without the IFU representation path").
    stop_gradient : bool, default=True
        Detach what is passed downstream (False: "without stop-gradient"; downstream losses then also
        train the upstream towers and heads).
    numeric_encoding, numeric_edges
        Embedding of the numeric fields, see :class:`~sk_htlnet.modules.SharedEmbedding`.

    Notes
    -----
    ``forward(cat, num, num_missing, generator=None)`` returns float32 (batch, k + m): the k stage
    logits, then the core head's m outputs on the scale used by the loss (m = 1 but for "ziln").
    """

    supports_per_task = True  # forward_from_embedding(..., per_task=True) for the gradient rule

    def __init__(
        self,
        cardinalities,
        n_numeric,
        n_stages,
        embedding_dim=16,
        tower_units=(128, 64, 32),
        label_embedding_dim=16,
        fusion_dim=32,
        fusion="attention",
        label_sampling="hard",
        tau=1.0,
        dropout=0.0,
        stage_logit_priors=None,
        core_prior=0.0,
        label_embedding=True,
        representation_transfer=True,
        stop_gradient=True,
        numeric_encoding="linear",
        numeric_edges=None,
    ):
        super().__init__(cardinalities, n_numeric, n_stages, embedding_dim, numeric_encoding, numeric_edges)
        self.use_label_embedding = bool(label_embedding)
        self.use_representation = bool(representation_transfer)
        self.stop_gradient = bool(stop_gradient)
        e_dim = self.embedding.output_dim
        n_tasks = self.n_stages + 1
        downstream_dim = (self.use_label_embedding + self.use_representation) * fusion_dim + e_dim
        self.towers = nn.ModuleList(
            Tower(e_dim if t == 0 else downstream_dim, tower_units, dropout) for t in range(n_tasks)
        )
        self.heads = nn.ModuleList(
            nn.Linear(tower.output_dim, width)
            for tower, width in zip(self.towers, head_widths(self.n_stages, core_prior))
        )
        self.label_embeddings = nn.ModuleList(
            LabelEmbedding(label_embedding_dim, label_sampling, tau) for _ in range(self.n_stages)
        )
        rep_dim = self.towers[0].rep_dim
        # Task t >= 1 (0-based) fuses its t predecessors plus its own candidate from e.
        self.rep_candidates = nn.ModuleList(nn.Linear(e_dim, rep_dim) for _ in range(1, n_tasks))
        self.le_candidates = nn.ModuleList(
            nn.Linear(e_dim, label_embedding_dim) for _ in range(1, n_tasks)
        )
        self.rep_fusions = nn.ModuleList(
            InformationFusion(rep_dim, t + 1, fusion_dim, fusion) for t in range(1, n_tasks)
        )
        self.le_fusions = nn.ModuleList(
            InformationFusion(label_embedding_dim, t + 1, fusion_dim, fusion)
            for t in range(1, n_tasks)
        )
        init_heads(self.heads, stage_logit_priors, core_prior)

    def forward_from_embedding(self, e, generator=None, per_task=False):
        """Run the towers, LEUs and IFUs on a given shared embedding ``e``; returns (batch, k + m),
        or with ``per_task`` the list of each task's head output, (batch, width), unjoined: the
        graph of task t's output then holds only what task t depends on, so a backward pass from
        one task's loss does not traverse the other towers (the gradient rule needs one per task)."""
        reps, label_embs, outputs = [], [], []
        for t, (tower, head) in enumerate(zip(self.towers, self.heads)):
            if t == 0:
                x = e
            else:
                parts = []
                if self.use_representation:
                    rep_set = torch.stack(reps + [self.rep_candidates[t - 1](e)], dim=1)
                    parts.append(self.rep_fusions[t - 1](rep_set))
                if self.use_label_embedding:
                    le_set = torch.stack(label_embs + [self.le_candidates[t - 1](e)], dim=1)
                    parts.append(self.le_fusions[t - 1](le_set))
                x = torch.cat(parts + [e], dim=1)
            rep, hidden = tower(x)
            out = head(hidden)
            outputs.append(out)
            if t < self.n_stages:  # stop-gradient on everything passed downstream (HTLNet §2.6)
                detach = torch.Tensor.detach if self.stop_gradient else (lambda v: v)
                reps.append(detach(rep))
                label_embs.append(self.label_embeddings[t](detach(out.squeeze(-1)), generator))
        return outputs if per_task else join_outputs(outputs)
