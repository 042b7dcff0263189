"""sk_htlnet.tuning: search space, objective, pruning, OptunaSearchCV, shared studies, Dask backend."""

import json
import os
import re
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
from skorch.callbacks import Callback

optuna = pytest.importorskip("optuna")
pytest.importorskip("optuna_integration")

from sk_htlnet import HTLNetRegressor  # noqa: E402
from sk_htlnet.datasets import make_funnel  # noqa: E402
from sk_htlnet.metrics import make_funnel_scorer, nrmse, normalized_gini  # noqa: E402
from sk_htlnet.tuning import (  # noqa: E402
    PRUNING_CALLBACK_NAME,
    TOWER_UNITS,
    make_objective,
    make_storage,
    params_from_trial,
    search_distributions,
    search_space,
)

from _sizes import SMALL_NET

REPO = Path(__file__).resolve().parents[1]
# tiny models: a fit on 1,200 rows takes a fraction of a second
TINY = dict(SMALL_NET, max_iter=3, n_threads=1, random_state=0)

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="module")
def funnel():
    return make_funnel(1500, random_state=0)


def _documented_ranges():
    """Parse ``name`` : kind in [low, high] / {choices} from search_space's docstring."""
    ranges = {}
    for name, spec in re.findall(r"^\s*``(\w+)`` : (.+)$", search_space.__doc__, flags=re.M):
        interval = re.search(r"(log-uniform|uniform) in \[([^,]+), ([^\]]+)\]", spec)
        if interval:
            ranges[name] = ("log" if interval[1] == "log-uniform" else "lin",
                            float(interval[2]), float(interval[3]))
        else:
            ranges[name] = ("choices", eval(spec.strip()))  # a set literal of the docstring
    return ranges


# ---- search space ----------------------------------------------------------------------------------
def test_documented_ranges_are_the_distributions():
    documented = _documented_ranges()
    distributions = search_distributions(exclude=["core_loss"]) | {"core_loss": search_distributions()["core_loss"]}
    assert set(documented) == set(distributions)
    for name, dist in distributions.items():
        doc = documented[name]
        if isinstance(dist, optuna.distributions.FloatDistribution):
            assert doc == ("log" if dist.log else "lin", dist.low, dist.high), name
        else:
            assert doc == ("choices", set(dist.choices)), name


def test_sampled_params_are_accepted_and_in_range(funnel):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    documented = _documented_ranges()
    for _ in range(30):
        params = search_space(study.ask())
        conditional = ({"target_transform"} if params["core_loss"] != "mse" else set()) | (
            {"tau"} if params["label_sampling"] != "relaxed" else set())
        assert set(params) == set(documented) - conditional
        for name, value in params.items():
            doc = documented[name]
            if doc[0] == "choices":
                assert value in doc[1], (name, value)
            else:
                assert doc[1] <= value <= doc[2], (name, value)
        assert isinstance(params["tower_units"], tuple)
        HTLNetRegressor(**params).check_params()  # scikit-learn's parameter constraints

    # the corners of the space fit and predict (fixed trials: every low end, every high end)
    X, Y = funnel
    for end in (0, -1):
        values = {}
        for name, dist in {**search_distributions(exclude=["core_loss"]), **search_distributions()}.items():
            if isinstance(dist, optuna.distributions.FloatDistribution):
                values[name] = (dist.low, dist.high)[end]
            else:
                values[name] = list(TOWER_UNITS)[end] if name == "tower_units" else dist.choices[end]
        params = search_space(optuna.trial.FixedTrial(values))
        est = HTLNetRegressor(**{**params, "max_iter": 1, "n_threads": 1, "random_state": 0})
        assert np.isfinite(est.fit(X[:400], Y[:400]).predict(X[:50])).all()


def test_exclude_and_prefix():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    trial = study.ask()
    params = search_space(trial, exclude=("tower_units", "batch_size"))
    assert "tower_units" not in params and "batch_size" not in params
    assert "tower_units" not in trial.params
    dists = search_distributions("htlnet__", exclude=["tau"])
    assert "htlnet__learning_rate" in dists and "htlnet__tau" not in dists
    assert (128, 64, 32) in dists["htlnet__tower_units"].choices
    with pytest.raises(ValueError, match="not in the search space"):
        search_space(trial, exclude=["lr"])


# ---- objective -------------------------------------------------------------------------------------
@pytest.mark.parametrize("metric, direction", [("gini", "maximize"), ("nrmse", "minimize"),
                                               ("neg_nmae", "minimize")])
def test_objective_direction_and_value(funnel, metric, direction):
    X, Y = funnel
    objective = make_objective(X, Y, metric=metric, base_params=TINY, pruning=False)
    assert objective.direction == direction
    study = optuna.create_study(direction=direction, sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(objective, n_trials=1)
    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.COMPLETE and np.isfinite(trial.value)
    # the value is the metric itself (not negated) on the held-out rows of the one split
    (train, test), = objective.splits
    est = objective.make_estimator(trial).fit(X.iloc[train], Y.iloc[train])
    y, p = Y["core"].to_numpy()[test], est.predict(X.iloc[test])[:, -1]
    expected = normalized_gini(y, p) if metric == "gini" else (nrmse(y, p) if metric == "nrmse" else None)
    if expected is not None:
        assert trial.value == pytest.approx(expected, rel=1e-12)
    if direction == "minimize":
        assert trial.value > 0  # a loss, not a negated score
    assert trial.user_attrs["n_iter"] == [3]
    assert len(test) == 300 and not set(train) & set(test)


def test_objective_cv_stage_metric_and_checks(funnel):
    X, Y = funnel
    objective = make_objective(X, Y, metric="auc", target="stage_1", cv=2, base_params=TINY, pruning=False)
    assert objective.direction == "maximize" and objective.target == 0
    value = objective(optuna.trial.FixedTrial(
        {"learning_rate": 3e-3, "weight_decay": 1e-6, "relax_factor": 0.1, "clip_ratio": 10.0,
         "tau": 1.0, "label_sampling": "hard", "numeric_encoding": "linear", "core_loss": "mse",
         "target_transform": "auto"}))
    assert 0.5 < value <= 1
    folds = [test for _, test in objective.splits]
    assert len(folds) == 2 and sorted(np.concatenate(folds).tolist()) == list(range(len(X)))
    # stratified on funnel depth: both folds hold the same share of rows that passed stage 2
    assert abs(Y["stage_2"].iloc[folds[0]].mean() - Y["stage_2"].iloc[folds[1]].mean()) < 0.01

    with pytest.raises(ValueError, match="scores a 0/1 stage"):
        make_objective(X, Y, metric="auc", target=-1)
    with pytest.raises(ValueError, match="scores the core target"):
        make_objective(X, Y, metric="gini", target=0)
    with pytest.raises(ValueError, match="Unknown metric"):
        make_objective(X, Y, metric="accuracy")
    with pytest.raises(ValueError, match="Cannot resolve target"):
        make_objective(X, Y, target="spend")
    with pytest.raises(ValueError, match="early_stopping=False"):
        make_objective(X, Y, base_params={"early_stopping": False})
    objective = make_objective(X, Y, metric="gini", base_params=TINY, pruning=False)
    wrong = optuna.create_study(direction="minimize")
    with pytest.raises(ValueError, match="must be maximized"):
        objective(wrong.ask())


# ---- pruning ---------------------------------------------------------------------------------------
def test_default_space_leaves_core_scale_out_when_pruning_on_the_core(funnel):
    X, Y = funnel
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))

    def sampled(**kwargs):
        objective = make_objective(X, Y, base_params={"batch_size": 256}, **kwargs)
        return set(objective.space(study.ask())) | {"tau"}  # tau: in relaxed trials only (tested apart)

    everything = set(search_distributions()) | {"target_transform"}
    # valid_loss and the core's own loss change scale with the transform and the core loss: not sampled
    assert sampled() == everything - {"batch_size", "target_transform", "core_loss"}
    assert sampled(monitor="valid_loss_core") == everything - {"batch_size", "target_transform", "core_loss"}
    # a stage's loss does not depend on them, and without pruning nothing is compared per epoch;
    # target_transform is sampled only with core_loss="mse" (the likelihoods take none)
    for kwargs in [dict(monitor="valid_loss_stage_2"), dict(pruning=False)]:
        seen = [sampled(**kwargs) for _ in range(12)]
        assert all(s >= everything - {"batch_size", "target_transform"} for s in seen)
        assert any("target_transform" in s for s in seen) and not all("target_transform" in s for s in seen)


def test_space_never_pairs_a_likelihood_loss_with_a_transform():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(30):
        params = search_space(study.ask())
        assert params["core_loss"] == "mse" or "target_transform" not in params
        HTLNetRegressor(**params).check_params()
    assert "target_transform" not in search_distributions()
    assert "target_transform" in search_distributions(exclude=["core_loss"])


def test_space_samples_tau_only_where_it_acts():
    """With hard samples and stop_gradient=True tau is inert (tests/test_label_embedding.py), so a
    hard trial does not sample it; a relaxed one does, and so does any trial with label_sampling excluded."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=2))
    seen = set()
    for _ in range(30):
        params = search_space(study.ask())
        seen.add(params["label_sampling"])
        assert ("tau" in params) == (params["label_sampling"] == "relaxed")
    assert seen == {"hard", "relaxed"}
    assert "tau" in search_space(study.ask(), exclude=["label_sampling"])


def test_pruning_prunes_a_clearly_worse_trial(funnel):
    X, Y = funnel
    objective = make_objective(
        X, Y, metric="gini", base_params={**TINY, "max_iter": 4},
        space=lambda trial: {"learning_rate": trial.suggest_float("learning_rate", 1e-6, 3e-2, log=True)},
    )
    assert objective.base_params["early_stopping"] is True  # pruning on valid_loss needs the split
    study = optuna.create_study(direction=objective.direction,
                                sampler=optuna.samplers.RandomSampler(seed=0),
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0))
    for lr in (3e-2, 1e-6, 1e-6):  # a reasonable step size first, then two that barely move
        study.enqueue_trial({"learning_rate": lr})
    study.optimize(objective, n_trials=3)
    states = [t.state for t in study.trials]
    assert states[0] == optuna.trial.TrialState.COMPLETE
    assert states[1:] == [optuna.trial.TrialState.PRUNED] * 2
    first, pruned = study.trials[0], study.trials[1]
    assert sorted(first.intermediate_values) == [0, 1, 2, 3]  # one report per epoch
    steps = sorted(pruned.intermediate_values)
    assert steps == list(range(len(steps))) and len(steps) < 4  # stopped before its last epoch
    # a maximised metric: the monitored valid_loss is reported negated, so the pruned trial's
    # last report is below the completed trial's at the same epoch
    assert all(v < 0 for v in first.intermediate_values.values())
    assert pruned.intermediate_values[steps[-1]] < first.intermediate_values[steps[-1]]


def test_pruning_callback_in_estimator(funnel):
    """The trial's fit gets the pruning callback after the callbacks of base_params; it reports the
    monitored key of the history, raw for a minimised metric; the refit estimator has none."""
    X, Y = funnel
    seen = {}

    class Recorder(Callback):
        def on_train_begin(self, net, **kwargs):
            seen["callbacks"] = [name for name, _ in net.callbacks_]

        def on_train_end(self, net, **kwargs):
            seen["history"] = [{k: v for k, v in row.items() if k.startswith("valid_loss")}
                               for row in net.history]

    recorder = Recorder()
    objective = make_objective(X, Y, metric="nrmse", base_params={**TINY, "max_iter": 2,
                                                                   "callbacks": [("recorder", recorder)]},
                               monitor="valid_loss_core")
    study = optuna.create_study(direction="minimize")
    study.optimize(objective, n_trials=1)
    names = seen["callbacks"]
    assert names.count(PRUNING_CALLBACK_NAME) == 1
    assert names.index("recorder") < names.index(PRUNING_CALLBACK_NAME)
    trial = study.trials[0]
    # minimised metric: the raw loss is reported, as SkorchPruningCallback does, once per epoch
    reported = [trial.intermediate_values[step] for step in sorted(trial.intermediate_values)]
    assert len(reported) == 2 and all(v > 0 for v in reported)
    assert reported == [row["valid_loss_core"] for row in seen["history"]]
    assert [name for name, _ in objective.make_estimator(trial).callbacks] == ["recorder"]
    assert params_from_trial(trial, objective.space) == {
        k: tuple(v) if k == "tower_units" else v for k, v in trial.user_attrs["params"].items()}


# ---- OptunaSearchCV --------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore::FutureWarning")  # optuna.terminator, used inside OptunaSearchCV
def test_optuna_search_cv(funnel):
    from optuna_integration import OptunaSearchCV

    X, Y = funnel
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        search = OptunaSearchCV(
            HTLNetRegressor(max_iter=2, n_threads=1, random_state=0, batch_size=256),
            search_distributions(exclude=["batch_size"]),
            cv=2, n_trials=3, scoring=make_funnel_scorer("gini", "core"), random_state=0,
        )
        search.fit(X, Y)
    assert len(search.trials_) == 3
    assert set(search.best_params_) == set(search_distributions(exclude=["batch_size"]))
    assert isinstance(search.best_estimator_.tower_units, tuple)
    assert search.best_estimator_.predict(X[:5]).shape == (5, 3)
    assert -1 <= search.best_score_ <= 1


# ---- distributed studies ---------------------------------------------------------------------------
WORKER = textwrap.dedent("""
    import json, sys
    import optuna
    from sk_htlnet.datasets import make_funnel
    from sk_htlnet.tuning import make_objective, make_storage

    url, name, n_trials, worker, out = sys.argv[1:]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    X, Y = make_funnel(1500, random_state=0)
    objective = make_objective(X, Y, base_params=json.loads({tiny!r}), pruning=False)
    study = optuna.load_study(study_name=name, storage=make_storage(url),
                              sampler=optuna.samplers.RandomSampler(seed=int(worker)))
    numbers = []

    def tagged(trial):
        trial.set_user_attr("worker", int(worker))
        numbers.append(trial.number)
        return objective(trial)

    study.optimize(tagged, n_trials=int(n_trials))
    with open(out, "w") as f:
        json.dump(numbers, f)
""").format(tiny=json.dumps({**TINY, "max_iter": 2}))


@pytest.mark.parametrize("backend", ["sqlite", "journal"])
def test_two_processes_share_one_study(tmp_path, backend):
    url = f"sqlite:///{tmp_path / 'study.db'}" if backend == "sqlite" else str(tmp_path / "study.log")
    optuna.create_study(study_name="shared", storage=make_storage(url), direction="maximize")
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    n_trials = [4, 3]
    outs = [tmp_path / f"worker{i}.json" for i in range(2)]
    procs = [subprocess.Popen([sys.executable, str(script), url, "shared", str(n), str(i), str(out)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i, (n, out) in enumerate(zip(n_trials, outs))]
    for proc in procs:
        output, _ = proc.communicate(timeout=240)
        assert proc.returncode == 0, output

    trials = optuna.load_study(study_name="shared", storage=make_storage(url)).trials
    numbers = [t.number for t in trials]
    assert len(trials) == sum(n_trials)  # every trial recorded, once
    assert sorted(numbers) == list(range(sum(n_trials)))  # no duplicate trial numbers
    assert all(t.state == optuna.trial.TrialState.COMPLETE and np.isfinite(t.value) for t in trials)
    by_worker = [json.loads(out.read_text()) for out in outs]
    assert [len(b) for b in by_worker] == n_trials and not set(by_worker[0]) & set(by_worker[1])
    for i, mine in enumerate(by_worker):
        assert sorted(mine) == sorted(t.number for t in trials if t.user_attrs["worker"] == i)


def test_make_storage():
    assert make_storage(None) is None
    with pytest.raises(ValueError, match="database URL"):
        make_storage("study.log", heartbeat_interval=10)


# ---- Dask ------------------------------------------------------------------------------------------
def test_grid_search_on_dask_cluster(funnel):
    pytest.importorskip("dask")
    distributed = pytest.importorskip("distributed")
    import joblib
    from sklearn.model_selection import GridSearchCV, KFold

    X, Y = funnel
    grid = {"learning_rate": [1e-3, 1e-2], "relax_factor": [0.1, 0.5]}

    def search():
        return GridSearchCV(HTLNetRegressor(**{**TINY, "max_iter": 2}), grid,
                            scoring=make_funnel_scorer("gini", -1),
                            cv=KFold(2, shuffle=True, random_state=0), n_jobs=-1, error_score="raise")

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        on_dask = search()
        with joblib.parallel_config(backend="dask"), distributed.get_task_stream(client) as tasks:
            on_dask.fit(X, Y)
    assert len(tasks.data) >= 8  # the 4 candidates x 2 folds ran on the cluster
    local = search().set_params(n_jobs=1).fit(X, Y)
    # same seeds, same folds: the cluster reproduces the local search exactly
    np.testing.assert_array_equal(on_dask.cv_results_["mean_test_score"],
                                  local.cv_results_["mean_test_score"])
    assert on_dask.best_params_ == local.best_params_
    assert on_dask.best_estimator_.predict(X[:5]).shape == (5, 3)


def test_signed_core_target_keeps_the_likelihood_losses_out_of_the_space(funnel):
    X, Y = funnel
    signed = Y.assign(core=Y["core"] - 10)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    objective = make_objective(X, signed, metric="nrmse", base_params=TINY, pruning=False)
    for _ in range(10):
        params = objective.space(study.ask())
        assert "core_loss" not in params
    assert "core_loss" in make_objective(X, Y, metric="nrmse", base_params=TINY, pruning=False).space(study.ask())
