"""What a fit prints: the per-epoch table (``verbose=1``) and a per-batch progress bar
(``verbose=2``), both skorch callbacks.  The table has ANSI colours only on a terminal (never in a
redirected log, nor with the ``NO_COLOR`` environment variable set) and leaves each task's training
loss to ``history_``, so that it stays narrow."""

import os
import sys

from skorch.callbacks import PrintLog, ProgressBar
from skorch.utils import Ansi

__all__ = ["EpochLog", "log_callbacks"]


def _colours():
    return hasattr(sys.stdout, "isatty") and sys.stdout.isatty() and not os.environ.get("NO_COLOR")


class EpochLog(PrintLog):
    """skorch's ``PrintLog`` that marks the best values in colour only on a terminal."""

    def format_row(self, row, key, color):
        if _colours():
            return super().format_row(row, key, color)
        value = super().format_row(row, key, "")
        return value.replace(Ansi.ENDC.value, "") if isinstance(value, str) else value


def log_callbacks(task_names, verbose):
    """The ``(name, callback)`` pairs that print a fit's progress.

    Parameters
    ----------
    task_names : sequence of str
        The tasks, whose ``train_loss_<name>`` the table leaves out (``history_`` has them).
    verbose : int
        0 or 1: the table (skorch prints it only when the net's ``verbose`` is set); 2 or more:
        also a per-batch progress bar (tqdm's, through skorch's ``ProgressBar``).

    Returns
    -------
    list of (str, skorch.callbacks.Callback)
        ``("print_log", EpochLog)``, then ``("progress_bar", ProgressBar)`` for ``verbose >= 2``.
    """
    callbacks = [("print_log", EpochLog(keys_ignored=[f"train_loss_{name}" for name in task_names]))]
    if verbose >= 2:
        callbacks.append(("progress_bar", ProgressBar()))
    return callbacks
