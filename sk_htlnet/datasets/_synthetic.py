"""A synthetic hybrid funnel with known structure and an exact Bayes-optimal truth."""

import numbers

import numpy as np
import pandas as pd
from scipy.optimize import brentq
from scipy.special import expit

__all__ = ["make_funnel"]

_CORRELATION = 0.5  # share of each task's score variance that is common to all tasks
_CORE_LOG_MEAN = 3.0  # log-mean of the core target at an average x (exp(3.5) ~ 33 units)
_CORE_SIGMA = 1.0  # log-scale noise of the core target
_DEFAULT_STAGE_RATE = 0.3
_PILOT_SIZE = 1 << 15  # rows used to calibrate the stage intercepts
_CHUNK_SIZE = 1 << 18  # rows generated at a time; bounds the working memory


def make_funnel(
    n_samples=10_000,
    *,
    n_stages=2,
    n_categorical=4,
    n_numeric=4,
    cardinality=20,
    signal=1.0,
    stage_rates=None,
    missing_rate=0.0,
    random_state=None,
    return_truth=False,
):
    r"""Generate a hybrid funnel: nested binary stages, then a continuous core target.

    The generating process mirrors the hybrid targets of HTLNet §1. Each row
    has ``n_categorical`` categorical fields and ``n_numeric`` numeric fields.
    Every task (each stage and the core) has a score built from the same
    features::

        score_t(x) = sqrt(rho) * c(x) + sqrt(1 - rho) * s_t(x),   rho = 0.5

    where the common component ``c`` is shared by all tasks (so the stages
    and the core are correlated) and ``s_t`` is the task's own. Each
    component is a sum, scaled to about unit variance, of one random effect per
    categorical level (drawn once, standard normal) and of
    ``cos(theta) * z + sin(theta) * (z**2 - 1) / sqrt(2)`` per numeric field
    ``z`` (a random mix of a linear and a quadratic effect). Stages are
    nested: stage 1 is drawn on every row, stage t only where stage t-1 is 1::

        P(stage_t = 1 | stage_{t-1} = 1, x) = sigmoid(a_t + signal * score_t(x))

    The core target is 0 unless the last stage is 1 (it is drawn on every row
    when ``n_stages=0``); then it is lognormal, heavy-tailed::

        log(core) ~ Normal(mu(x), sigma**2),  mu(x) = 3 + signal * score_core(x),
        sigma = 1

    Parameters
    ----------
    n_samples : int, default=10_000
        Number of rows, >= 1.
    n_stages : int, default=2
        Number of binary stages k, >= 0.
    n_categorical : int, default=4
        Number of categorical fields, >= 0.
    n_numeric : int, default=4
        Number of numeric fields, >= 0. ``n_categorical + n_numeric`` must be
        at least 1.
    cardinality : int or sequence of int, default=20
        Number of levels of each categorical field (one value for all, or one
        per field), each in [1, 2**31 - 1]; 10**6 levels are routine. Level
        frequencies are Zipf-like: ``P(level = j) = log((j + 2) / (j + 1)) /
        log(cardinality + 1)``, so level 0 is the most frequent and most
        levels of a large field are rare.
    signal : float, default=1.0
        Scale of the feature effects, >= 0. 0 makes every target independent
        of x; larger values make the targets easier to predict.
    stage_rates : float or sequence of float, default=None
        Conditional rate of each stage, ``P(stage_t = 1 | stage_{t-1} = 1)``,
        in (0, 1); one value for all stages or one per stage. None means 0.3
        for every stage. The intercepts ``a_t`` are calibrated on a pilot
        sample of 32,768 rows, so the rates hold up to that sample's noise
        (within about 0.002 in expectation).
    missing_rate : float, default=0.0
        Probability, in [0, 1), that a numeric value is missing (NaN),
        independently per cell. A missing value contributes nothing to the
        scores, so the targets depend on the features *as observed* and the
        truth stays exact. Categorical fields are never missing.
    random_state : int, Generator, RandomState or None, default=None
        Seed for everything (effect tables, intercepts, rows). The same
        integer always gives identical output. For train and test sets of the
        same funnel, generate once and split: another seed draws another
        funnel.
    return_truth : bool, default=False
        If True, also return the exact conditional expectations.

    Returns
    -------
    X : pandas.DataFrame of shape (n_samples, n_categorical + n_numeric)
        Columns ``cat_0, ...`` (``category`` dtype whose categories are the
        integers ``0 .. cardinality - 1``, so a level's value is its code)
        then ``num_0, ...`` (float64, standard normal, NaN where missing).
    Y : pandas.DataFrame of shape (n_samples, n_stages + 1)
        Columns ``stage_1 .. stage_k`` (int64, 0/1, nested:
        ``stage_t <= stage_{t-1}``) then ``core`` (float64, > 0 exactly where
        the last stage is 1, otherwise 0).
    truth : pandas.DataFrame of shape (n_samples, n_stages + 1)
        Only when ``return_truth=True``. Same columns as Y, float64.
        ``stage_t`` is the exact entire-space probability
        ``P(stage_t = 1 | x) = prod_{s <= t} sigmoid(a_s + signal * score_s(x))``
        and ``core`` is ``E[core | x] = P(stage_k = 1 | x) *
        exp(mu(x) + sigma**2 / 2)``: what a perfect model's ``predict``
        returns (DESIGN: stage probabilities, then the core's conditional
        mean in its units).

    Raises
    ------
    ValueError
        If an argument is out of range or of the wrong type; the message
        names the argument.

    Notes
    -----
    Rows are generated in chunks of 262,144 with float32 effect tables, so
    memory is dominated by the returned frames, which are built without
    copies: 10**7 rows, 20 categorical fields of cardinality 20 and 10
    numeric fields with the truth take 1.5 GB (2.1 GB peak, about 15 s on
    one core). The effect tables take ``4 * (n_stages + 2) * cardinality``
    bytes per field (16 MB for 10**6 levels and two stages).

    Examples
    --------
    >>> from sk_htlnet.datasets import make_funnel
    >>> X, Y, truth = make_funnel(1000, random_state=0, return_truth=True)
    >>> list(Y.columns)
    ['stage_1', 'stage_2', 'core']
    >>> bool((Y["stage_2"] <= Y["stage_1"]).all())
    True
    """
    n_samples = _check_int(n_samples, "n_samples", 1)
    n_stages = _check_int(n_stages, "n_stages", 0)
    n_categorical = _check_int(n_categorical, "n_categorical", 0)
    n_numeric = _check_int(n_numeric, "n_numeric", 0)
    if n_categorical + n_numeric == 0:
        raise ValueError("n_categorical + n_numeric must be at least 1, got 0.")
    cardinalities = _check_cardinality(cardinality, n_categorical)
    signal = _check_real(signal, "signal", 0.0, np.inf, closed=(True, False))
    rates = _check_stage_rates(stage_rates, n_stages)
    missing_rate = _check_real(
        missing_rate, "missing_rate", 0.0, 1.0, closed=(True, False)
    )
    rng = _make_rng(random_state)

    n_tasks = n_stages + 1
    n_components = n_tasks + 1  # common, one per stage, core
    tables = [
        rng.standard_normal((k, n_components), dtype=np.float32) for k in cardinalities
    ]
    angles = rng.uniform(0.0, 2.0 * np.pi, size=(n_numeric, n_components))
    spec = _Spec(cardinalities, tables, angles, missing_rate, signal)

    pilot_rng, rows_rng = (np.random.default_rng(s) for s in rng.integers(2**63, size=2))
    intercepts = _calibrate(spec.scores(*spec.draw_features(pilot_rng, _PILOT_SIZE)), rates)

    codes = [np.empty(n_samples, dtype=_code_dtype(k)) for k in cardinalities]
    numeric = np.empty((n_numeric, n_samples))
    stages = np.empty((n_stages, n_samples), dtype=np.int64)
    core = np.empty(n_samples)
    truth = np.empty((n_tasks, n_samples)) if return_truth else None
    for start in range(0, n_samples, _CHUNK_SIZE):
        rows = slice(start, min(start + _CHUNK_SIZE, n_samples))
        chunk_codes, chunk_numeric = spec.draw_features(rows_rng, rows.stop - start)
        for out, chunk in zip(codes, chunk_codes):
            out[rows] = chunk
        numeric[:, rows] = chunk_numeric
        scores = spec.scores(chunk_codes, chunk_numeric)
        conditional, mu = expit(intercepts[:, None] + scores[:-1]), _CORE_LOG_MEAN + scores[-1]
        stages[:, rows], core[rows] = _draw_targets(rows_rng, conditional, mu)
        if return_truth:
            truth[:, rows] = _expectations(conditional, mu)

    categorical = {
        f"cat_{i}": pd.Categorical.from_codes(c, dtype=pd.CategoricalDtype(pd.RangeIndex(k)))
        for i, (c, k) in enumerate(zip(codes, cardinalities))
    }
    # Transposed views of row-blocked arrays become pandas blocks without a copy.
    X = pd.concat([pd.DataFrame(categorical), _frame(numeric, "num_{}", start=0)], axis=1)
    Y = pd.concat([_frame(stages, "stage_{}"), pd.DataFrame({"core": core})], axis=1)
    if not return_truth:
        return X, Y
    truth = _frame(truth, "stage_{}").set_axis(Y.columns, axis=1)
    return X, Y, truth


def _frame(columns, name, start=1):
    """DataFrame whose columns are the rows of a 2-D array, named name.format(start + i)."""
    names = [name.format(start + i) for i in range(len(columns))]
    return pd.DataFrame(columns.T, columns=names, copy=False)


class _Spec:
    """The drawn structure of one funnel: feature distributions and effects."""

    def __init__(self, cardinalities, tables, angles, missing_rate, signal):
        self.cardinalities = cardinalities
        self.tables = tables  # per field, (cardinality, n_components) float32
        self.angles = angles  # (n_numeric, n_components)
        self.missing_rate = missing_rate
        self.signal = signal

    def draw_features(self, rng, size):
        """Return Zipf-like codes (one array per field) and numerics (n_numeric, size)."""
        codes = [
            np.minimum(np.exp(rng.random(size) * np.log1p(k)).astype(np.int64) - 1, k - 1)
            for k in self.cardinalities
        ]
        numeric = rng.standard_normal((len(self.angles), size))
        if self.missing_rate > 0:
            numeric[rng.random(numeric.shape) < self.missing_rate] = np.nan
        return codes, numeric

    def scores(self, codes, numeric):
        """Return the signal-scaled task scores, shape (n_stages + 1, size)."""
        levels = np.zeros((numeric.shape[1], self.angles.shape[1]), dtype=np.float32)
        for table, c in zip(self.tables, codes):
            levels += np.take(table, c, axis=0)
        missing = np.isnan(numeric)
        z = np.where(missing, 0.0, numeric)
        quadratic = np.where(missing, 0.0, (z**2 - 1.0) * np.sqrt(0.5))
        components = np.cos(self.angles).T @ z + np.sin(self.angles).T @ quadratic
        components += levels.T
        components /= np.sqrt(len(self.tables) + len(self.angles))
        common, own = components[:1], components[1:]
        return self.signal * (np.sqrt(_CORRELATION) * common + np.sqrt(1.0 - _CORRELATION) * own)


def _draw_targets(rng, conditional, mu):
    """Draw nested 0/1 stages (k, size) from their conditional probabilities, then the core."""
    n_stages, size = conditional.shape
    stages = np.empty((n_stages, size), dtype=np.int64)
    passed = np.ones(size, dtype=bool)
    for t in range(n_stages):
        passed &= rng.random(size) < conditional[t]
        stages[t] = passed
    core = np.exp(mu + _CORE_SIGMA * rng.standard_normal(size))
    return stages, np.where(passed, core, 0.0)


def _expectations(conditional, mu):
    """Return P(stage_t = 1 | x) for every stage and E[core | x], shape (k + 1, size)."""
    reach = np.cumprod(conditional, axis=0)
    last = reach[-1] if len(reach) else 1.0
    return np.vstack([reach, last * np.exp(mu + _CORE_SIGMA**2 / 2)])


def _calibrate(scores, rates):
    """Solve each stage's intercept so its conditional rate on the pilot sample is `rates[t]`."""
    reach = np.ones(scores.shape[1])
    intercepts = np.empty(len(rates))
    for t, rate in enumerate(rates):
        def gap(a):
            return np.average(expit(a + scores[t]), weights=reach) - rate

        bound = 50.0 + np.abs(scores[t]).max()  # sigmoid(-bound + score) < 2e-22 <= rate
        intercepts[t] = brentq(gap, -bound, bound, xtol=1e-10)
        reach = reach * expit(intercepts[t] + scores[t])
    return intercepts


def _code_dtype(k):
    for dtype in (np.int8, np.int16, np.int32):
        if k <= np.iinfo(dtype).max:
            return dtype
    return np.int64


def _make_rng(random_state):
    if isinstance(random_state, np.random.Generator):
        return random_state
    if isinstance(random_state, np.random.RandomState):
        return np.random.default_rng(random_state.randint(2**31))
    if random_state is None or isinstance(random_state, numbers.Integral):
        return np.random.default_rng(random_state)
    raise ValueError(
        "random_state must be an int, a numpy Generator or RandomState, or None, "
        f"got {random_state!r}."
    )


def _check_int(value, name, minimum, maximum=None):
    integral_float = isinstance(value, numbers.Real) and float(value).is_integer()
    if isinstance(value, bool) or not (isinstance(value, numbers.Integral) or integral_float):
        raise ValueError(f"{name} must be an integer, got {value!r}.")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"in [{minimum}, {maximum}]" if maximum is not None else f">= {minimum}"
        raise ValueError(f"{name} must be {bound}, got {value}.")
    return int(value)


def _check_real(value, name, low, high, closed):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or np.isnan(value):
        raise ValueError(f"{name} must be a real number, got {value!r}.")
    above = value >= low if closed[0] else value > low
    below = value <= high if closed[1] else value < high
    if not (above and below):
        interval = f"{'[' if closed[0] else '('}{low}, {high}{']' if closed[1] else ')'}"
        raise ValueError(f"{name} must be in {interval}, got {value}.")
    return float(value)


def _check_cardinality(cardinality, n_categorical):
    if np.ndim(cardinality) == 0:
        return [_check_int(cardinality, "cardinality", 1, 2**31 - 1)] * n_categorical
    values = list(cardinality)
    if len(values) != n_categorical:
        raise ValueError(
            f"cardinality must have one value per categorical field "
            f"(n_categorical={n_categorical}), got {len(values)}."
        )
    return [_check_int(k, "cardinality", 1, 2**31 - 1) for k in values]


def _check_stage_rates(stage_rates, n_stages):
    if stage_rates is None:
        return [_DEFAULT_STAGE_RATE] * n_stages
    if np.ndim(stage_rates) == 0:
        stage_rates = [stage_rates] * n_stages
    values = list(stage_rates)
    if len(values) != n_stages:
        raise ValueError(
            f"stage_rates must have one value per stage (n_stages={n_stages}), "
            f"got {len(values)}."
        )
    return [_check_real(r, "stage_rates", 0.0, 1.0, closed=(False, False)) for r in values]
