"""Argument checks of make_funnel; every message names the argument."""

import numbers

import numpy as np


def make_rng(random_state):
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


def check_int(value, name, minimum, maximum=None):
    integral_float = isinstance(value, numbers.Real) and float(value).is_integer()
    if isinstance(value, bool) or not (isinstance(value, numbers.Integral) or integral_float):
        raise ValueError(f"{name} must be an integer, got {value!r}.")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"in [{minimum}, {maximum}]" if maximum is not None else f">= {minimum}"
        raise ValueError(f"{name} must be {bound}, got {value}.")
    return int(value)


def check_real(value, name, low, high, closed):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or np.isnan(value):
        raise ValueError(f"{name} must be a real number, got {value!r}.")
    above = value >= low if closed[0] else value > low
    below = value <= high if closed[1] else value < high
    if not (above and below):
        interval = f"{'[' if closed[0] else '('}{low}, {high}{']' if closed[1] else ')'}"
        raise ValueError(f"{name} must be in {interval}, got {value}.")
    return float(value)


def check_cardinality(cardinality, n_categorical):
    if np.ndim(cardinality) == 0:
        return [check_int(cardinality, "cardinality", 1, 2**31 - 1)] * n_categorical
    values = list(cardinality)
    if len(values) != n_categorical:
        raise ValueError(
            f"cardinality must have one value per categorical field "
            f"(n_categorical={n_categorical}), got {len(values)}."
        )
    return [check_int(k, "cardinality", 1, 2**31 - 1) for k in values]


def check_per_stage(values, name, n_stages, low, high, closed):
    """One real per stage from a scalar (for all stages) or a sequence of n_stages values."""
    if isinstance(values, str):
        raise ValueError(f"{name} must be a real number or a sequence of them, got {values!r}.")
    if np.ndim(values) == 0:
        values = [values] * n_stages
    values = list(values)
    if len(values) != n_stages:
        raise ValueError(
            f"{name} must have one value per stage (n_stages={n_stages}), got {len(values)}."
        )
    return [check_real(v, name, low, high, closed) for v in values]


def check_optional_real(value, name, low, high, closed):
    return None if value is None else check_real(value, name, low, high, closed)

