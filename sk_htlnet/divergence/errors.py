"""The error a diverged fit raises: :class:`TrainingDivergedError`, and the learning rate it suggests."""

__all__ = ["LEARNING_RATE_STEP", "TrainingDivergedError", "learning_rates"]

LEARNING_RATE_STEP = 10.0
"""The remedy's suggested learning rate is the current one divided by this."""


def learning_rates(net):
    """The net's learning rate and the lower one a remedy suggests (divided by ``LEARNING_RATE_STEP``).

    Parameters
    ----------
    net : skorch.NeuralNet
        The net that diverged.

    Returns
    -------
    lr, lower : float
    """
    lr = float(net.lr)
    return lr, lr / LEARNING_RATE_STEP


class TrainingDivergedError(FloatingPointError):
    """Raised by ``fit`` (and ``partial_fit``) when training diverges.

    Training has diverged when a task's training loss becomes NaN or infinite (checked at every
    batch), or when, at the end of an epoch, a task's epoch training loss is more than
    ``sk_htlnet.divergence.MAX_LOSS_RATIO`` (10) times as far above the loss's lower bound as
    the loss of the best constant prediction (the head priors) on the same rows.  The rule and the
    measurements behind it: :mod:`sk_htlnet.divergence`.

    Before it is raised the net is put back to its best weights so far: with early stopping those
    of the epoch with the lowest validation loss, otherwise those of the epoch with the lowest
    training loss (``train_loss``) among the epochs of this call that passed the check, or, when
    none did, the weights the net had when a continued fit (``warm_start``, ``partial_fit``)
    started.  :class:`~sk_htlnet.HTLNetRegressor` is then left fitted on those weights (``history_``
    holds every epoch run, the diverged one included), or unfitted when a fresh fit diverged in its
    first epoch (``best_epoch`` is None).

    Attributes
    ----------
    reason : {"nan", "blow-up", "dead"} or None
        Which rule fired: a NaN or infinite batch loss, the loss ratio, or (at the end of training,
        raised by the estimator) every head's output constant across training rows whose inputs
        differ; for "dead" a fresh fit is left unfitted, a continued one keeps the network
        (``best_epoch`` its last epoch), ``task`` is the first task and ``tasks`` all of them.
    task : str or None
        The diverged task: the first with a NaN or infinite loss, or the one with the largest ratio.
    tasks : list of str
        Every task that diverged at that point.
    epoch : int or None
        The epoch (1-based, as in ``history_``) in which the divergence was found.
    best_epoch : int or None
        The epoch whose weights the net holds now (0: the weights before any epoch of its history,
        as for a model from :func:`~sk_htlnet.io.load_model`), or None when no weights were kept.
    loss : float or None
        ``task``'s loss at the divergence (its epoch training loss, or the batch's NaN or infinity).
    reference : float or None
        ``task``'s base-rate loss ``L0`` on the last epoch's training batches (None if it could not
        be computed, and for "dead").
    ratio : float or None
        ``(loss - F) / (reference - F)`` for a finite blow-up (``reason="blow-up"``), else None.
    learning_rate : float or None
        The learning rate of the diverged run.
    suggested_learning_rate : float or None
        ``learning_rate / 10``, the value the message suggests.
    """

    def __init__(self, message, *, reason=None, task=None, tasks=(), epoch=None, best_epoch=None, loss=None,
                 reference=None, ratio=None, learning_rate=None, suggested_learning_rate=None):
        super().__init__(message)
        self.reason = reason
        self.task = task
        self.tasks = list(tasks)
        self.epoch = epoch
        self.best_epoch = best_epoch
        self.loss = loss
        self.reference = reference
        self.ratio = ratio
        self.learning_rate = learning_rate
        self.suggested_learning_rate = suggested_learning_rate


TrainingDivergedError.__module__ = "sk_htlnet.divergence"  # its home in tracebacks and pickles
