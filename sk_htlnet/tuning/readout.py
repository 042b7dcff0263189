"""Reading a study: Optuna's trials table with one kind of number in the ``value`` column."""

import numpy as np
import optuna

_OPTUNA_ATTRS = ("number", "value", "datetime_start", "datetime_complete", "duration", "params",
                 "user_attrs", "system_attrs", "state")  # study.trials_dataframe's default


def trials_dataframe(study, attrs=_OPTUNA_ATTRS, multi_index=False):
    """``study.trials_dataframe()`` with a value only for completed trials.

    Optuna records a pruned trial's last intermediate value as its ``value``. With the pruning of
    :func:`make_objective` that is the monitored loss (negated in a ``"maximize"`` study), a
    different quantity from the metric that completed trials return, so Optuna's own table mixes
    the two in one column. This table is Optuna's with ``value`` set to NaN on every trial that
    is not ``COMPLETE``; a pruned trial's loss stays readable in its user attributes
    (``user_attrs_pruned_valid_loss`` and ``user_attrs_pruned_epoch`` with the default
    ``monitor``) and its per-epoch reports in ``trial.intermediate_values``. The study itself is
    not changed: its samplers and pruners read the intermediate values, not this table.

    Parameters
    ----------
    study : optuna.Study
        Any study, for instance one optimised with :func:`make_objective`.
    attrs : tuple of str, default=Optuna's
        The ``FrozenTrial`` attributes to show, as for ``study.trials_dataframe``.
    multi_index : bool, default=False
        As for ``study.trials_dataframe``: nested columns (``("params", "tau")``) instead of
        flat names joined with ``_`` (``"params_tau"``).

    Returns
    -------
    frame : pandas.DataFrame
        One row per trial (empty for a study without trials), the columns of
        ``study.trials_dataframe(attrs, multi_index)``.
    """
    attrs = tuple(attrs)
    extra = () if "state" in attrs else ("state",)
    frame = study.trials_dataframe(attrs=attrs + extra, multi_index=True)
    if frame.empty:
        return frame
    unfinished = (frame[("state", "")] != optuna.trial.TrialState.COMPLETE.name).to_numpy()
    value_columns = [column for column in frame.columns if column[0] in ("value", "values")]
    if value_columns and unfinished.any():
        frame[value_columns] = frame[value_columns].astype(float)
        frame.loc[unfinished, value_columns] = np.nan
    if extra:
        frame = frame.drop(columns=[("state", "")])
    if not multi_index:  # flatten as Optuna does: ("params", "tau") -> "params_tau", ("value", "") -> "value"
        frame.columns = ["_".join(filter(None, map(str, column))) for column in frame.columns]
    return frame
