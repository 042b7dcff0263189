"""Reading a tuned study: what value, intermediate values and user attributes hold per trial state."""

import numpy as np
import pytest
from skorch.callbacks import Callback

optuna = pytest.importorskip("optuna")
pytest.importorskip("optuna_integration")

from sk_htlnet.datasets import make_funnel  # noqa: E402
from sk_htlnet.tuning import make_objective, trials_dataframe  # noqa: E402

from _sizes import SMALL_NET

TINY = dict(SMALL_NET, max_iter=4, n_threads=1, random_state=0)
COMPLETE, PRUNED = optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED

optuna.logging.set_verbosity(optuna.logging.WARNING)


class _LossRecorder(Callback):
    """The monitored loss of every epoch of every fit, straight from the history (per trial)."""

    def __init__(self):
        self.fits = []

    def on_train_begin(self, net, **kwargs):
        self.fits.append([])

    def on_epoch_end(self, net, **kwargs):  # runs before the pruning callback, so sees the last epoch
        self.fits[-1].append(float(net.history[-1, "valid_loss"]))


@pytest.mark.parametrize("metric", ["gini", "nrmse"])
def test_pruned_trials_have_no_value_in_the_readout(metric):
    X, Y = make_funnel(1500, random_state=0)
    recorder = _LossRecorder()
    objective = make_objective(
        X, Y, metric=metric, base_params={**TINY, "callbacks": [("losses", recorder)]},
        space=lambda trial: {"learning_rate": trial.suggest_float("learning_rate", 1e-6, 3e-2, log=True)},
    )
    study = optuna.create_study(direction=objective.direction,
                                sampler=optuna.samplers.RandomSampler(seed=0),
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0))
    for lr in (3e-2, 1e-2, 1e-6, 1e-6):  # two reasonable step sizes (never pruned), two that barely move
        study.enqueue_trial({"learning_rate": lr})
    study.optimize(objective, n_trials=4)
    trials = study.trials
    pruned = [t for t in trials if t.state == PRUNED]
    completed = [t for t in trials if t.state == COMPLETE]
    assert len(pruned) >= 1 and len(completed) >= 2, [t.state for t in trials]
    assert len(recorder.fits) == len(trials)  # one fit per trial (cv=None)

    frame = trials_dataframe(study)
    raw = study.trials_dataframe()  # Optuna's own table, unchanged
    assert list(frame.columns) == list(raw.columns) and list(frame["number"]) == [t.number for t in trials]
    sign = -1.0 if objective.direction == "maximize" else 1.0
    for t, losses in zip(trials, recorder.fits):
        row = frame.loc[frame["number"] == t.number].iloc[0]
        steps = sorted(t.intermediate_values)
        # the reports are the monitored loss per epoch, in the study's direction: the pruner's input
        assert [t.intermediate_values[s] for s in steps] == pytest.approx([sign * v for v in losses], rel=1e-6)
        if t.state == PRUNED:
            # no metric was computed: no value, not a (negated) loss sitting next to the metrics
            assert np.isnan(row["value"])
            # the loss it stopped at, in the loss's own units (not negated), and the epoch
            assert t.user_attrs["pruned_epoch"] == steps[-1] == len(losses) - 1
            assert t.user_attrs["pruned_valid_loss"] == pytest.approx(losses[-1], rel=1e-6)
            assert losses[-1] > 0
            assert row["user_attrs_pruned_valid_loss"] == t.user_attrs["pruned_valid_loss"]
            assert "n_iter" not in t.user_attrs
            # Optuna's table still holds the last report as value: the study itself is not touched
            assert raw.loc[raw["number"] == t.number, "value"].iloc[0] == t.intermediate_values[steps[-1]]
        else:
            assert row["value"] == t.value == raw.loc[raw["number"] == t.number, "value"].iloc[0]
            assert "pruned_epoch" not in t.user_attrs and np.isnan(row["user_attrs_pruned_valid_loss"])
            assert steps == list(range(4))

    best = study.best_trial
    assert best.state == COMPLETE
    assert best.value == (max if metric == "gini" else min)(t.value for t in completed)
    ranked = frame.sort_values("value", ascending=objective.direction == "minimize")
    assert ranked["number"].iloc[0] == best.number
    assert ranked["state"].tolist()[-len(pruned):] == ["PRUNED"] * len(pruned)  # NaN sorts last


def test_readout_columns_follow_optuna():
    study = optuna.create_study(direction="maximize")
    assert trials_dataframe(study).empty

    def objective(trial):
        x = trial.suggest_float("x", 0, 1)
        trial.report(-10 * x, 0)
        if x > 0.5:
            raise optuna.TrialPruned()
        return x

    for x in (0.2, 0.9, 0.4):
        study.enqueue_trial({"x": x})
    study.optimize(objective, n_trials=3)
    # without "state" in attrs, the table has none either; multi_index keeps Optuna's nesting
    frame = trials_dataframe(study, attrs=("number", "value", "params"))
    assert list(frame.columns) == ["number", "value", "params_x"]
    assert frame["value"].tolist()[::2] == [0.2, 0.4] and np.isnan(frame["value"].iloc[1])
    nested = trials_dataframe(study, attrs=("number", "value", "state"), multi_index=True)
    assert list(nested.columns) == list(study.trials_dataframe(attrs=("number", "value", "state"),
                                                               multi_index=True).columns)
    assert np.isnan(nested[("value", "")].iloc[1]) and nested[("value", "")].iloc[2] == 0.4
    assert study.trials_dataframe()["value"].iloc[1] == -9.0  # Optuna's: the last report
