"""The paper's regime (issue 17): a core trained on its raw scale, where the gradient rule must tame it."""

import numpy as np
import pytest

from sk_htlnet import HTLNetRegressor
from sk_htlnet.datasets import make_funnel
from sk_htlnet.gradient import resolve_rule
from sk_htlnet.metrics import auc, normalized_gini


@pytest.mark.parametrize("scale, units, expected", [
    (1.0, False, (0.1, 10.0)),      # a transformed core: the re-implementation's values
    (1e12, False, (0.1, 10.0)),
    (1.0, True, (1.0, 10.0)),       # the core's own units: gamma 1, C scaled with the loss
    (1e6, True, (1.0, 1e7)),
    (1e-4, True, (1.0, 1e5)),
])
def test_auto_rule_settings(scale, units, expected):
    assert resolve_rule("auto", "auto", scale, units) == pytest.approx(expected)
    assert resolve_rule(0.3, 2.0, scale, units) == (0.3, 2.0)  # numbers are kept


def _funnel(n):
    X, Y = make_funnel(n, n_stages=2, random_state=0)
    return X, Y.assign(core=Y["core"] / Y["core"].std(ddof=0))  # the core in units of its std


def _fit(X, Y, scale, **params):
    est = HTLNetRegressor(target_transform="none", core_loss="mse", max_iter=5, random_state=0, n_threads=1,
                          **params)
    return est.fit(X, Y.assign(core=Y["core"] * scale))


@pytest.fixture(scope="module")
def small():
    return _funnel(4000)


def test_with_the_default_rule_the_core_unit_does_not_change_what_the_stages_learn(small):
    """gamma = 1 and a C that scales with the loss give each stage gradient the core's norm: a core
    measured in units 1e6 times smaller (a 1e12 larger loss) trains the same stages and the same
    core, up to float rounding. With the former fixed gamma = 0.1 and C = 10 the stage predictions
    moved by 1e-2 and the core's by 12% (checked when this test was written)."""
    X, Y = small
    unit, scaled = _fit(X, Y, 1.0), _fit(X, Y, 1e6)
    assert (unit.relax_factor_, scaled.relax_factor_) == (1.0, 1.0)
    assert scaled.clip_ratio_ == pytest.approx(1e13)
    p1, p6 = unit.predict(X), scaled.predict(X)
    assert np.abs(p1[:, :2] - p6[:, :2]).max() < 3e-3
    assert np.abs(p1[:, 2] * 1e6 - p6[:, 2]).max() < 0.05 * np.abs(p6[:, 2]).max()


def test_the_fixed_settings_of_a_transformed_core_let_the_unit_steer_the_stages(small):
    """The contrast that makes the test above able to fail: gamma = 0.1, C = 10 on the raw scale."""
    X, Y = small
    p1 = _fit(X, Y, 1.0, relax_factor=0.1, clip_ratio=10.0).predict(X)
    p6 = _fit(X, Y, 1e6, relax_factor=0.1, clip_ratio=10.0).predict(X)
    assert np.abs(p1[:, :2] - p6[:, :2]).max() > 5e-3


def test_a_raw_scale_core_keeps_the_stage_aucs_and_the_core_ranking_of_a_standardised_fit():
    """Issue 17's acceptance: on a x1e6 core with target_transform="none" and the default rule, every
    stage AUC within 0.02 of the standardised fit and the core's Gini at least 0.9 of it."""
    X, Y = make_funnel(20_000, n_stages=2, random_state=0)
    Y = Y.assign(core=Y["core"] * 1e6)
    train, test = slice(0, 16_000), slice(16_000, None)
    scores = {}
    for transform in ("standardize", "none"):
        est = HTLNetRegressor(target_transform=transform, core_loss="mse", max_iter=15, early_stopping=True,
                              random_state=0, n_threads=1).fit(X[train], Y[train])
        pred = est.predict(X[test])
        scores[transform] = [auc(Y[test].iloc[:, j], pred[:, j]) for j in range(2)] + [
            normalized_gini(Y[test]["core"], pred[:, 2])]
    standardized, raw = scores["standardize"], scores["none"]
    for j in range(2):
        assert abs(raw[j] - standardized[j]) <= 0.02, scores
    assert raw[2] >= 0.9 * standardized[2], scores


def test_paper_params_give_the_papers_configuration_with_overrides():
    from sk_htlnet import paper_params

    params = paper_params(random_state=3, architecture="shared_bottom")
    est = HTLNetRegressor(**params)
    assert (est.numeric_encoding, est.core_loss, est.target_transform, est.sparse_updates) == (
        "linear", "mse", "none", False)
    assert (est.architecture, est.gradient_adjustment, est.random_state) == ("shared_bottom", "htlnet", 3)
    assert paper_params() is not paper_params()  # a new dict each time
    with pytest.raises(ValueError, match=r"\['bogus'\] are not HTLNetRegressor parameters"):
        paper_params(bogus=1)
    X, Y = make_funnel(600, n_stages=2, random_state=0)  # "w/o Architecture": the rule on Shared-Bottom fits
    fitted = HTLNetRegressor(**paper_params(architecture="shared_bottom", max_iter=1, n_threads=1,
                                            random_state=0)).fit(X, Y)
    assert fitted.relax_factor_ == 1.0 and np.isfinite(fitted.predict(X)).all()
