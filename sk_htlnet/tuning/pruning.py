"""Pruning a trial per epoch: optuna-integration's skorch callback, reporting in the study's direction."""

import optuna
from optuna_integration.skorch import SkorchPruningCallback


PRUNING_CALLBACK_NAME = "optuna_pruning"  # documented in sk_htlnet/tuning/__init__.py


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
