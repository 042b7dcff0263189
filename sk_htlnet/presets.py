"""Named parameter sets for :class:`~sk_htlnet.HTLNetRegressor`: the paper's configuration."""

__all__ = ["paper_params"]

_PAPER = dict(
    architecture="htlnet",
    gradient_adjustment="htlnet",
    numeric_encoding="linear",
    core_loss="mse",
    target_transform="none",
    sparse_updates=False,
    batch_size=1024,
    learning_rate=1e-3,
)


def paper_params(**overrides):
    """HTLNetRegressor parameters of HTLNet as the paper trains it (Tang et al., RecSys 2024).

    The paper's model and losses where our defaults differ: numeric fields embedded linearly
    (``numeric_encoding="linear"``), the squared error on the core target in its own units
    (``core_loss="mse"``, ``target_transform="none"``), dense Adam on the embedding tables
    (``sparse_updates=False``), Adam at 1e-3 with batches of 1024 (a re-implementation's values;
    docs/method.md). The gradient rule keeps ``relax_factor="auto"`` and ``clip_ratio="auto"``,
    which on a core in its own units resolve to gamma = 1 and a C that scales with the core's
    variance (:func:`sk_htlnet.gradient.resolve_rule`); pass ``relax_factor=0.1, clip_ratio=10.0``
    for the re-implementation's fixed values. Predictions are still returned in the core's units.

    Parameters
    ----------
    **overrides
        Parameters to set on top (``random_state``, ``max_iter``, an ablation switch, ...).

    Returns
    -------
    dict
        A new dict, for ``HTLNetRegressor(**paper_params())``.

    Raises
    ------
    ValueError
        If an override is not an HTLNetRegressor parameter.

    Examples
    --------
    >>> from sk_htlnet import HTLNetRegressor, paper_params
    >>> est = HTLNetRegressor(**paper_params(random_state=0))
    >>> est.target_transform, est.numeric_encoding
    ('none', 'linear')
    >>> without_architecture = HTLNetRegressor(**paper_params(architecture="shared_bottom"))
    """
    from .estimator import HTLNetRegressor

    unknown = sorted(set(overrides) - set(HTLNetRegressor().get_params()))
    if unknown:
        raise ValueError(f"paper_params: {unknown} are not HTLNetRegressor parameters")
    return {**_PAPER, **overrides}
