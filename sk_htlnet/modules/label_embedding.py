"""Label Embedding Unit (LEU), HTLNet §2.3.

A binary stage's label is *sampled from the stage's own prediction* with binary Gumbel-softmax and
embedded with a two-row table ``E`` (label 0, label 1); true labels are never fed forward.

For a stage logit ``z`` (``y_hat = sigmoid(z)``) the two-class Gumbel-softmax of HTLNet §2.3,
``softmax(((log y_hat + g1) / tau, (log(1 - y_hat) + g0) / tau))``, reduces to
``q1 = sigmoid((z + g1 - g0) / tau)``, and ``g1 - g0`` of two independent Gumbel(0, 1) draws is a
standard logistic variable ``L = log(u / (1 - u))``, ``u ~ U(0, 1)``.  Computing it from the logit
avoids ``log(y_hat)`` underflow for confident predictions.

Sampling modes
--------------
``"hard"`` (default): straight-through; the forward pass uses ``1[z + L > 0]``, whose probability of
being 1 is exactly ``y_hat``, the backward pass the relaxed ``q1``. At inference the deterministic
expectation ``y_hat * E[1] + (1 - y_hat) * E[0]`` is what training saw on average.

``"relaxed"``: the forward pass uses ``q1`` itself.  ``E[q1]`` is not ``y_hat`` (docs/method.md, Model), so at
inference the LEU uses ``E[q1]`` computed deterministically by averaging ``sigmoid((z + L_i) / tau)``
over fixed logistic quantiles ``L_i`` (a midpoint rule), keeping training and inference consistent.
"""

import torch
from torch import nn

_N_QUANTILES = 64


class LabelEmbedding(nn.Module):
    """Embed a stage's sampled label.

    Parameters
    ----------
    embedding_dim : int
        Size of each of the two label vectors.
    sampling : {"hard", "relaxed"}, default="hard"
        Straight-through hard sample or relaxed Gumbel-softmax sample.
    tau : float, default=1.0
        Gumbel-softmax temperature (> 0).

    Notes
    -----
    ``forward(logit, generator=None)``: ``logit`` float32 (batch,), returns float32
    (batch, embedding_dim).  In training mode the output is random (drawn with ``generator`` when
    given); in eval mode it is the deterministic expectation described in the module docstring.
    """

    def __init__(self, embedding_dim, sampling="hard", tau=1.0):
        super().__init__()
        if sampling not in ("hard", "relaxed"):
            raise ValueError(f"sampling must be 'hard' or 'relaxed', got {sampling!r}")
        self.sampling = sampling
        self.tau = float(tau)
        self.table = nn.Parameter(torch.randn(2, int(embedding_dim)) * 0.05)
        u = (torch.arange(_N_QUANTILES, dtype=torch.float32) + 0.5) / _N_QUANTILES
        self.register_buffer("_logistic_quantiles", torch.log(u / (1 - u)), persistent=False)

    def label_probability(self, logit, generator=None):
        """Weight ``q1`` given to the label-1 row: a sample in training, its expectation in eval."""
        if not self.training:
            if self.sampling == "hard":
                return torch.sigmoid(logit)
            z = logit.unsqueeze(-1) + self._logistic_quantiles
            return torch.sigmoid(z / self.tau).mean(-1)
        u = torch.rand(logit.shape, generator=generator, dtype=logit.dtype, device=logit.device)
        u = u.clamp(1e-6, 1 - 1e-6)
        noisy = logit + torch.log(u) - torch.log1p(-u)
        q1 = torch.sigmoid(noisy / self.tau)
        if self.sampling == "relaxed":
            return q1
        hard = (noisy > 0).to(q1.dtype)
        return hard + (q1 - q1.detach())  # exactly `hard` forward, grad of q1 backward

    def forward(self, logit, generator=None):
        q1 = self.label_probability(logit, generator).unsqueeze(-1)
        return q1 * self.table[1] + (1 - q1) * self.table[0]
