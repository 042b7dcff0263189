"""The Optuna objective: fit HTLNetRegressor on fixed folds and score one metric of one target.

:func:`make_objective` builds a :class:`FunnelObjective`. A trial samples its parameters from
:func:`search_space` (or the caller's space), is pruned through the callback of ``pruning.py``
and is scored with :func:`sk_htlnet.metrics.make_funnel_scorer`.
"""

import functools
import json

import numpy as np
import optuna
from sklearn.utils import _safe_indexing

from .. import HTLNetRegressor, TrainingDivergedError
from ..metrics import canonical_metric, greater_is_better, make_funnel_scorer, metric_task, resolve_target
from ..targets import check_targets
from ._folds import _splits
from .pruning import PRUNING_CALLBACK_NAME, _PruningCallback
from .space import _CORE_SCALE, _SPACE, params_from_trial, search_space


def make_objective(
    X,
    y,
    *,
    metric="gini",
    target=-1,
    cv=None,
    test_size=0.2,
    base_params=None,
    space=None,
    pruning=True,
    monitor="valid_loss",
    sample_weight=None,
    groups=None,
    random_state=0,
):
    """Build an Optuna objective that fits HTLNetRegressor and scores one metric of one target.

    Each call samples parameters with ``space(trial)``, merges them over ``base_params``, fits on
    the training rows of each split and scores the held-out rows with
    :func:`sk_htlnet.metrics.make_funnel_scorer` (``metric``, ``target``). The value returned is the
    metric itself, averaged over the splits: a score (AUC, Gini, Spearman) to maximise, a loss
    (log loss, NRMSE, NMAE; ``neg_*`` names accepted) to minimise; ``objective.direction`` says
    which, for ``optuna.create_study(direction=objective.direction)``.

    With ``pruning=True`` the first fit of every trial (the only fit with ``cv=None``, the first
    fold's with cross-validation) gets optuna-integration's
    :class:`~optuna_integration.SkorchPruningCallback` in ``callbacks=`` (named
    ``PRUNING_CALLBACK_NAME``). After every epoch it reports the history key ``monitor``
    (step = epoch index, from 0) and raises :class:`optuna.TrialPruned` when the study's pruner
    says so. ``"valid_loss"``, the default, is the monitored total of HTLNet's tasks on the
    estimator's early-stopping split (the stage log losses plus the core MSE over its variance);
    any ``valid_loss_<target>`` or ``train_loss*`` key of ``history_`` works too. Since
    ``target_transform`` sets the scale of every loss that includes the core target, the default
    space then does not sample it (a pruner would compare losses on different scales and prune
    one transform's trials wholesale); it is searched with ``pruning=False``, or when ``monitor``
    is a stage's key (``"valid_loss_<stage>"``). A ``valid_*`` key
    needs that split, so ``early_stopping=True`` is set (a ValueError if ``base_params`` sets it to
    False); the split is carved out of the training rows, so the rows scored for the objective
    stay unseen. The monitored value is a loss while a pruner compares reported values in the
    study's direction, so in a ``"maximize"`` study (Gini, AUC) the loss is reported negated
    (Optuna's pruners and samplers read these reports; see Returns for what a pruned trial's
    ``value`` holds). A fit that diverges (:class:`~sk_htlnet.TrainingDivergedError`) prunes its
    trial too, with the user attribute ``"diverged"``.

    Parameters
    ----------
    X : DataFrame or array-like of shape (n_samples, n_features)
        Features, as for :meth:`HTLNetRegressor.fit`.
    y : DataFrame or array-like of shape (n_samples, k + 1) or (n_samples,)
        k binary stages, then the core target.
    metric : str, default="gini"
        A metric of :func:`sk_htlnet.metrics.make_funnel_scorer`: ``"auc"``, ``"log_loss"`` for a
        stage; ``"gini"`` (normalised Gini), ``"spearman"``, ``"nrmse"``, ``"nmae"`` for the core.
    target : int or str, default=-1
        The target scored: a position (-1, the core) or a column name of y.
    cv : None, int, cross-validation generator or iterable, default=None
        None: one split, ``test_size`` of the rows held out. An int: that many folds. Both are
        stratified on funnel depth (the number of stages a row passed), as the estimator's own
        validation split, when every depth has enough rows, and shuffled with ``random_state``.
        A splitter (``KFold(5)``, ``GroupKFold``...) or an iterable of (train, test) index arrays is
        used as given; a splitter's ``split`` receives the funnel depth as y and ``groups``.
    test_size : float in (0, 1), default=0.2
        Share of the rows held out when ``cv`` is None.
    base_params : dict, default=None
        Fixed HTLNetRegressor parameters: the budget and determinism (``max_iter``,
        ``random_state``, ``n_threads``...), and any parameter of the default space to hold fixed
        (the default space does not sample a parameter named here).
    space : callable, default=None
        ``space(trial) -> dict`` of HTLNetRegressor parameters, overriding ``base_params``; None
        is :func:`search_space` without the parameters of ``base_params`` (and without
        ``target_transform`` when pruning on a loss that includes the core target).
    pruning : bool, default=True
        Report ``monitor`` per epoch and let the study's pruner stop the trial.
    monitor : str, default="valid_loss"
        History key reported for pruning (see above).
    sample_weight : array-like of shape (n_samples,), default=None
        Row weights for the fits and the scorer.
    groups : array-like of shape (n_samples,), default=None
        Group labels for a group-aware ``cv`` splitter.
    random_state : int or None, default=0
        Seeds the splits (not the estimator: put ``random_state`` in ``base_params``).

    Returns
    -------
    objective : FunnelObjective
        ``objective(trial) -> float``, with ``direction``, ``metric``, ``target``,
        ``base_params``, ``space`` and ``splits`` attributes and a ``make_estimator(trial)``
        method (the unfitted estimator of a finished trial, for the refit). Each trial records the
        user attributes ``"params"`` (the sampled estimator parameters, JSON), ``"fold_values"``
        and ``"n_iter"`` (epochs run per fold); a trial the pruner stops records
        ``"pruned_epoch"`` and ``"pruned_<monitor>"`` (``"pruned_valid_loss"``: the monitored
        loss at that epoch, not negated) instead of the last two. Optuna gives a pruned trial its
        last report as ``value``, a (negated) loss and not the metric:
        :func:`~sk_htlnet.tuning.trials_dataframe` shows the study with NaN there. A metric
        that is undefined on the held-out rows (NaN, e.g. a Gini without any positive amount)
        makes the value NaN, which Optuna records as a failed trial without stopping the study.

    Raises
    ------
    ValueError
        If ``metric`` is unknown, ``target`` cannot be resolved in y or does not suit the metric
        (a stage metric on the core target or the reverse), ``base_params`` contains
        ``callbacks`` that are not a list, or the splits are invalid.
    """
    return FunnelObjective(
        X, y, metric=metric, target=target, cv=cv, test_size=test_size, base_params=base_params,
        space=space, pruning=pruning, monitor=monitor, sample_weight=sample_weight, groups=groups,
        random_state=random_state,
    )


class FunnelObjective:
    """The Optuna objective returned by :func:`make_objective` (see there for the parameters).

    Attributes
    ----------
    direction : {"maximize", "minimize"}
        The study direction the metric needs.
    metric : str
        The canonical metric name (``"normalized_gini"``, ``"nrmse"``...).
    target : int
        The column scored, as a position in y.
    base_params : dict
        The fixed estimator parameters, with ``early_stopping=True`` added for pruning.
    space : callable
        ``space(trial) -> dict``, the sampled parameters (by default :func:`search_space` less
        ``base_params``, and less ``target_transform`` when pruning on a loss with the core).
    splits : list of (ndarray, ndarray)
        The (train, test) row positions of every fold, fixed when the objective is built so
        that every trial, in every worker process, sees the same folds.
    """

    def __init__(self, X, y, *, metric, target, cv, test_size, base_params, space, pruning,
                 monitor, sample_weight, groups, random_state):
        self.X, self.y = X, y
        self.sample_weight = None if sample_weight is None else np.asarray(sample_weight)
        values, names, _ = check_targets(y, len(X))  # as fit checks it, before any trial
        name = canonical_metric(metric)
        greater, task = greater_is_better(name), metric_task(name)
        self.metric = name
        self.target = resolve_target(y, target)
        n_stages = values.shape[1] - 1
        if (task == "stage") != (self.target < n_stages):
            kind = "a stage" if self.target < n_stages else "the core target"
            raise ValueError(
                f"Metric {metric!r} scores {'a 0/1 stage' if task == 'stage' else 'the core target'}, "
                f"but target {target!r} is {kind} (column {self.target} of {values.shape[1]})."
            )
        self.direction = "maximize" if greater else "minimize"
        self._scorer = make_funnel_scorer(name, self.target)
        self._sign = 1.0 if greater else -1.0
        params = dict(base_params or {})
        if not isinstance(params.get("callbacks") or [], list):
            raise ValueError(f"base_params['callbacks'] must be a list, got {params['callbacks']!r}.")
        if pruning and monitor.startswith("valid"):
            if params.get("early_stopping", True) is False:
                raise ValueError(
                    f"Pruning on {monitor!r} needs the estimator's validation split, but base_params "
                    "sets early_stopping=False; remove it, or prune on a 'train_loss' key, or pass "
                    "pruning=False."
                )
            params["early_stopping"] = True
        self.base_params = params
        exclude = set(_SPACE) & set(params)
        if np.nanmin(values[:, -1]) < 0:
            exclude.add("core_loss")  # the likelihood losses need a core target >= 0
        stage_keys = {f"{split}_loss_{name}" for split in ("train", "valid") for name in names[:n_stages]}
        if pruning and monitor not in stage_keys:
            exclude.update(_CORE_SCALE)  # they rescale the monitored loss: see search_space
        self.space = space or functools.partial(search_space, exclude=exclude)
        self.pruning = bool(pruning)
        self.monitor = monitor
        self.splits = _splits(X, values, cv, test_size, groups, random_state)

    def make_estimator(self, trial):
        """An unfitted HTLNetRegressor with ``base_params`` and a trial's parameters, for the refit.

        Parameters
        ----------
        trial : optuna.trial.FrozenTrial or dict
            A finished trial (``study.best_trial``) or its ``params``.

        Returns
        -------
        estimator : HTLNetRegressor
            Without the pruning callback (``base_params`` still sets ``early_stopping=True`` when
            pruning on a ``valid_*`` key).
        """
        return HTLNetRegressor(**{**self.base_params, **params_from_trial(trial, self.space)})

    def __call__(self, trial):
        """Fit and score one trial; returns the metric averaged over the splits (float)."""
        study = getattr(trial, "study", None)
        if study is not None and len(study.directions) == 1:
            expected = optuna.study.StudyDirection.MAXIMIZE if self.direction == "maximize" \
                else optuna.study.StudyDirection.MINIMIZE
            if study.direction != expected:
                raise ValueError(
                    f"Metric {self.metric!r} must be {self.direction}d, but the study direction is "
                    f"{study.direction.name.lower()}; create it with "
                    "optuna.create_study(direction=objective.direction)."
                )
        sampled = self.space(trial)
        _set_attr(trial, "params", sampled)
        fold_values, n_iter = [], []
        for fold, (train, test) in enumerate(self.splits):
            params = {**self.base_params, **sampled}
            if self.pruning and fold == 0:
                callback = _PruningCallback(trial, self.monitor, sign=-self._sign)  # negate to maximise
                params["callbacks"] = [*(params.get("callbacks") or []), (PRUNING_CALLBACK_NAME, callback)]
            estimator = HTLNetRegressor(**params)
            weight = None if self.sample_weight is None else self.sample_weight[train]
            X_train, y_train = _safe_indexing(self.X, train), _safe_indexing(self.y, train)
            try:
                estimator.fit(X_train, y_train, sample_weight=weight)
            except TrainingDivergedError as exc:
                _set_attr(trial, "diverged", str(exc))
                raise optuna.TrialPruned(f"Training diverged: {exc}") from exc
            weight = None if self.sample_weight is None else self.sample_weight[test]
            score = self._scorer(estimator, _safe_indexing(self.X, test), _safe_indexing(self.y, test),
                                 sample_weight=weight)
            fold_values.append(float(score) * self._sign)
            n_iter.append(int(estimator.n_iter_))
        _set_attr(trial, "fold_values", fold_values)
        _set_attr(trial, "n_iter", n_iter)
        return float(np.mean(fold_values))


def _set_attr(trial, key, value):
    """Record a JSON-able user attribute (storages need JSON); silently skip anything else."""
    try:
        value = json.loads(json.dumps(value))
    except (TypeError, ValueError):
        return
    if hasattr(trial, "set_user_attr"):
        trial.set_user_attr(key, value)
