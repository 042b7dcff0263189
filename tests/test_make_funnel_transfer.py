"""make_funnel's transfer process and its raw-scale, heavy-tailed core (issue 17).

``transfer=beta`` draws probit stages from utilities ``U_t = eta_t(x) + v_t`` with a stage residual
``v_t ~ N(0, 1)`` and a core amount ``core_scale * exp(mu(x) + sum_t beta_t U_t) * xi``;
``core_tail_index=alpha`` makes the noise ``xi`` Pareto. The formulas are in make_funnel's
docstring and docs/user_guide/funnel.md.
"""

import numpy as np
import pandas as pd
import pytest
from pandas.testing import assert_frame_equal
from scipy import stats
from scipy.special import ndtr

from sk_htlnet.datasets import make_funnel

N = 200_000
BETA = [0.6, 1.0]  # per-stage loadings: exercises the sequence form


@pytest.fixture(scope="module")
def transfer_funnel():
    return make_funnel(N, transfer=BETA, missing_rate=0.1, random_state=0, return_truth=True,
                       return_latent=True)


@pytest.fixture(scope="module")
def control_funnel():
    """The matched control: the same X and stages, a core that ignores the stages given x."""
    return make_funnel(N, transfer=0.0, missing_rate=0.1, random_state=0, return_truth=True,
                       return_latent=True)


@pytest.fixture(scope="module")
def mu(control_funnel):
    """mu(x), the core's log-mean from the features alone: the control's core_location."""
    return control_funnel[3]["core_location"].to_numpy()


def mean_residual_z(observed, expected):
    """z-score of mean(observed - expected), whose expectation is 0 (see tests/test_datasets.py)."""
    residual = np.asarray(observed, dtype=float) - np.asarray(expected, dtype=float)
    return residual.mean() / (residual.std() / np.sqrt(residual.size))


def r_squared(y, *columns):
    """R^2 of the least-squares fit of y on an intercept and the columns."""
    design = np.column_stack([np.ones(len(y)), *columns])
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    return 1.0 - np.var(y - design @ coef) / np.var(y)


# the default is unchanged -------------------------------------------------------------------

# Sums of make_funnel's output recorded before the transfer option existed (at f02b5f1): stage
# counts are exact, float sums agree to rounding whatever the CPU's exp and log kernels.
BEFORE = [
    (dict(n_samples=3000, random_state=0),
     [941, 303], [22444.873733949782], [892.4307181310857, 267.96849413852397, 19035.790623373294]),
    (dict(n_samples=3000, n_stages=3, missing_rate=0.2, stage_rates=[0.5, 0.2, 0.4],
          random_state=7),
     [1533, 307, 128], [8653.780842786004],
     [1508.5508673257652, 300.27496787838845, 117.11234688788574, 8713.194795850613]),
]  # fmt: skip


@pytest.mark.parametrize("kwargs, stage_sums, core_sum, truth_sums", BEFORE)
def test_default_output_is_unchanged(kwargs, stage_sums, core_sum, truth_sums):
    default = make_funnel(**kwargs, return_truth=True)
    explicit = make_funnel(**kwargs, return_truth=True, transfer=None, core_tail_index=None,
                           core_scale=1.0, return_latent=False)
    assert len(default) == len(explicit) == 3
    for a, b in zip(default, explicit):
        assert_frame_equal(a, b, check_exact=True)
    _, Y, truth = default
    assert Y.iloc[:, :-1].sum().tolist() == stage_sums
    np.testing.assert_allclose(Y["core"].sum(), core_sum, rtol=1e-12)
    np.testing.assert_allclose(truth.sum().to_numpy(), truth_sums, rtol=1e-12)


def test_default_latent_is_consistent_and_leaves_the_draws_alone():
    """return_latent=True only adds a frame; its utilities decide the logistic stages."""
    X, Y, truth, latent = make_funnel(20_000, random_state=3, return_truth=True, return_latent=True)
    for a, b in zip((X, Y, truth), make_funnel(20_000, random_state=3, return_truth=True)):
        assert_frame_equal(a, b, check_exact=True)
    reached = np.ones(len(Y), dtype=bool)
    for t in (1, 2):
        assert ((latent[f"utility_{t}"] > 0) == (Y[f"stage_{t}"] == 1))[reached].mean() > 0.9999
        reached = Y[f"stage_{t}"].to_numpy() == 1
    np.testing.assert_allclose(truth["stage_1"], 1 / (1 + np.exp(-latent["eta_1"])), rtol=1e-12)


# reproducible, and a matched control ------------------------------------------------------------


def test_transfer_is_reproducible():
    kwargs = dict(transfer=0.8, core_tail_index=1.5, core_scale=1000.0, return_truth=True,
                  return_latent=True)
    first = make_funnel(3000, random_state=42, **kwargs)
    second = make_funnel(3000, random_state=42, **kwargs)
    for a, b in zip(first, second):
        assert_frame_equal(a, b, check_exact=True)
    other = make_funnel(3000, random_state=43, **kwargs)
    assert not first[1].equals(other[1])
    # across generation chunks (262,144 rows), and from a Generator
    big = [make_funnel(300_000, n_categorical=1, n_numeric=1, random_state=np.random.default_rng(5),
                       **kwargs) for _ in range(2)]
    for a, b in zip(*big):
        assert_frame_equal(a, b, check_exact=True)


def test_transfer_keeps_the_features_and_its_loadings_keep_the_stages(transfer_funnel,
                                                                      control_funnel):
    X, Y, _, latent = transfer_funnel
    X0, Y0, _, latent0 = control_funnel
    assert_frame_equal(X, X0, check_exact=True)
    assert_frame_equal(X, make_funnel(N, missing_rate=0.1, random_state=0)[0], check_exact=True)
    assert_frame_equal(Y.iloc[:, :2], Y0.iloc[:, :2], check_exact=True)
    cols = ["eta_1", "eta_2", "utility_1", "utility_2"]
    assert_frame_equal(latent[cols], latent0[cols], check_exact=True)
    assert not np.allclose(Y["core"], Y0["core"])


def test_transfer_without_stages_is_the_default_core():
    X, Y, truth = make_funnel(2000, n_stages=0, transfer=0.7, random_state=2, return_truth=True)
    X0, Y0, truth0 = make_funnel(2000, n_stages=0, random_state=2, return_truth=True)
    assert_frame_equal(X, X0, check_exact=True)
    assert_frame_equal(Y, Y0, check_exact=True)
    assert_frame_equal(truth, truth0, rtol=1e-14)  # the same formula, rounded in another order


# the truth is consistent ----------------------------------------------------------------------


def test_transfer_structure(transfer_funnel):
    X, Y, truth, latent = transfer_funnel
    assert list(latent.columns) == ["eta_1", "eta_2", "utility_1", "utility_2", "core_location"]
    assert (latent.dtypes == np.float64).all() and latent.index.equals(X.index)
    assert list(Y.dtypes) == [np.int64, np.int64, np.float64]
    assert (Y["stage_2"] <= Y["stage_1"]).all()
    assert ((Y["core"] > 0) == (Y["stage_2"] == 1)).all()
    assert (Y["core"][Y["stage_2"] == 0] == 0).all()
    # a stage happens exactly where it can and its utility is positive (no rounding: probit)
    assert ((latent["utility_1"] > 0) == (Y["stage_1"] == 1)).all()
    reached = Y["stage_1"] == 1
    assert ((latent["utility_2"] > 0) == (Y["stage_2"] == 1))[reached].all()
    np.testing.assert_allclose(truth["stage_1"], ndtr(latent["eta_1"]), rtol=1e-12)
    np.testing.assert_allclose(truth["stage_2"], ndtr(latent["eta_1"]) * ndtr(latent["eta_2"]),
                               rtol=1e-12)


@pytest.mark.parametrize("column", ["stage_1", "stage_2", "core"])
def test_transfer_truth_is_calibrated(transfer_funnel, column):
    """Overall and within each quintile of the truth (40,000 rows), |z| < 4 (see test_datasets)."""
    _, Y, truth, _ = transfer_funnel
    assert abs(mean_residual_z(Y[column], truth[column])) < 4
    bins = pd.qcut(truth[column].rank(method="first"), 5, labels=False).to_numpy()
    for b in range(5):
        rows = bins == b
        assert abs(mean_residual_z(Y[column][rows], truth[column][rows])) < 4, b


def test_transfer_stage_rates_set_conditional_rates():
    """As in test_datasets: the probit intercepts hit stage_rates within 0.02 (about 4 s.e.)."""
    rates = [0.5, 0.2, 0.4]
    _, Y = make_funnel(100_000, n_stages=3, stage_rates=rates, transfer=1.0, random_state=6)
    reached = np.ones(len(Y), dtype=bool)
    for t, rate in enumerate(rates):
        stage = Y[f"stage_{t + 1}"].to_numpy()
        assert abs(stage[reached].mean() - rate) < 0.02, t
        reached = stage == 1


def test_lognormal_noise_is_standard_and_independent(transfer_funnel):
    """log(core) - core_location is sigma * e, e ~ N(0, 1) independent of the utilities."""
    _, Y, _, latent = transfer_funnel
    conv = (Y["stage_2"] == 1).to_numpy()
    noise = np.log(Y["core"].to_numpy()[conv]) - latent["core_location"].to_numpy()[conv]
    assert abs(noise.mean() / (noise.std() / np.sqrt(noise.size))) < 4
    assert abs(noise.std() - 1.0) < 0.03  # s.e. of the std at 18,000 rows: 0.005
    assert stats.pearsonr(noise, latent["utility_2"].to_numpy()[conv]).pvalue > 1e-4


def test_pareto_core_noise_scale_and_truth():
    alpha, scale = 3.0, 60_000.0  # alpha > 2: the core has a variance, so the z-test holds
    kwargs = dict(transfer=0.8, core_tail_index=alpha, random_state=1, return_truth=True,
                  return_latent=True)
    _, Y, truth, latent = make_funnel(N, core_scale=scale, **kwargs)
    conv = (Y["stage_2"] == 1).to_numpy()
    xi = Y["core"].to_numpy()[conv] / (scale * np.exp(latent["core_location"].to_numpy()[conv]))
    assert xi.min() >= 1.0 - 1e-12
    assert stats.kstest(xi, stats.pareto(alpha).cdf).pvalue > 1e-4
    assert abs(mean_residual_z(Y["core"], truth["core"])) < 4
    # core_scale is a unit: it multiplies the amounts and their truth and leaves the rest alone
    _, Y1, truth1, latent1 = make_funnel(N, **kwargs)
    np.testing.assert_array_equal(Y["core"], Y1["core"] * scale)
    np.testing.assert_array_equal(truth["core"], truth1["core"] * scale)
    assert_frame_equal(Y.iloc[:, :2], Y1.iloc[:, :2], check_exact=True)
    assert_frame_equal(latent, latent1, check_exact=True)


def test_heavy_tail_top_percent_share():
    """Pareto(1.5) noise alone puts 0.01 ** (1 - 1 / 1.5) = 21.5 % of the amount in its top 1 %;
    x and the utilities add more (30 % at this seed). The default lognormal core: 14.6 %."""
    def top_share(core):
        amounts = np.sort(core[core > 0])[::-1]
        return amounts[: amounts.size // 100].sum() / amounts.sum()

    _, Y = make_funnel(N, transfer=0.8, core_tail_index=1.5, core_scale=60_000.0, random_state=0)
    assert top_share(Y["core"].to_numpy()) > 0.25
    assert Y["core"][Y["core"] > 0].median() > 1e6  # a raw scale: milliseconds
    _, Y = make_funnel(N, random_state=0)
    assert top_share(Y["core"].to_numpy()) < 0.2


# the core depends on the stage latents --------------------------------------------------------


def test_core_depends_on_stage_latent_beyond_the_features(transfer_funnel, control_funnel, mu):
    """Among converting rows, an oracle that knows the true stage utilities U_t predicts the log
    amount far better than one that knows every feature-level quantity (mu(x) and eta_t(x)); in the
    matched control (beta = 0) the utilities add nothing."""
    cases = [(transfer_funnel, (0.1, 1.0)), (control_funnel, (-0.005, 0.005))]
    for (_, Y, _, latent), gain in cases:
        conv = (Y["stage_2"] == 1).to_numpy()
        log_core = np.log(Y["core"].to_numpy()[conv])
        lat = latent[conv]
        features = r_squared(log_core, mu[conv], lat["eta_1"], lat["eta_2"])
        oracle = r_squared(log_core, mu[conv], lat["utility_1"], lat["utility_2"])
        assert gain[0] < oracle - features < gain[1], (features, oracle)


def test_stage_index_carries_core_information_the_core_score_lacks(transfer_funnel, control_funnel,
                                                                    mu):
    """x-level transfer: given the core's own log-mean mu(x), the log amount of converting rows
    still correlates with the last stage's index eta_2(x), which the stage labels identify. In the
    control it is exactly independent of x given mu(x) (a valid null at |z| < 4)."""
    for (_, Y, _, latent), transfer in [(transfer_funnel, True), (control_funnel, False)]:
        conv = (Y["stage_2"] == 1).to_numpy()
        residual = np.log(Y["core"].to_numpy()[conv]) - mu[conv]  # mu's coefficient is 1
        r = stats.pearsonr(residual, latent["eta_2"].to_numpy()[conv]).statistic
        z = np.arctanh(r) * np.sqrt(conv.sum() - 3)
        assert z > 8 if transfer else abs(z) < 4, z


def test_selection_converters_against_the_odds_spend_more(transfer_funnel, mu):
    """E[log core | converted, x] = mu(x) + sum_t beta_t (eta_t + phi(eta_t) / Phi(eta_t)): the
    truncated residual's mean, largest where the stage was unlikely. Checked overall and within
    quintiles of eta_2."""
    _, Y, _, latent = transfer_funnel
    conv = (Y["stage_2"] == 1).to_numpy()
    log_core = np.log(Y["core"].to_numpy()[conv])
    expected = mu[conv]
    for t, b in enumerate(BETA, start=1):
        eta = latent[f"eta_{t}"].to_numpy()[conv]
        expected = expected + b * (eta + stats.norm.pdf(eta) / ndtr(eta))
    assert abs(mean_residual_z(log_core, expected)) < 4
    bins = pd.qcut(latent["eta_2"][conv].rank(method="first"), 5, labels=False).to_numpy()
    for q in range(5):
        assert abs(mean_residual_z(log_core[bins == q], expected[bins == q])) < 4, q


# bad arguments ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        (dict(transfer=-0.1), "transfer"),
        (dict(transfer=np.nan), "transfer"),
        (dict(transfer=np.inf), "transfer"),
        (dict(transfer="strong"), "transfer"),
        (dict(transfer=True), "transfer"),
        (dict(transfer=[0.5]), "transfer"),
        (dict(transfer=[0.5, -1.0]), "transfer"),
        (dict(n_stages=0, transfer=[0.5]), "transfer"),
        (dict(core_tail_index=1.0), "core_tail_index"),
        (dict(core_tail_index=0.5), "core_tail_index"),
        (dict(core_tail_index=np.inf), "core_tail_index"),
        (dict(core_tail_index="heavy"), "core_tail_index"),
        (dict(core_scale=0.0), "core_scale"),
        (dict(core_scale=-1000.0), "core_scale"),
        (dict(core_scale=np.inf), "core_scale"),
        (dict(core_scale=None), "core_scale"),
    ],
)
def test_transfer_arguments_are_validated(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        make_funnel(10, **kwargs)
