"""The core target's predictive distribution (core_loss="ziln"): exact quantiles of the mixture of
an atom at zero and a lognormal, and their calibration counted with the atom (issue 19)."""

import numpy as np
import pytest

from sk_htlnet import HTLNetRegressor
from sk_htlnet.datasets import load_hillstrom, make_funnel
from sk_htlnet.distribution import ZeroInflatedLognormal, quantile_coverage

TAUS = [0.05, 0.2, 0.5, 0.7, 0.9, 0.99]


def _rows(n, seed=0):
    rng = np.random.default_rng(seed)
    return ZeroInflatedLognormal(rng.uniform(0.05, 0.95, n), rng.normal(0, 1, n), rng.uniform(0.2, 2, n),
                                 scale=rng.uniform(0.5, 50))


def _sample(dist, rng):
    positive = rng.uniform(size=len(dist)) < dist.p_positive
    return np.where(positive, dist.scale * np.exp(dist.mu + dist.sigma * rng.normal(size=len(dist))), 0.0)


def test_quantiles_are_those_of_the_mixture():
    dist = _rows(1)
    rng = np.random.default_rng(1)
    one = ZeroInflatedLognormal(np.repeat(dist.p_positive, 200_000), np.repeat(dist.mu, 200_000),
                                np.repeat(dist.sigma, 200_000), dist.scale)
    draws = _sample(one, rng)
    got = dist.quantile(TAUS)[0]
    for tau, q in zip(TAUS, got):
        if tau <= dist.zero_mass[0]:
            assert q == 0.0
        else:  # the draws' empirical quantile, within its sampling error
            assert np.quantile(draws, tau) == pytest.approx(q, rel=0.03)


def test_cdf_inverts_the_quantile_above_the_atom():
    dist = _rows(500)
    q = dist.quantile(TAUS)
    for j, tau in enumerate(TAUS):
        above = tau > dist.zero_mass
        part = ZeroInflatedLognormal(dist.p_positive[above], dist.mu[above], dist.sigma[above], dist.scale)
        np.testing.assert_allclose(part.cdf(q[above, j]), tau, rtol=1e-9)
        assert (q[~above, j] == 0).all()
    np.testing.assert_array_equal(dist.cdf(np.zeros(500)), dist.zero_mass)
    assert (dist.cdf(-np.ones(500)) == 0).all()


def test_coverage_counts_the_atom_by_its_mass():
    """Targets drawn from the predicted distributions are covered at every level; counting
    ``y <= q`` at zero instead over-covers every level below the atom's mass."""
    dist = _rows(100_000, seed=2)
    y = _sample(dist, np.random.default_rng(3))
    coverage = quantile_coverage(y, dist, TAUS)
    np.testing.assert_allclose(coverage, TAUS, atol=0.006)
    naive = (y[:, None] <= dist.quantile(TAUS)).mean(0)
    assert naive[0] > TAUS[0] + 0.1  # every zero target is "below" a zero quantile
    with pytest.raises(ValueError, match="rows"):
        quantile_coverage(y[:-1], dist, TAUS)
    with pytest.raises(ValueError, match=">= 0"):
        quantile_coverage(-y - 1, dist, TAUS)


@pytest.fixture(scope="module")
def ziln_fit():
    X, Y = load_hillstrom()
    X, Y = X.iloc[:8000], Y.iloc[:8000]
    est = HTLNetRegressor(core_loss="ziln", retransformation="none", max_iter=3, random_state=0).fit(X, Y)
    return est, X.iloc[:300]


def test_predict_quantiles_of_the_fitted_head(ziln_fit):
    est, X = ziln_fit
    q = est.predict_quantiles(X, TAUS)
    assert q.shape == (len(X), len(TAUS)) and q.dtype == np.float64
    assert (np.diff(q, axis=1) >= 0).all() and (q >= 0).all()
    assert est.predict_quantiles(X, 0.5).shape == (len(X), 1)
    dist = est.predict_distribution(X)
    np.testing.assert_array_equal(q, dist.quantile(TAUS))
    assert dist.scale == pytest.approx(est.core_transform_.std)  # amounts in units of the training mean
    # retransformation="none": predict's core column is the distribution's mean (clipped to the range)
    core = est.predict(X)[:, -1]
    inside = core < est.core_transform_.high
    np.testing.assert_allclose(dist.mean()[inside], core[inside], rtol=1e-9)
    # the head's probability of a positive amount: zero quantiles exactly up to the atom's mass
    zero = dist.zero_mass
    assert ((q[:, 0] == 0) == (TAUS[0] <= zero)).all()


@pytest.mark.parametrize("levels", [[0.0, 0.5], [1.0], [], [[0.5]], ["median"], [np.nan]])
def test_levels_outside_the_open_interval_are_refused(ziln_fit, levels):
    est, X = ziln_fit
    with pytest.raises(ValueError, match="quantiles"):
        est.predict_quantiles(X, levels)


@pytest.mark.parametrize("core_loss", ["mse", "tweedie"])
def test_losses_without_a_distribution_are_refused(core_loss):
    X, Y = make_funnel(600, n_stages=1, random_state=0)
    est = HTLNetRegressor(core_loss=core_loss, max_iter=1, random_state=0).fit(X, Y.clip(lower=0))
    with pytest.raises(ValueError, match=f"core_loss='ziln'.*core_loss='{core_loss}'"):
        est.predict_quantiles(X, [0.5])
    with pytest.raises(ValueError, match="core_loss='ziln'"):
        est.predict_distribution(X)
