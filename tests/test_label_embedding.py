"""The relaxed LEU's inference (issue 17): E[q1] of training-mode draws, accurate on rare stages."""

import numpy as np
import pytest
import torch
from scipy import integrate
from scipy.special import expit

from sk_htlnet import HTLNetRegressor
from sk_htlnet.datasets import make_funnel
from sk_htlnet.modules.label_embedding import LabelEmbedding, expected_relaxed_label

from _sizes import SMALL_NET

RATES = [0.001, 0.005, 0.01, 0.1, 0.5, 0.9]
TAUS = [0.1, 0.3, 1.0]
N_DRAWS = 20_000_000  # relative standard error at most sqrt(1 / (rate * N)) = 0.7% at rate 0.001


def _monte_carlo(leu, logit, n, seed=0):
    """Mean of training-mode q1 over n draws, accumulated in float64."""
    g = torch.Generator().manual_seed(seed)
    total, chunk = 0.0, 2_000_000
    for start in range(0, n, chunk):
        q1 = leu.label_probability(torch.full((min(chunk, n - start),), logit), g)
        total += q1.double().sum().item()
    return total / n


@pytest.mark.parametrize("tau", TAUS)
@pytest.mark.parametrize("rate", RATES)
def test_relaxed_inference_equals_the_mean_of_training_draws_within_3_percent(rate, tau):
    """The old rule (64 fixed logistic quantiles) returned 0 at rate 0.001 and tau 0.1 (-100%),
    -97% at 0.005 and +41% at 0.01."""
    leu = LabelEmbedding(2, sampling="relaxed", tau=tau)
    logit = float(np.log(rate / (1 - rate)))
    train_mean = _monte_carlo(leu, logit, N_DRAWS)
    leu.eval()
    eval_value = leu.label_probability(torch.tensor([logit])).item()
    assert eval_value == pytest.approx(train_mean, rel=0.03)


@pytest.mark.parametrize("tau", [0.05, 0.1, 0.3, 0.7, 1.0, 1.5, 3.0, 10.0])
def test_the_quadrature_matches_adaptive_integration(tau):
    nodes, weights = (torch.as_tensor(a, dtype=torch.float64) for a in np.polynomial.laguerre.laggauss(32))
    for rate in [1e-4, 1e-3, 0.01, 0.1, 0.5, 0.9, 0.9999]:
        z = np.log(rate / (1 - rate))
        exact = integrate.quad(lambda L: expit((z + L) / tau) * expit(L) * expit(-L), -60, 60, points=[-z],
                               limit=500, epsabs=1e-15, epsrel=1e-12)[0]
        got = expected_relaxed_label(torch.tensor([z], dtype=torch.float64), tau, nodes, weights).item()
        assert got == pytest.approx(exact, rel=1e-4), (rate, tau)


@pytest.mark.parametrize("rate", [1e-3, 0.01, 0.3, 0.97])
def test_at_tau_1_the_expectation_has_its_closed_form_and_hard_sampling_gives_the_rate(rate):
    """At tau = 1, E[sigmoid(z + L)] = int_0^1 a u / (1 + (a - 1) u) du = a / (a - 1) (1 - log(a) / (a - 1))
    with a = e^z: far above the rate for a rare stage (0.037 at rate 0.01, docs/method.md)."""
    a = rate / (1 - rate)
    closed = a / (a - 1) * (1 - np.log(a) / (a - 1))
    logit = torch.tensor([float(np.log(a))])
    relaxed = LabelEmbedding(2, sampling="relaxed", tau=1.0).eval()
    hard = LabelEmbedding(2, sampling="hard", tau=1.0).eval()
    assert relaxed.label_probability(logit).item() == pytest.approx(closed, rel=1e-4)
    assert hard.label_probability(logit).item() == pytest.approx(rate, rel=1e-5)


def test_tau_is_inert_with_hard_samples_and_stop_gradient_and_acts_otherwise():
    """What HTLNetRegressor's tau docstring states: the hard forward pass does not depend on tau, and
    the straight-through gradient it shapes reaches only the detached upstream logit."""
    X, Y = make_funnel(600, n_stages=2, n_categorical=2, n_numeric=2, random_state=0)

    def predict(**params):
        est = HTLNetRegressor(**SMALL_NET, max_iter=2, random_state=0, n_threads=1, **params)
        return est.fit(X, Y).predict(X)

    np.testing.assert_array_equal(predict(tau=1.0), predict(tau=0.1))
    assert not np.array_equal(predict(tau=1.0, stop_gradient=False), predict(tau=0.1, stop_gradient=False))
    assert not np.array_equal(predict(tau=1.0, label_sampling="relaxed"), predict(tau=0.1, label_sampling="relaxed"))
