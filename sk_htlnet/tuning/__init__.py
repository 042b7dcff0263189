"""Hyper-parameter search for HTLNetRegressor with Optuna: search space, objective, pruning, storage.

Needs the ``tuning`` extra (``pip install -e ".[tuning]"``: optuna and optuna-integration).

- :func:`search_space` samples the documented default space from an Optuna trial and returns
  :class:`~sk_htlnet.HTLNetRegressor` parameters; :func:`search_distributions` is the same space
  as Optuna distributions, for :class:`optuna_integration.OptunaSearchCV`.
- :func:`make_objective` builds the objective: a validation split or cross-validation, any metric
  of :mod:`sk_htlnet.metrics` on any target, the study direction that metric needs
  (``objective.direction``), and pruning through optuna-integration's
  :class:`~optuna_integration.SkorchPruningCallback` on a history key (``"valid_loss"`` by default).
- :func:`make_storage` turns a URL or a file path into the Optuna storage that lets several worker
  processes, on one machine or many, share a study.
- :func:`params_from_trial` replays the space on a finished trial to get estimator parameters.
- :func:`trials_dataframe` is ``study.trials_dataframe()`` with a ``value`` only for completed
  trials: Optuna gives a pruned trial its last intermediate value, here a (negated) loss, while
  completed trials hold the metric; a pruned trial keeps its loss in the user attributes
  ``"pruned_<monitor>"`` and ``"pruned_epoch"``.

Examples
--------
>>> import optuna
>>> from sk_htlnet.datasets import make_funnel
>>> from sk_htlnet.tuning import make_objective, trials_dataframe
>>> X, Y = make_funnel(2000, random_state=0)
>>> objective = make_objective(X, Y, metric="gini", base_params={"max_iter": 3, "random_state": 0})
>>> study = optuna.create_study(direction=objective.direction,
...                             pruner=optuna.pruners.MedianPruner(n_startup_trials=2))
>>> study.optimize(objective, n_trials=4)  # doctest: +SKIP
>>> best = objective.make_estimator(study.best_trial).fit(X, Y)  # doctest: +SKIP
>>> trials_dataframe(study)  # doctest: +SKIP

See docs/tuning.md for distributed studies (SQLite, journal file, PostgreSQL) and the Dask backend
for scikit-learn searches.

Modules
-------
- ``space``: the default space (:func:`search_space`, :func:`search_distributions`,
  :func:`params_from_trial`, ``TOWER_UNITS``).
- ``objective``: :func:`make_objective` and :class:`FunnelObjective`.
- ``pruning``: the per-epoch pruning callback (``PRUNING_CALLBACK_NAME``).
- ``readout``: :func:`trials_dataframe`.
- ``storage``: :func:`make_storage`.

Every public name is importable from :mod:`sk_htlnet.tuning` itself.
"""

try:
    import optuna  # noqa: F401
    import optuna_integration.skorch  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "sk_htlnet.tuning needs optuna and optuna-integration: pip install -e '.[tuning]' in a checkout"
    ) from exc

from . import pruning as _pruning
from . import space as _space
from .objective import FunnelObjective, make_objective
from .readout import trials_dataframe
from .space import params_from_trial, search_distributions, search_space
from .storage import make_storage

# The constants' docstrings stand here, where the API reference reads them.
TOWER_UNITS = _space.TOWER_UNITS
"""Tower shapes of the default space. The trial stores the label (a str, so any Optuna storage
can hold it); :func:`search_space` returns the tuple."""
PRUNING_CALLBACK_NAME = _pruning.PRUNING_CALLBACK_NAME
"""Name of the pruning callback in ``HTLNetRegressor(callbacks=...)`` during a trial."""

__all__ = [
    "FunnelObjective",
    "PRUNING_CALLBACK_NAME",
    "TOWER_UNITS",
    "make_objective",
    "make_storage",
    "params_from_trial",
    "search_distributions",
    "search_space",
    "trials_dataframe",
]
