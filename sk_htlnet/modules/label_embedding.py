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
inference the LEU uses ``E[q1]``, keeping training and inference consistent.  It is computed
deterministically as ``y_hat`` plus a correction that only the rows near the threshold contribute
(with ``f`` the standard logistic density and ``L = -z + tau t``)::

    E[q1] = int sigmoid((z + L) / tau) f(L) dL
          = sigmoid(z) + tau * int_0^inf sigmoid(-t) (f(z + tau t) - f(z - tau t)) dt

(the step ``1[L > -z]`` integrates to ``sigmoid(z)`` exactly, and ``sigmoid(t) - 1[t > 0]`` is odd
in ``t``).  The correction is ``int_0^inf e^-t g(t) dt`` with the smooth, bounded
``g(t) = sigmoid(t) (f(z + tau t) - f(z - tau t))``, integrated by Gauss-Laguerre quadrature with 32
nodes.  Above ``tau = 1`` the symmetry ``E(z, tau) = E(z / tau, 1 / tau)`` (``sigmoid((z + L) / tau)``
is ``P(tau L' - L < z)`` for another logistic ``L'``) brings the temperature back to at most 1,
where the rule is accurate to about 3e-5 relative (stage rates 1e-4 to 0.9999; in float64 against
adaptive quadrature, and against Monte-Carlo draws of training mode in tests/test_label_embedding.py).  A fixed grid of logistic quantiles, the earlier rule, misses the threshold of a rare
stage (it returned 0 for a rate of 0.001 at tau = 0.1).
"""

import numpy as np
import torch
from torch import nn

_N_LAGUERRE = 32


def _logistic_density(x):
    """f(x) = sigmoid(x) sigmoid(-x), without overflow for large |x|."""
    return torch.sigmoid(x) * torch.sigmoid(-x)


def expected_relaxed_label(logit, tau, nodes, weights):
    """E[sigmoid((z + L) / tau)] for a standard logistic L, elementwise over ``logit`` z.

    Parameters
    ----------
    logit : float tensor (...)
    tau : float
        Temperature (> 0).
    nodes, weights : float tensors (n,)
        Gauss-Laguerre nodes and weights (``numpy.polynomial.laguerre.laggauss``).

    Returns
    -------
    float tensor, the shape of ``logit``, in [0, 1]
        The formula of the module docstring (HTLNet §2.3's binary Gumbel-softmax, its expectation).
    """
    if tau > 1.0:  # E(z, tau) = E(z / tau, 1 / tau): the quadrature is accurate for tau <= 1
        logit, tau = logit / tau, 1.0 / tau
    z = logit.unsqueeze(-1)
    t = nodes * tau
    g = torch.sigmoid(nodes) * (_logistic_density(z + t) - _logistic_density(z - t))
    return (torch.sigmoid(logit) + tau * (g * weights).sum(-1)).clamp(0.0, 1.0)


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
        nodes, weights = np.polynomial.laguerre.laggauss(_N_LAGUERRE)
        self.register_buffer("_laguerre_nodes", torch.as_tensor(nodes, dtype=torch.float32), persistent=False)
        self.register_buffer("_laguerre_weights", torch.as_tensor(weights, dtype=torch.float32), persistent=False)

    def label_probability(self, logit, generator=None):
        """Weight ``q1`` given to the label-1 row: a sample in training, its expectation in eval."""
        if not self.training:
            if self.sampling == "hard":
                return torch.sigmoid(logit)
            return expected_relaxed_label(logit, self.tau, self._laguerre_nodes.to(logit.dtype),
                                          self._laguerre_weights.to(logit.dtype))
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
