"""Hyper-parameter search for HTLNetRegressor with Optuna: search space, objective, pruning, storage.

Needs the ``tuning`` extra (``pip install "sk_htlnet[tuning]"``: optuna and optuna-integration).

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

Examples
--------
>>> import optuna
>>> from sk_htlnet.datasets import make_funnel
>>> from sk_htlnet.tuning import make_objective
>>> X, Y = make_funnel(2000, random_state=0)
>>> objective = make_objective(X, Y, metric="gini", base_params={"max_iter": 3, "random_state": 0})
>>> study = optuna.create_study(direction=objective.direction,
...                             pruner=optuna.pruners.MedianPruner(n_startup_trials=2))
>>> study.optimize(objective, n_trials=4)  # doctest: +SKIP
>>> best = objective.make_estimator(study.best_trial).fit(X, Y)  # doctest: +SKIP

See docs/tuning.md for distributed studies (SQLite, journal file, PostgreSQL) and the Dask backend
for scikit-learn searches.
"""

import functools
import json
import math
import numbers
import warnings

import numpy as np
import pandas as pd
from sklearn.model_selection import KFold, StratifiedKFold, check_cv, train_test_split
from sklearn.utils import _safe_indexing

try:
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
    from optuna_integration.skorch import SkorchPruningCallback
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "sk_htlnet.tuning needs optuna and optuna-integration: pip install 'sk_htlnet[tuning]'"
    ) from exc

from . import metrics as _metrics
from .estimator import HTLNetRegressor
from .modules.embedding import NUMERIC_ENCODINGS
from .net import CORE_LOSSES, TrainingDivergedError

__all__ = [
    "FunnelObjective",
    "PRUNING_CALLBACK_NAME",
    "TOWER_UNITS",
    "make_objective",
    "make_storage",
    "params_from_trial",
    "search_distributions",
    "search_space",
]

TOWER_UNITS = {
    "64-32": (64, 32),
    "128-64-32": (128, 64, 32),
    "256-128-64": (256, 128, 64),
}
"""Tower shapes of the default space. The trial stores the label (a str, so any Optuna storage
can hold it); :func:`search_space` returns the tuple."""

PRUNING_CALLBACK_NAME = "optuna_pruning"
"""Name of the pruning callback in ``HTLNetRegressor(callbacks=...)`` during a trial."""

# One table, two views: search_space (trial.suggest_*) and search_distributions (OptunaSearchCV).
_SPACE = {
    "learning_rate": FloatDistribution(3e-4, 1e-2, log=True),
    "weight_decay": FloatDistribution(1e-8, 1e-3, log=True),
    "batch_size": CategoricalDistribution((512, 1024, 2048)),
    "embedding_dim": CategoricalDistribution((8, 16, 32)),
    "tower_units": CategoricalDistribution(tuple(TOWER_UNITS)),
    "relax_factor": FloatDistribution(0.0, 1.0),
    "clip_ratio": FloatDistribution(1.0, 100.0, log=True),
    "tau": FloatDistribution(0.2, 5.0, log=True),
    "label_sampling": CategoricalDistribution(("hard", "relaxed")),
    "numeric_encoding": CategoricalDistribution(NUMERIC_ENCODINGS),
    "core_loss": CategoricalDistribution(CORE_LOSSES),
    "target_transform": CategoricalDistribution(("auto", "standardize")),  # sampled after core_loss
}
# parameters that change the scale of every loss that includes the core target
_CORE_SCALE = ("core_loss", "target_transform")


def search_space(trial, *, exclude=()):
    """Sample HTLNetRegressor parameters from the default search space.

    Every range is an Optuna distribution in the module's table, shared with
    :func:`search_distributions`; ``max_iter`` and the early-stopping settings are budget, not
    search, parameters and stay with ``base_params`` of :func:`make_objective`. The ranges and why:

    ``learning_rate`` : float, log-uniform in [3e-4, 1e-2]
        Adam's step size acts multiplicatively, hence log scale. Adam's customary 1e-3 (the
        default) sits in the lower half; below 3e-4 the few epochs of a tuning budget barely move
        the towers, above 1e-2 the rare-stage logits and the core head oscillate.
    ``weight_decay`` : float, log-uniform in [1e-8, 1e-3]
        Adam's L2 penalty. The lower end is practically 0 (the default); 1e-3 is already strong
        for embedding tables whose rows are touched only by the batches that hold their category.
    ``batch_size`` : {512, 1024, 2048}
        Rows per step. Smaller batches make the per-task backward passes of the gradient rule
        (HTLNet §4) dominate the CPU time and give a rare stage (Hillstrom: 0.9 % conversion)
        batches without a positive; 2048 still leaves about 25 steps per epoch on 50,000 rows.
    ``embedding_dim`` : {8, 16, 32}
        Size of each field's embedding, powers of two around the default 16; the tables and the
        towers' input grow linearly with it.
    ``tower_units`` : {(64, 32), (128, 64, 32), (256, 128, 64)}
        Tower widths: half, equal to (AITM's sizes, the default) and twice the default's capacity.
        The trial records the label (``"128-64-32"``, see ``TOWER_UNITS``); this function
        returns the tuple.
    ``relax_factor`` : float, uniform in [0, 1]
        gamma of HTLNet §4, its whole domain: 0 keeps only the projection of conflicting stage
        gradients, 1 also rescales every stage gradient fully towards the core gradient's norm.
        The paper does not publish a value; the default 0.1 is a re-implementation's.
    ``clip_ratio`` : float, log-uniform in [1, 100]
        C of HTLNet §4, bounding the norm ratio in [1/C, C]. C = 1 forces equal norms; past 100
        the clip is practically inactive. A ratio, hence log scale (the default 10 is the centre).
    ``tau`` : float, log-uniform in [0.2, 5]
        Gumbel-softmax temperature of the LEU (HTLNet §2.3), a ratio to the logit scale, hence log
        scale, centred on the default 1. Below 0.2 relaxed samples are practically hard and their
        gradient noisy; above 5 they flatten to 0.5 and carry little label information.
    ``label_sampling`` : {"hard", "relaxed"}
        Straight-through hard samples (the default) or relaxed Gumbel-softmax samples.
    ``numeric_encoding`` : {"linear", "quantile", "piecewise_linear", "periodic"}
        Every encoding of numeric columns the estimator has; which one wins depends on how much of
        the signal the numeric columns carry and how non-linearly (docs/comparison.md).
    ``core_loss`` : {"mse", "ziln", "tweedie"}
        The squared error on a transformed scale, or a likelihood of the amount.  It changes the
        scale of every loss that includes the core, so, like ``target_transform``,
        :func:`make_objective` leaves it out of the default space when it prunes on such a loss.
    ``target_transform`` : {"auto", "standardize"}
        Sampled only when ``core_loss`` is "mse" (or excluded): the likelihood losses take none.
        Scale the core target's MSE is computed on: ``"auto"`` is ``log1p`` for a non-negative
        amount and ``standardize`` otherwise; ``"standardize"`` keeps a heavy-tailed amount on its
        own (standardised) scale. Both are valid for any core target; ``"none"`` (the paper's
        setting) is left out because an MSE in the target's units has a data-dependent scale.
        The transform also sets the scale of every loss that includes the core (``valid_loss``:
        about 1.39 with ``"auto"`` against 1.03 with ``"standardize"`` on Hillstrom, a gap a
        hundred times wider than the one between good and bad learning rates), so
        :func:`make_objective` leaves it out of the default space when it prunes on such a loss.

    Parameters
    ----------
    trial : optuna.trial.BaseTrial
        A trial (also a :class:`optuna.trial.FixedTrial` to replay known values, with the tower
        label for ``tower_units``).
    exclude : iterable of str, default=()
        Parameters not to sample (they are left out of the result), e.g. those fixed in
        ``base_params`` of :func:`make_objective`, which excludes them itself.

    Returns
    -------
    params : dict
        HTLNetRegressor parameters: ``learning_rate``, ``weight_decay``, ``batch_size``,
        ``embedding_dim``, ``tower_units`` (a tuple of int), ``relax_factor``, ``clip_ratio``,
        ``tau``, ``label_sampling``, ``numeric_encoding``, ``core_loss``, ``target_transform``
        (only with ``core_loss="mse"``: the likelihood losses take no transform), less those in
        ``exclude``.

    Raises
    ------
    ValueError
        If ``exclude`` names a parameter that is not in the space.

    See Also
    --------
    search_distributions : The same space as Optuna distributions, for OptunaSearchCV.
    """
    exclude = _check_exclude(exclude)
    params = {}
    for name, dist in _SPACE.items():
        if name in exclude or (name == "target_transform" and params.get("core_loss", "mse") != "mse"):
            continue
        params[name] = _suggest(trial, name, dist)
    if "tower_units" in params:
        params["tower_units"] = TOWER_UNITS[params["tower_units"]]
    return params


def search_distributions(prefix="", *, exclude=()):
    """The default search space as Optuna distributions, for ``OptunaSearchCV``.

    The same ranges as :func:`search_space`, keyed by HTLNetRegressor parameter names, except that
    the ``tower_units`` choices are the tuples themselves (OptunaSearchCV sets the sampled value on
    the estimator). Tuples are not storable in a persistent Optuna storage; OptunaSearchCV's default
    in-memory study holds them.

    Parameters
    ----------
    prefix : str, default=""
        Prepended to every name, e.g. ``"htlnet__"`` for an estimator inside a Pipeline step named
        ``"htlnet"``.
    exclude : iterable of str, default=()
        Parameters (without the prefix) to leave out.  OptunaSearchCV samples every parameter
        independently, and ``target_transform="standardize"`` is invalid with the likelihood
        losses, so ``target_transform`` is left out unless ``core_loss`` is excluded.

    Returns
    -------
    distributions : dict of str to optuna.distributions.BaseDistribution

    Examples
    --------
    >>> from optuna_integration import OptunaSearchCV  # doctest: +SKIP
    >>> search = OptunaSearchCV(HTLNetRegressor(max_iter=5), search_distributions(),
    ...                         scoring=make_funnel_scorer("gini", -1), n_trials=20)  # doctest: +SKIP
    """
    if not isinstance(prefix, str):
        raise ValueError(f"prefix must be a str, got {prefix!r}.")
    exclude = _check_exclude(exclude)
    distributions = dict(_SPACE)
    if "core_loss" not in exclude:
        del distributions["target_transform"]
    with warnings.catch_warnings():  # "choices should be ... for persistent storage": documented
        warnings.simplefilter("ignore", UserWarning)
        distributions["tower_units"] = CategoricalDistribution(tuple(TOWER_UNITS.values()))
    return {prefix + name: dist for name, dist in distributions.items() if name not in exclude}


def params_from_trial(trial, space=None):
    """HTLNetRegressor parameters of a finished trial, by replaying the space on its values.

    Parameters
    ----------
    trial : optuna.trial.FrozenTrial or dict
        A trial (e.g. ``study.best_trial``) or its ``params`` dict (``study.best_params``).
    space : callable, default=None
        The space the study sampled from, ``space(trial) -> dict`` (``objective.space`` for a
        study run with :func:`make_objective`); None is :func:`search_space` restricted to the
        parameters the trial holds.

    Returns
    -------
    params : dict
        What ``space`` returned in that trial (for the default space, ``tower_units`` as a tuple).
    """
    values = dict(trial if isinstance(trial, dict) else trial.params)
    if space is None:
        space = functools.partial(search_space, exclude=set(_SPACE) - set(values))
    return space(optuna.trial.FixedTrial(values))


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
    study's direction, so in a ``"maximize"`` study (Gini, AUC) the loss is reported negated. A
    fit that diverges (:class:`~sk_htlnet.TrainingDivergedError`) prunes its trial too, with the
    user attribute ``"diverged"``.

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
        and ``"n_iter"`` (epochs run per fold). A metric that is undefined on the held-out rows
        (NaN, e.g. a Gini without any positive amount) makes the value NaN, which Optuna records
        as a failed trial without stopping the study.

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
        values = _target_values(y)
        name = _metrics._canonical_metric(metric)
        greater_is_better, task = _metrics._METRICS[name][1], _metrics._METRICS[name][2]
        self.metric = name
        self.target = _metrics._resolve_target(y, _metrics._check_target(target))
        n_stages = values.shape[1] - 1
        if (task == "stage") != (self.target < n_stages):
            kind = "a stage" if self.target < n_stages else "the core target"
            raise ValueError(
                f"Metric {metric!r} scores {'a 0/1 stage' if task == 'stage' else 'the core target'}, "
                f"but target {target!r} is {kind} (column {self.target} of {values.shape[1]})."
            )
        self.direction = "maximize" if greater_is_better else "minimize"
        self._scorer = _metrics.make_funnel_scorer(name, self.target)
        self._sign = 1.0 if greater_is_better else -1.0
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
        if pruning and monitor not in _stage_keys(y, n_stages):
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


class _PruningCallback(SkorchPruningCallback):
    """optuna-integration's skorch pruning callback, reporting ``sign * history[-1, monitor]``.

    With ``sign=1`` (a minimised metric) this is exactly SkorchPruningCallback. In a maximised
    study the pruner treats greater reported values as better, so the monitored loss is reported
    negated (``sign=-1``).
    """

    def __init__(self, trial, monitor, sign=1.0):
        super().__init__(trial, monitor)
        self._sign = sign

    def on_epoch_end(self, net, **kwargs):
        if self._sign > 0:
            return super().on_epoch_end(net, **kwargs)
        history = net.history
        if not history:
            return
        epoch = len(history) - 1
        self._trial.report(-float(history[-1, self._monitor]), epoch)
        if self._trial.should_prune():
            raise optuna.TrialPruned(f"Trial was pruned at epoch {epoch}.")


def make_storage(url, *, heartbeat_interval=None, grace_period=None):
    """Optuna storage that several worker processes can share.

    Parameters
    ----------
    url : str, path-like or None
        - None: in-memory (one process).
        - ``"sqlite:///path/study.db"``: an SQLite file, for a few processes on one machine. The
          connection waits up to 60 s for the file lock instead of failing at once.
        - another SQLAlchemy URL, e.g. ``"postgresql+psycopg2://user:password@host/db"`` or
          ``"mysql+pymysql://..."``: a database server, for workers on several machines
          (``pool_pre_ping`` drops stale connections).
        - anything else is a file path for Optuna's JournalStorage (an append-only log with a
          file lock that also works on NFS): many processes on one machine or a shared disk.
    heartbeat_interval, grace_period : int, default=None
        Seconds; with a database URL, a worker records a heartbeat every ``heartbeat_interval``
        and a trial without one for ``grace_period`` (default ``2 * heartbeat_interval``) is
        marked failed, so a crashed worker's trial does not stay RUNNING forever
        (:class:`optuna.storages.RDBStorage`).

    Returns
    -------
    storage : optuna.storages.BaseStorage or None

    Raises
    ------
    ValueError
        If ``heartbeat_interval`` is given for a journal file or in-memory storage.
    """
    url = None if url is None else str(url)
    if url is not None and "://" in url:
        sqlite = url.startswith("sqlite")
        engine_kwargs = {"connect_args": {"timeout": 60}} if sqlite else {"pool_pre_ping": True}
        return optuna.storages.RDBStorage(
            url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_interval,
            grace_period=grace_period,
        )
    if heartbeat_interval is not None or grace_period is not None:
        raise ValueError("heartbeat_interval and grace_period need a database URL (RDBStorage).")
    if url is None:
        return None
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    return JournalStorage(JournalFileBackend(url))


# ---- helpers ------------------------------------------------------------------------------------
def _check_exclude(exclude):
    exclude = {exclude} if isinstance(exclude, str) else set(exclude)
    unknown = sorted(exclude - set(_SPACE))
    if unknown:
        raise ValueError(f"exclude names {unknown}, not in the search space {list(_SPACE)}.")
    return exclude


def _suggest(trial, name, dist):
    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(name, dist.low, dist.high, log=dist.log, step=dist.step)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, log=dist.log, step=dist.step)
    return trial.suggest_categorical(name, dist.choices)


def _set_attr(trial, key, value):
    """Record a JSON-able user attribute (storages need JSON); silently skip anything else."""
    try:
        value = json.loads(json.dumps(value))
    except (TypeError, ValueError):
        return
    if hasattr(trial, "set_user_attr"):
        trial.set_user_attr(key, value)


def _stage_keys(y, n_stages):
    """History keys of the stage losses alone (``train_loss_<stage>``, ``valid_loss_<stage>``)."""
    if isinstance(y, pd.DataFrame):
        names = [str(c) for c in y.columns[:n_stages]]
    else:
        names = [f"stage_{t + 1}" for t in range(n_stages)]
    return {f"{split}_loss_{name}" for split in ("train", "valid") for name in names}


def _target_values(y):
    """y as float64 (n, T), NaN for missing labels."""
    if isinstance(y, pd.Series):
        y = y.to_frame()
    if isinstance(y, pd.DataFrame):
        return np.column_stack(
            [pd.to_numeric(y[c]).to_numpy(dtype=np.float64, na_value=np.nan) for c in y.columns]
        )
    values = np.asarray(y, dtype=np.float64)
    return values.reshape(-1, 1) if values.ndim == 1 else values


def _funnel_depth(values):
    """Number of leading stages each row passed (0..k); a missing label ends the count."""
    stages = np.nan_to_num(values[:, :-1], nan=0.0) == 1.0
    return np.cumprod(stages, axis=1).sum(axis=1) if stages.shape[1] else np.zeros(len(values), int)


def _stratifiable(depth, n_splits):
    counts = np.bincount(depth)
    return counts[counts > 0].min() >= n_splits if depth.size else False


def _splits(X, values, cv, test_size, groups, random_state):
    """The (train, test) positions of every fold, computed once."""
    n = values.shape[0]
    depth = _funnel_depth(values)
    index = np.arange(n)
    if cv is None:
        if not (isinstance(test_size, numbers.Real) and 0 < test_size < 1):
            raise ValueError(f"test_size must be a float in (0, 1), got {test_size!r}.")
        n_test = math.ceil(test_size * n)
        stratify = depth if _stratifiable(depth, 2) and n_test >= np.unique(depth).size else None
        train, test = train_test_split(index, test_size=test_size, random_state=random_state,
                                       stratify=stratify)
        splits = [(np.sort(train), np.sort(test))]
    elif isinstance(cv, numbers.Integral) and not isinstance(cv, bool):
        if cv < 2:
            raise ValueError(f"cv must be at least 2 folds, got {cv}.")
        splitter = (StratifiedKFold if _stratifiable(depth, cv) else KFold)(
            int(cv), shuffle=True, random_state=random_state
        )
        splits = list(splitter.split(np.zeros((n, 1)), depth))
    else:
        splitter = check_cv(cv, depth, classifier=False)
        splits = [(np.asarray(tr), np.asarray(te)) for tr, te in splitter.split(X, depth, groups)]
    if not splits or any(len(tr) < 2 or len(te) < 1 for tr, te in splits):
        raise ValueError("Every split needs at least 2 training rows and 1 test row.")
    return splits
