"""
Tuning with Optuna
==================

:mod:`sk_htlnet.tuning` builds an Optuna objective for :class:`~sk_htlnet.HTLNetRegressor`: it
samples the documented default search space (:func:`~sk_htlnet.tuning.search_space`), fits on a
training split, scores one metric of one target on the held-out rows, and lets Optuna's pruner
stop a trial after any epoch, from the validation loss reported by optuna-integration's skorch
pruning callback.

Needs the ``tuning`` extra: ``pip install -e ".[tuning]"``. The script
``examples/tune_with_optuna.py`` in the repository runs a longer study on all rows.
"""

# %%
# Data and objective
# ------------------
# The test tenth is held out first and never seen by the study. The objective fits on 80 % of
# the remaining rows and returns the normalised Gini of ``spend`` on the other 20 %;
# ``objective.direction`` is ``"maximize"`` because a Gini is greater-is-better. ``base_params``
# fixes the budget (epochs, patience) and the seed; every other parameter comes from the space.
import os
import warnings

import matplotlib.pyplot as plt
import optuna
from optuna.visualization import matplotlib as optuna_plots
from sklearn.model_selection import train_test_split

from sk_htlnet.datasets import load_hillstrom
from sk_htlnet.metrics import funnel_report
from sk_htlnet.tuning import make_objective, params_from_trial, trials_dataframe

# SK_HTLNET_DOCS_QUICK=1 (the docs' CI build): a small subsample, two epochs
QUICK = os.environ.get("SK_HTLNET_DOCS_QUICK") == "1"
N_ROWS, MAX_ITER, N_TRIALS = (4_000, 2, 5) if QUICK else (None, 4, 16)
optuna.logging.set_verbosity(optuna.logging.WARNING)
# optuna.visualization.matplotlib is marked experimental
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

X, Y = load_hillstrom()
if N_ROWS is not None:
    X = X.sample(n=N_ROWS, random_state=0)
    Y = Y.loc[X.index]
X_tune, X_test, Y_tune, Y_test = train_test_split(
    X, Y, test_size=0.1, random_state=0
)

objective = make_objective(
    X_tune, Y_tune, metric="gini", target="spend", test_size=0.2,
    base_params={"max_iter": MAX_ITER, "n_iter_no_change": 2, "batch_size": 2048,
                 "random_state": 0},
    pruning=True, monitor="valid_loss", random_state=0,
)
print("direction:", objective.direction)

# %%
# The study
# ---------
# A TPE sampler and a median pruner: after each epoch a trial whose validation loss is worse
# than the median of earlier trials at the same epoch is stopped (state ``PRUNED``).
study = optuna.create_study(
    direction=objective.direction,
    sampler=optuna.samplers.TPESampler(n_startup_trials=3, seed=0),
    pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0),
)
study.optimize(objective, n_trials=N_TRIALS)
# sk_htlnet.tuning.trials_dataframe is Optuna's table with a value only for completed trials
# (Optuna gives a pruned trial its last report, a negated loss, as its value); a pruned trial's
# loss is in the user attribute pruned_valid_loss.
trials_dataframe(study, attrs=("number", "value", "state", "params", "user_attrs"))

# %%
# Optuna's own plots work on the study as usual:
optuna_plots.plot_optimization_history(study, target_name="spend Gini (validation)")
plt.show()

# %%
completed = study.get_trials(states=[optuna.trial.TrialState.COMPLETE])
if len(completed) >= 2:  # importances need at least two finished trials
    optuna_plots.plot_param_importances(
        study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0),
        target_name="spend Gini",
    )
    plt.show()

# %%
# Refit the best parameters
# -------------------------
# :func:`~sk_htlnet.tuning.params_from_trial` turns the best trial back into estimator
# parameters (``tower_units`` as a tuple); ``objective.make_estimator`` adds ``base_params`` and
# returns an unfitted estimator to refit on all the tuning rows.
print(params_from_trial(study.best_trial, objective.space))
model = objective.make_estimator(study.best_trial).fit(X_tune, Y_tune)
funnel_report(Y_test, model.predict(X_test))
