"""A synthetic hybrid funnel with known structure and an exact Bayes-optimal truth."""

import numpy as np
import pandas as pd

from ._checks import (
    check_cardinality, check_int, check_optional_real, check_per_stage, check_real,
    make_rng,
)
from ._targets import CORE_LOG_MEAN, Targets

__all__ = ["make_funnel"]

_CORRELATION = 0.5  # share of each task's score variance that is common to all tasks
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
    transfer=None,
    core_tail_index=None,
    core_scale=1.0,
    random_state=None,
    return_truth=False,
    return_latent=False,
):
    r"""Generate a hybrid funnel: nested binary stages, then a continuous core target.

    The generating process mirrors the hybrid targets of HTLNet §1. Each row
    has ``n_categorical`` categorical fields and ``n_numeric`` numeric fields.
    Every task (each stage and the core) has a score built from the same
    features::

        score_t(x) = sqrt(rho) * c(x) + sqrt(1 - rho) * s_t(x),   rho = 0.5

    where the common component ``c`` is shared by all tasks (so the stages
    and the core are correlated) and ``s_t`` is the task's own, independent
    of ``c`` and of the other tasks' (a stage-specific signal). Each
    component is a sum, scaled to about unit variance, of one random effect per
    categorical level (drawn once, standard normal) and of
    ``cos(theta) * z + sin(theta) * (z**2 - 1) / sqrt(2)`` per numeric field
    ``z`` (a random mix of a linear and a quadratic effect). The core has the
    log-mean ``mu(x) = 3 + signal * score_core(x)`` and each stage an index
    ``eta_t(x)`` with an intercept ``a_t``. Stages are nested: stage 1 is
    drawn on every row, stage t only where stage t-1 is 1.

    **Default process** (``transfer=None``): logistic stages, and a core whose
    amount, given x, does not depend on the stages::

        eta_t(x) = a_t + signal * score_t(x)
        P(stage_t = 1 | stage_{t-1} = 1, x) = sigmoid(eta_t(x))
        core = 0 unless stage_k = 1; then  core = core_scale * exp(mu(x)) * xi

    (the core is drawn on every row when ``n_stages=0``). The stages reach the
    core only through nesting and the shared score ``c``.

    **Transfer process** (``transfer=beta``, one loading ``beta_t >= 0`` per
    stage): each stage has a *utility* ``U_t = eta_t(x) + v_t`` whose residual
    ``v_t ~ Normal(0, 1)`` is drawn per row and stage, independently of x and
    of each other: a stage-specific latent that no feature carries and that
    only the stage's label reveals. A stage happens where it can and its
    utility is positive, and the core amount grows with the realised
    utilities of all stages::

        eta_t(x) = a_t + signal * score_t(x) / s,   s = pi / sqrt(3)
        stage_t = stage_{t-1} * 1[U_t > 0],   so
        P(stage_t = 1 | stage_{t-1} = 1, x) = Phi(eta_t(x))   (probit)
        core = 0 unless stage_k = 1; then
        core = core_scale * exp(mu(x) + sum_t beta_t * U_t) * xi

    Given x, the amount of a converting row depends on the stage-specific
    scores ``s_t(x)`` and on the residuals ``v_t``, truncated by the realised
    outcomes (``v_t > -eta_t(x)``)::

        E[log core | stage_k = 1, x] = log(core_scale) + E[log xi] + mu(x)
            + sum_t beta_t * (eta_t(x) + phi(eta_t(x)) / Phi(eta_t(x)))

    a function of each stage's conditional probability ``Phi(eta_t(x))``,
    which a stage tower learns from every row's label and a label embedding
    passes downstream; a row that converted against the odds (low ``eta_t``,
    so a large truncated ``v_t``) spends more. The exact truth follows from
    ``E[exp(b U) 1{U > 0}] = exp(b eta + b**2 / 2) Phi(eta + b)``::

        P(stage_t = 1 | x) = prod_{s <= t} Phi(eta_s(x))
        E[core | x] = core_scale * E[xi] * exp(mu(x))
                      * prod_t exp(beta_t eta_t(x) + beta_t**2 / 2) Phi(eta_t(x) + beta_t)

    ``s``, the logistic's standard deviation, keeps the stages as predictable
    as the default's at the same ``signal`` (the truth's stage AUCs agree
    within 0.02). The features and the scores are those of the default
    process for the same seed (the intercepts ``a_t`` are calibrated for the
    probit link), and the stages do not depend on ``beta``: ``transfer=0.0``
    draws the same X and stages as ``transfer=1.0``, with a core that ignores
    the stages given x (a matched control).

    **Core noise** ``xi``, independent of everything else: lognormal,
    ``xi = exp(sigma * e)`` with ``e ~ Normal(0, 1)``, ``sigma = 1`` and
    ``E[xi] = exp(sigma**2 / 2)``, ``E[log xi] = 0`` (``core_tail_index=None``),
    or Pareto with tail index ``alpha`` (``core_tail_index=alpha``):
    ``P(xi > u) = u**-alpha`` for ``u >= 1``, ``E[xi] = alpha / (alpha - 1)``
    and ``E[log xi] = 1 / alpha``, so the core among converting rows has a
    power-law tail, ``P(core > y | x) ~ y**-alpha``.

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
    transfer : None, float or sequence of float, default=None
        None keeps the default process (and its output, bit for bit). A
        loading ``beta_t`` in [0, inf), one for all stages or one per stage,
        selects the transfer process: the core's log amount adds
        ``beta_t * U_t`` for every stage. Values of 0.5 to 1.5 make the
        stage utilities a sizeable part of the amount (at the default rates
        the log amount's variance among converting rows, 1.85 with
        ``beta = 0``, grows by about ``0.4 * beta_t**2`` per stage).
    core_tail_index : None or float, default=None
        None keeps the lognormal core noise; a float ``alpha`` in (1, inf)
        makes it Pareto with that tail index (the mean is finite, the
        variance only for ``alpha > 2``; 1.5 is a heavy, watch-time-like tail).
    core_scale : float, default=1.0
        Unit of the core, in (0, inf): every amount and ``E[core | x]`` are
        multiplied by it (e.g. 60_000 expresses minutes as milliseconds), the
        stages are unaffected.
    random_state : int, Generator, RandomState or None, default=None
        Seed for everything (effect tables, intercepts, rows). The same
        integer always gives identical output. For train and test sets of the
        same funnel, generate once and split: another seed draws another
        funnel.
    return_truth : bool, default=False
        If True, also return the exact conditional expectations.
    return_latent : bool, default=False
        If True, also return the rows' latent variables (last in the tuple).

    Returns
    -------
    X : pandas.DataFrame of shape (n_samples, n_categorical + n_numeric)
        Columns ``cat_0, ...`` (``category`` dtype whose categories are the
        integers ``0 .. cardinality - 1``, so a level's value is its code)
        then ``num_0, ...`` (float64, standard normal, NaN where missing).
    Y : pandas.DataFrame of shape (n_samples, n_stages + 1)
        Columns ``stage_1 .. stage_k`` (int64, 0/1, nested:
        ``stage_t <= stage_{t-1}``) then ``core`` (float64, in units of
        ``core_scale``, > 0 exactly where the last stage is 1, otherwise 0).
    truth : pandas.DataFrame of shape (n_samples, n_stages + 1)
        Only when ``return_truth=True``. Same columns as Y, float64.
        ``stage_t`` is the exact entire-space probability ``P(stage_t = 1 |
        x)`` (the product of the stages' conditional probabilities above) and
        ``core`` is ``E[core | x]`` (above; for the default process
        ``P(stage_k = 1 | x) * core_scale * E[xi] * exp(mu(x))``): what a
        perfect model's ``predict`` returns (DESIGN: stage probabilities, then
        the core's conditional mean in its units).
    latent : pandas.DataFrame of shape (n_samples, 2 * n_stages + 1)
        Only when ``return_latent=True``, float64, the realised latents that
        drew Y: ``eta_1 .. eta_k`` (the stage indices ``eta_t(x)``, functions
        of x), ``utility_1 .. utility_k`` (``U_t``; for the default process
        the logistic utility ``eta_t(x) + logistic noise``; where stage t-1 is
        1, stage t is 1 exactly where ``U_t > 0``, up to rounding for the
        default process) and ``core_location`` (the core's realised
        log-location, ``mu(x) + sum_t beta_t * U_t``, or ``mu(x)``: where the
        last stage is 1, ``core = core_scale * exp(core_location) * xi``).

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
    bytes per field (16 MB for 10**6 levels and two stages), and
    ``return_latent=True`` adds ``8 * (2 * n_stages + 1)`` bytes per row.

    Examples
    --------
    >>> from sk_htlnet.datasets import make_funnel
    >>> X, Y, truth = make_funnel(1000, random_state=0, return_truth=True)
    >>> list(Y.columns)
    ['stage_1', 'stage_2', 'core']
    >>> bool((Y["stage_2"] <= Y["stage_1"]).all())
    True

    A funnel whose core amount (milliseconds, Pareto tail) grows with the
    realised stage utilities:

    >>> X, Y, latent = make_funnel(1000, transfer=0.8, core_tail_index=1.5,
    ...                            core_scale=1000.0, random_state=0, return_latent=True)
    >>> list(latent.columns)
    ['eta_1', 'eta_2', 'utility_1', 'utility_2', 'core_location']
    """
    n_samples = check_int(n_samples, "n_samples", 1)
    n_stages = check_int(n_stages, "n_stages", 0)
    n_categorical = check_int(n_categorical, "n_categorical", 0)
    n_numeric = check_int(n_numeric, "n_numeric", 0)
    if n_categorical + n_numeric == 0:
        raise ValueError("n_categorical + n_numeric must be at least 1, got 0.")
    cardinalities = check_cardinality(cardinality, n_categorical)
    signal = check_real(signal, "signal", 0.0, np.inf, closed=(True, False))
    rates = [_DEFAULT_STAGE_RATE] * n_stages if stage_rates is None else check_per_stage(
        stage_rates, "stage_rates", n_stages, 0.0, 1.0, closed=(False, False)
    )
    missing_rate = check_real(missing_rate, "missing_rate", 0.0, 1.0, closed=(True, False))
    if transfer is not None:
        transfer = check_per_stage(transfer, "transfer", n_stages, 0.0, np.inf, (True, False))
    targets = Targets(
        transfer,
        check_optional_real(core_tail_index, "core_tail_index", 1.0, np.inf, (False, False)),
        check_real(core_scale, "core_scale", 0.0, np.inf, closed=(False, False)),
    )
    return_truth, return_latent = bool(return_truth), bool(return_latent)
    rng = make_rng(random_state)

    n_tasks = n_stages + 1
    n_components = n_tasks + 1  # common, one per stage, core
    tables = [
        rng.standard_normal((k, n_components), dtype=np.float32) for k in cardinalities
    ]
    angles = rng.uniform(0.0, 2.0 * np.pi, size=(n_numeric, n_components))
    spec = _Spec(cardinalities, tables, angles, missing_rate, signal)

    pilot_rng, rows_rng = (np.random.default_rng(s) for s in rng.integers(2**63, size=2))
    pilot = spec.scores(*spec.draw_features(pilot_rng, _PILOT_SIZE))
    intercepts = targets.calibrate(pilot, rates)

    codes = [np.empty(n_samples, dtype=_code_dtype(k)) for k in cardinalities]
    numeric = np.empty((n_numeric, n_samples))
    stages = np.empty((n_stages, n_samples), dtype=np.int64)
    core = np.empty(n_samples)
    truth = np.empty((n_tasks, n_samples)) if return_truth else None
    latent = np.empty((2 * n_stages + 1, n_samples)) if return_latent else None
    for start in range(0, n_samples, _CHUNK_SIZE):
        rows = slice(start, min(start + _CHUNK_SIZE, n_samples))
        chunk_codes, chunk_numeric = spec.draw_features(rows_rng, rows.stop - start)
        for out, chunk in zip(codes, chunk_codes):
            out[rows] = chunk
        numeric[:, rows] = chunk_numeric
        scores = spec.scores(chunk_codes, chunk_numeric)
        eta, mu = targets.index(intercepts, scores[:-1]), CORE_LOG_MEAN + scores[-1]
        prob = targets.link(eta)
        stages[:, rows], core[rows], drawn = targets.draw(rows_rng, eta, prob, mu, return_latent)
        if return_truth:
            truth[:, rows] = targets.expectations(eta, prob, mu)
        if return_latent:
            latent[:, rows] = np.vstack([eta, *drawn])

    categorical = {
        f"cat_{i}": pd.Categorical.from_codes(c, dtype=pd.CategoricalDtype(pd.RangeIndex(k)))
        for i, (c, k) in enumerate(zip(codes, cardinalities))
    }
    # Transposed views of row-blocked arrays become pandas blocks without a copy.
    X = pd.concat([pd.DataFrame(categorical), _frame(numeric, "num_{}", start=0)], axis=1)
    Y = pd.concat([_frame(stages, "stage_{}"), pd.DataFrame({"core": core})], axis=1)
    out = [X, Y]
    if return_truth:
        out.append(_frame(truth, "stage_{}").set_axis(Y.columns, axis=1))
    if return_latent:
        names = [f"{p}_{t + 1}" for p in ("eta", "utility") for t in range(n_stages)]
        out.append(_frame(latent, "{}").set_axis([*names, "core_location"], axis=1))
    return tuple(out)


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


def _code_dtype(k):
    for dtype in (np.int8, np.int16, np.int32):
        if k <= np.iinfo(dtype).max:
            return dtype
    return np.int64


