"""make_funnel's targets given the task scores: the two stage processes, the core and their truth.

``shared`` (``transfer=None``): logistic stages whose core amount, given x, ignores them.
``transfer`` (``transfer`` = loadings beta_t): probit stages, i.e. a utility
``U_t = eta_t(x) + v_t`` with a standard normal stage residual ``v_t``, and a core amount whose
log-location adds ``sum_t beta_t * U_t``. The formulas are in make_funnel's docstring.
"""

import numpy as np
from scipy.optimize import brentq
from scipy.special import expit, logit, ndtr

CORE_LOG_MEAN = 3.0  # log-mean of the core amount at an average x, before the transfer term
CORE_SIGMA = 1.0  # log-scale noise of the lognormal core
# the logistic's standard deviation: probit stages with scores divided by it are as predictable
# as the logistic ones at the same signal (the truth's stage AUCs agree within 0.02)
LOGISTIC_SD = np.pi / np.sqrt(3.0)


class Targets:
    """How one funnel turns its scores into labels: stage link, core loadings, tail and unit."""

    def __init__(self, transfer, tail_index, scale):
        self.transfer = None if transfer is None else np.asarray(transfer, dtype=float)
        self.tail_index = tail_index  # None: lognormal noise; alpha > 1: Pareto noise
        self.scale = scale
        self.link = expit if transfer is None else ndtr

    def index(self, intercepts, scores):
        """The stage indices eta_t(x) (k, size) from the intercepts and the stage scores."""
        if self.transfer is None:
            return intercepts[:, None] + scores
        return intercepts[:, None] + scores / LOGISTIC_SD

    def noise_mean(self):
        """E[xi], the mean of the multiplicative core noise."""
        if self.tail_index is None:
            return np.exp(CORE_SIGMA**2 / 2)
        return self.tail_index / (self.tail_index - 1.0)

    def draw(self, rng, eta, prob, mu, latent=False):
        """Draw nested 0/1 stages (k, size) and the core from the stage indices eta (k, size),
        their conditional probabilities prob = link(eta) and the core's log-mean mu (size,).

        Returns the stages, the core and, if latent, the utilities (k, size) and the core's
        log-location (size,) (else None).
        """
        n_stages, size = eta.shape
        stages = np.empty((n_stages, size), dtype=np.int64)
        passed = np.ones(size, dtype=bool)
        if self.transfer is None:
            utility = np.empty((n_stages, size)) if latent else None
            for t in range(n_stages):
                u = rng.random(size)
                passed &= u < prob[t]
                stages[t] = passed
                if latent:  # a logistic utility: > 0 where u < expit(eta), up to rounding
                    utility[t] = eta[t] - logit(u)
            location = mu
        else:
            utility = eta + rng.standard_normal((n_stages, size))
            for t in range(n_stages):
                passed &= utility[t] > 0
                stages[t] = passed
            location = mu + self.transfer @ utility
        if self.tail_index is None:
            core = np.exp(location + CORE_SIGMA * rng.standard_normal(size))
        else:  # Pareto noise on [1, inf): P(xi > u) = u**-alpha, by inversion
            core = np.exp(location) * (1.0 - rng.random(size)) ** (-1.0 / self.tail_index)
        core = np.where(passed, core, 0.0)
        if self.scale != 1.0:
            core *= self.scale
        return stages, core, ((utility, location) if latent else None)

    def expectations(self, eta, prob, mu):
        """Return P(stage_t = 1 | x) for every stage and E[core | x], shape (k + 1, size)."""
        reach = np.cumprod(prob, axis=0)
        last = reach[-1] if len(reach) else 1.0
        if self.transfer is None and self.tail_index is None:
            core = last * np.exp(mu + CORE_SIGMA**2 / 2)
        elif self.transfer is None:
            core = last * np.exp(mu) * self.noise_mean()
        else:
            # E[exp(b U) 1{U > 0}] = exp(b eta + b**2 / 2) Phi(eta + b) for U ~ N(eta, 1)
            beta = self.transfer[:, None]
            log_gain = np.sum(beta * eta + beta**2 / 2, axis=0)
            core = np.prod(ndtr(eta + beta), axis=0) * np.exp(mu + log_gain) * self.noise_mean()
        if self.scale != 1.0:
            core = core * self.scale
        return np.vstack([reach, core])

    def calibrate(self, scores, rates):
        """Solve each stage's intercept so its conditional rate on the pilot sample is rates[t]."""
        scores = self.index(np.zeros(len(rates)), scores[: len(rates)])
        reach = np.ones(scores.shape[1])
        intercepts = np.empty(len(rates))
        for t, rate in enumerate(rates):
            def gap(a):
                return np.average(self.link(a + scores[t]), weights=reach) - rate

            bound = 50.0 + np.abs(scores[t]).max()  # link(-bound + score) < 2e-22 <= rate
            intercepts[t] = brentq(gap, -bound, bound, xtol=1e-10)
            reach = reach * self.link(intercepts[t] + scores[t])
        return intercepts
