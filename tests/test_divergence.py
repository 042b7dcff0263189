"""Divergence (issue 14): finite blow-ups are caught, not only NaN; the best weights are kept; healthy
fits never trip the check.  The rule and its measured thresholds: sk_htlnet/divergence.py."""

import pickle

import numpy as np
import pytest
import torch
from skorch.callbacks import Callback

from sk_htlnet import HTLNetRegressor, TrainingDivergedError
from sk_htlnet.datasets import load_hillstrom, make_funnel
from sk_htlnet.divergence import MAX_LOSS_RATIO, find_monitor

from _sizes import SMALL_NET

FAST = dict(SMALL_NET, random_state=0, n_threads=1)


@pytest.fixture(scope="module")
def hillstrom():
    X, Y = load_hillstrom()
    rows = np.random.default_rng(0).choice(len(X), 4000, replace=False)
    return X.iloc[rows].reset_index(drop=True), Y.iloc[rows].reset_index(drop=True)


@pytest.fixture(scope="module")
def funnel():
    return make_funnel(1500, n_stages=2, n_categorical=2, n_numeric=3, stage_rates=0.5, random_state=0)


class _RatioSpy(Callback):
    """Record every epoch's ratios (L - F) / (L0 - F) per task, as the monitor checked them (the
    monitor runs before the user's callbacks; its reference is taken on each epoch's own batches)."""

    def __init__(self):
        self.ratios = []

    def on_epoch_end(self, net, **kwargs):
        self.ratios.append(np.array(find_monitor(net).ratios_, dtype=float))


class _Scale(Callback):
    """Multiply the core head's weights by ``factor`` when epoch ``at`` starts: a finite blow-up."""

    def __init__(self, at, factor=1e4):
        self.at = at
        self.factor = factor

    def on_epoch_begin(self, net, **kwargs):
        if len(net.history) == self.at:
            with torch.no_grad():
                net.module_.heads[-1].weight.mul_(self.factor)


class _Poison(Callback):
    """Fill the core head's weights with NaN at the first training batch of epoch ``at``."""

    def __init__(self, at):
        self.at = at

    def on_batch_begin(self, net, batch=None, training=False, **kwargs):
        if training and len(net.history) == self.at:
            with torch.no_grad():
                net.module_.heads[-1].weight.fill_(float("nan"))


def _same_weights(net, state):
    return all(torch.equal(v.cpu(), state[k].cpu()) for k, v in net.module_.state_dict().items())


# ---- the finding: finite blow-ups at a too large learning rate ----------------------------------
@pytest.mark.parametrize("learning_rate, core_loss", [
    (0.3, "ziln"), (0.3, "mse"), (0.3, "tweedie"), (1.0, "ziln"), (1.0, "mse"), (1.0, "tweedie"),
])
def test_finite_blow_up_raises_naming_the_task(hillstrom, learning_rate, core_loss):
    X, Y = hillstrom
    est = HTLNetRegressor(**FAST, max_iter=3, learning_rate=learning_rate, core_loss=core_loss)
    with pytest.raises(TrainingDivergedError, match="diverged at epoch 1") as info:
        est.fit(X, Y)
    err = info.value
    assert err.reason == "blow-up" and np.isfinite(err.loss)  # finite: today's NaN check misses it
    assert err.task in list(Y.columns) and repr(err.task) in str(err)
    assert err.ratio > MAX_LOSS_RATIO and err.epoch == 1
    assert err.learning_rate == learning_rate and err.suggested_learning_rate == pytest.approx(learning_rate / 10)
    assert f"now {learning_rate:g}; try {learning_rate / 10:g}" in str(err)
    assert err.best_epoch is None and "left unfitted" in str(err)
    assert not hasattr(est, "net_")  # a first epoch that diverged leaves nothing to predict with


# ---- the best weights -------------------------------------------------------------------------
def test_blow_up_mid_fit_keeps_the_best_epoch(funnel):
    X, Y = funnel
    seen = []

    class Spy(Callback):
        def on_epoch_end(self, net, **kwargs):
            weights = find_monitor(net).best_weights_
            seen.append(None if weights is None else next(iter(weights.values())).device.type)

    params = dict(FAST, core_loss="mse", target_transform="log1p", early_stopping=False)
    est = HTLNetRegressor(**params, max_iter=6, callbacks=[_Scale(at=3), Spy()])
    with pytest.raises(TrainingDivergedError, match="keeps the weights of epoch 2") as info:
        est.fit(X, Y)
    err = info.value
    assert (err.reason, err.task, err.epoch, err.best_epoch) == ("blow-up", "core", 3, 2)
    assert seen == [None, "cpu"]  # no copy after epoch 1's start; epoch 1's kept on the CPU for epoch 2
    # left fitted on epoch 2's weights: exactly the model a two-epoch fit gives
    assert est.n_iter_ == 3 and len(est.history_) == 3
    assert find_monitor(est.net_).best_weights_ is None  # the copy is freed
    assert not est.net_.optimizer_.state and not est.net_.embedding_optimizer_.state  # no moments of the diverged steps
    two = HTLNetRegressor(**params, max_iter=2).fit(X, Y)
    np.testing.assert_array_equal(est.predict(X), two.predict(X))
    assert find_monitor(two.net_).best_weights_ is None  # a fit that ends well holds no copy either


def test_early_stopping_copy_is_the_only_one(funnel):
    X, Y = funnel
    copies = []

    class Spy(Callback):
        def on_epoch_end(self, net, **kwargs):
            copies.append(find_monitor(net).best_weights_)

    est = HTLNetRegressor(**FAST, max_iter=8, early_stopping=True, n_iter_no_change=8,
                          callbacks=[_Scale(at=4, factor=1e5), Spy()])
    with pytest.raises(TrainingDivergedError) as info:
        est.fit(X, Y)
    assert copies == [None] * 3  # early stopping's copy serves: the monitor made none
    es = dict(est.net_.callbacks_)["early_stopping"]
    valid = est.history_[:3, "valid_loss"]
    assert info.value.best_epoch == es.best_epoch_ == int(np.argmin(valid)) + 1
    assert _same_weights(est.net_, es.best_model_weights_)


def test_continued_fit_falls_back_on_its_starting_weights(funnel):
    X, Y = funnel
    est = HTLNetRegressor(**FAST, callbacks=[_Scale(at=3)])
    est.partial_fit(X, Y).partial_fit(X, Y)
    before = est.predict(X)
    state = {k: v.clone() for k, v in est.net_.module_.state_dict().items()}
    with pytest.raises(TrainingDivergedError, match="weights it had before this call") as info:
        est.partial_fit(X, Y)
    assert (info.value.epoch, info.value.best_epoch) == (3, 2)
    assert _same_weights(est.net_, state)
    np.testing.assert_array_equal(est.predict(X), before)


def test_nan_still_raises_and_keeps_the_best_epoch(funnel):
    X, Y = funnel
    est = HTLNetRegressor(**FAST, max_iter=3, callbacks=[_Poison(at=1)])
    with pytest.raises(TrainingDivergedError, match="diverged at epoch 1.*NaN or infinite") as info:
        est.fit(X, Y)
    assert info.value.reason == "nan" and info.value.best_epoch is None and not hasattr(est, "net_")

    est = HTLNetRegressor(**FAST, max_iter=3, callbacks=[_Poison(at=2)])
    with pytest.raises(TrainingDivergedError, match="diverged at epoch 2.*core") as info:
        est.fit(X, Y)
    assert (info.value.reason, info.value.task, info.value.best_epoch) == ("nan", "core", 1)
    np.testing.assert_array_equal(est.predict(X), HTLNetRegressor(**FAST, max_iter=1).fit(X, Y).predict(X))


def test_error_pickles_with_its_attributes(funnel):
    X, Y = funnel
    est = HTLNetRegressor(**FAST, max_iter=3, callbacks=[_Scale(at=2)])
    with pytest.raises(TrainingDivergedError) as info:
        est.fit(X, Y)
    again = pickle.loads(pickle.dumps(info.value))  # e.g. from a worker process of a search
    assert str(again) == str(info.value)
    assert (again.task, again.epoch, again.best_epoch, again.ratio) == ("core", 2, 1, info.value.ratio)
    assert find_monitor(pickle.loads(pickle.dumps(est)).net_).best_weights_ is None


# ---- the reference, and no false alarm ----------------------------------------------------------
def test_reference_is_the_base_rate_loss_in_the_history_units():
    X, Y = make_funnel(3000, n_stages=1, n_categorical=2, n_numeric=2, signal=1.5, stage_rates=0.3,
                       random_state=3)
    Y = Y.assign(core=Y["core"] * 1e5)  # a squared error of order 1e15 in the target's units
    for transform, expected_core in (("none", Y["core"].var(ddof=0)), ("standardize", 1.0)):
        est = HTLNetRegressor(**FAST, max_iter=1, core_loss="mse", target_transform=transform).fit(X, Y)
        monitor = find_monitor(est.net_)
        p = Y["stage_1"].mean()
        assert monitor.reference_[0] == pytest.approx(-(p * np.log(p) + (1 - p) * np.log(1 - p)), rel=1e-4)
        assert monitor.reference_[1] == pytest.approx(expected_core, rel=1e-3)
        assert list(monitor.floor_) == [0.0, 0.0]
    est = HTLNetRegressor(**FAST, max_iter=1, core_loss="ziln").fit(X, Y)
    z = Y["core"].to_numpy() / Y["core"].mean()
    log_pos = np.log(z[z > 0])
    floor = (log_pos + np.log(1e-3) + 0.5 * np.log(2 * np.pi)).sum() / len(z)
    monitor = find_monitor(est.net_)
    assert monitor.floor_[1] == pytest.approx(floor, rel=1e-4) and monitor.floor_[1] < 0
    assert monitor.reference_[1] > monitor.floor_[1]


WEIGHTS = {
    None: lambda n: None,
    "uniform": lambda n: np.random.default_rng(1).uniform(0.5, 2.0, n),
    "pareto": lambda n: np.random.default_rng(1).pareto(1.5, n) + 0.01,
}


@pytest.mark.parametrize("data, params, weights", [
    ("hillstrom", dict(), None),
    ("hillstrom", dict(core_loss="mse", target_transform="log1p"), "uniform"),
    ("hillstrom", dict(core_loss="mse", target_transform="standardize"), "pareto"),
    ("hillstrom", dict(core_loss="mse", target_transform="none"), "pareto"),
    ("hillstrom", dict(core_loss="tweedie", architecture="aitm", learning_rate=1e-2), "pareto"),
    ("hillstrom", dict(architecture="single_task", numeric_encoding="quantile"), None),
    ("hillstrom", dict(architecture="mmoe", numeric_encoding="periodic"), "uniform"),
    ("hillstrom", dict(architecture="ple", core_loss="tweedie"), None),
    ("hillstrom", dict(architecture="esmm", numeric_encoding="linear"), None),
    ("hillstrom", dict(architecture="shared_bottom", gradient_adjustment="uncertainty"), "uniform"),
    ("hillstrom", dict(gradient_adjustment="pcgrad", stage_pos_weight=20.0, dropout=0.3), None),
    ("funnel", dict(core_loss="mse", target_transform="standardize", learning_rate=3e-3), "pareto"),
    ("funnel", dict(architecture="ple", core_loss="ziln", learning_rate=1e-2), None),
    ("millions", dict(core_loss="mse", target_transform="none", learning_rate=3e-3), None),
    ("millions", dict(core_loss="ziln", early_stopping=True), "uniform"),
])
def test_healthy_fits_do_not_trip_it(hillstrom, funnel, data, params, weights):
    if data == "millions":
        X, Y = make_funnel(2000, n_stages=1, n_categorical=2, n_numeric=2, signal=1.5, stage_rates=0.5,
                           random_state=3)
        Y = Y.assign(core=Y["core"] * 1e5)
    else:
        X, Y = hillstrom if data == "hillstrom" else funnel
    spy = _RatioSpy()
    HTLNetRegressor(**{**FAST, "max_iter": 4, **params}, callbacks=[spy]).fit(X, Y, sample_weight=WEIGHTS[weights](len(X)))
    # measured healthy maximum 2.0 over 94 fits (sk_htlnet/divergence.py): keep a margin to the limit
    assert np.nanmax(spy.ratios) < MAX_LOSS_RATIO / 3


# ---- heavy sample weights (B5): the reference is taken batch by batch, as the epoch loss is -------
@pytest.mark.parametrize("weights, params", [
    ("one_row_1e6", dict(max_iter=5, learning_rate=1e-6)),  # was a ratio of 239 at a learning rate that changes nothing
    ("pareto_0.6", dict(max_iter=10)),  # was 3.3 here (41 reported), now 1.01
    ("pareto_0.5", dict(max_iter=10, core_loss="mse")),  # was 7.0 here (11.7 reported), now 1.01
])
def test_heavy_sample_weights_do_not_trip_it(weights, params):
    X, Y = make_funnel(3000, random_state=0)
    n = len(X)
    sw = {"one_row_1e6": np.r_[1e6, np.ones(n - 1)],
          "pareto_0.6": np.random.default_rng(1).pareto(0.6, n) + 1e-3,
          "pareto_0.5": np.random.default_rng(1).pareto(0.5, n) + 1e-3}[weights]
    spy = _RatioSpy()
    HTLNetRegressor(**FAST, **params, callbacks=[spy]).fit(X, Y, sample_weight=sw)
    ratios = np.array(spy.ratios)
    assert np.nanmax(ratios) < 1.5  # the same batches' base-rate loss: the ratio starts at 1 for any weights
    if params.get("learning_rate") == 1e-6:  # the network barely moves: the loss is the base rate's
        np.testing.assert_allclose(ratios, 1.0, atol=0.05)


def test_heavy_weights_still_catch_a_blow_up():
    X, Y = make_funnel(3000, random_state=0)
    sw = np.random.default_rng(0).pareto(0.6, len(X)) + 1e-3
    with pytest.raises(TrainingDivergedError) as info:
        HTLNetRegressor(**FAST, max_iter=3, learning_rate=1.0).fit(X, Y, sample_weight=sw)
    assert info.value.reason == "blow-up" and info.value.ratio > MAX_LOSS_RATIO


# ---- a dead network (B4): every head constant, the loss at the base rate's ----------------------
@pytest.fixture(scope="module")
def funnel4000():
    return make_funnel(4000, random_state=0)


@pytest.mark.parametrize("architecture, core_loss", [("single_task", "mse"), ("ple", "ziln"), ("esmm", "ziln")])
def test_dead_network_raises_and_is_left_unfitted(funnel4000, architecture, core_loss):
    X, Y = funnel4000
    est = HTLNetRegressor(**FAST, architecture=architecture, core_loss=core_loss, learning_rate=0.3, max_iter=10)
    with pytest.raises(TrainingDivergedError, match="units died") as info:
        est.fit(X, Y)  # before: returned, every prediction constant (std 1e-17), the loss never rising
    err = info.value
    assert err.reason == "dead" and err.tasks == list(Y.columns) and err.epoch == 10
    assert err.best_epoch is None and "left unfitted" in str(err) and "try 0.03" in str(err)
    assert err.suggested_learning_rate == pytest.approx(0.03)
    assert not hasattr(est, "net_")


def test_dead_rule_needs_every_head_constant_and_differing_inputs():
    from types import SimpleNamespace

    from sk_htlnet.divergence import dead_network_error

    net = SimpleNamespace(task_names=["stage_1", "core"], history=[{}] * 3, lr=0.3)
    varying = np.array([[0.5], [0.7], [0.2]])
    constant = np.full((3, 1), -1.25)
    features = [np.array([[0], [1], [2]])]
    assert dead_network_error(net, np.hstack([constant, constant * 2]), 1, features).reason == "dead"
    assert dead_network_error(net, np.hstack([constant, varying]), 1, features) is None  # a plateau: no alarm
    assert dead_network_error(net, np.hstack([varying, constant]), 1, features) is None
    assert dead_network_error(net, np.hstack([constant, constant]), 1, [np.zeros((3, 1))]) is None  # equal inputs
    kept = dead_network_error(net, np.hstack([constant, constant]), 1, features, fresh=False)
    assert kept.best_epoch == 3 and "keeps the dead network" in str(kept)


def test_a_network_constant_from_initialisation_warns_instead_of_diverging():
    # found by tests/test_properties.py in CI: a 4-unit tower whose ReLUs are all inactive on the 4
    # training rows at initialisation predicts one value before and after training; no divergence
    import pandas as pd
    from sklearn.exceptions import ConvergenceWarning

    X = pd.DataFrame({"a": list("adcd"), "b": list("bdca"), "c": [-5, 3, -5, 0]})
    y = pd.Series([1.23, 1.68, 0.94, 1.98], name="core")
    tiny = dict(embedding_dim=2, tower_units=(4,), batch_size=16, random_state=0, n_threads=1)
    with pytest.warns(ConvergenceWarning, match=r"already at initialisation.*wider tower_units"):
        est = HTLNetRegressor(**tiny, max_iter=3).fit(X, y)  # before: TrainingDivergedError "units died"
    assert np.ptp(est.predict(X)) == 0  # the warning's claim holds
    alive = HTLNetRegressor(**{**tiny, "random_state": 1}, max_iter=3).fit(X, y)  # the same data, other init
    assert np.ptp(alive.predict(X)) > 0


@pytest.mark.parametrize("architecture", ["htlnet", "single_task", "shared_bottom", "mmoe", "ple", "esmm", "aitm"])
@pytest.mark.parametrize("core_loss", ["ziln", "mse", "tweedie"])
def test_healthy_tiny_fits_are_not_dead(architecture, core_loss):
    # 300 rows, default learning rate and epochs; stage_2 has no signal (its optimum is near-constant)
    X, Y = make_funnel(300, n_stages=2, stage_rates=0.5, signal=0.0, random_state=1)
    est = HTLNetRegressor(**FAST, architecture=architecture, core_loss=core_loss).fit(X, Y)
    assert np.ptp(est.predict(X), axis=0).min() > 0
