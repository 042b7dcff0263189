"""The default search space of HTLNetRegressor: one table of Optuna distributions, two views.

:func:`search_space` samples it from a trial (``trial.suggest_*``), :func:`search_distributions`
gives it as distributions for :class:`optuna_integration.OptunaSearchCV`, and
:func:`params_from_trial` replays it on a finished trial.
"""

import functools
import warnings

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from ..core_losses import CORE_LOSSES
from ..preprocessing import NUMERIC_ENCODINGS


# tower shapes of the default space by label (documented in sk_htlnet/tuning/__init__.py)
TOWER_UNITS = {
    "64-32": (64, 32),
    "128-64-32": (128, 64, 32),
    "256-128-64": (256, 128, 64),
}

# One table, two views: search_space (trial.suggest_*) and search_distributions (OptunaSearchCV).
_SPACE = {
    "learning_rate": FloatDistribution(3e-4, 1e-2, log=True),
    "weight_decay": FloatDistribution(1e-8, 1e-3, log=True),
    "batch_size": CategoricalDistribution(("auto", 512, 1024, 2048)),
    "embedding_dim": CategoricalDistribution((8, 16, 32)),
    "tower_units": CategoricalDistribution(tuple(TOWER_UNITS)),
    "relax_factor": FloatDistribution(0.0, 1.0),
    "clip_ratio": FloatDistribution(1.0, 100.0, log=True),
    "label_sampling": CategoricalDistribution(("hard", "relaxed")),
    "tau": FloatDistribution(0.2, 5.0, log=True),  # sampled in relaxed trials only (inert with hard ones)
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
    ``batch_size`` : {"auto", 512, 1024, 2048}
        Rows per step. "auto" (the estimator's default: at most half the training rows, 32 to
        1024) keeps a small set at two or more steps an epoch, where 1024 and 2048 would give it
        one (found by a new user tuning 1,055 rows). Smaller fixed batches make the per-task
        backward passes of the gradient rule (HTLNet §4) dominate the CPU time and give a rare
        stage (Hillstrom: 0.9 % conversion) batches without a positive; 2048 still leaves about 25
        steps per epoch on 50,000 rows.
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
        C of HTLNet §4, bounding the norm ratio r in [1/C, C]. C = 1 clips r to 1, which switches
        the magnitude step off; past 100 the clip is practically inactive. A ratio, hence log
        scale (the default 10 is the centre).
    ``label_sampling`` : {"hard", "relaxed"}
        Straight-through hard samples (the default) or relaxed Gumbel-softmax samples.
    ``tau`` : float, log-uniform in [0.2, 5]
        Sampled only when ``label_sampling`` is "relaxed" (or excluded): with hard samples and the
        default ``stop_gradient=True`` tau changes nothing (HTLNetRegressor's ``tau``), so a hard
        trial does not spend a dimension on it. Gumbel-softmax temperature of the LEU
        (HTLNet §2.3), a ratio to the logit scale, hence log scale, centred on the default 1.
        Below 0.2 relaxed samples are practically hard and their gradient noisy; above 5 they
        flatten to 0.5 and carry little label information.
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
        ``label_sampling``, ``tau`` (only with ``label_sampling="relaxed"``), ``numeric_encoding``,
        ``core_loss``, ``target_transform`` (only with ``core_loss="mse"``: the likelihood losses
        take no transform), less those in ``exclude``.

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
        if name in exclude or (name == "target_transform" and params.get("core_loss", "mse") != "mse") or (
                name == "tau" and params.get("label_sampling", "relaxed") != "relaxed"):
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
        losses, so ``target_transform`` is left out unless ``core_loss`` is excluded.  ``tau`` is
        kept: in the trials that draw ``label_sampling="hard"`` it changes nothing.

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
