"""The skorch ``NeuralNet`` subclass behind :class:`~sk_htlnet.HTLNetRegressor`.

It adds to skorch's loop (DESIGN.md): a hybrid loss with label masks, a train step that applies a
gradient-adjustment strategy (:mod:`sk_htlnet.gradient`) to the shared embedding, per-task loss
entries in the history, a fast tensor batch iterator, and seeded private random generators so that
a fixed seed gives bit-identical fits on CPU without touching the global torch seed.
"""

import contextlib
import copy

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from skorch import NeuralNet
from skorch.callbacks import PassthroughScoring
from skorch.utils import TeeGenerator, to_tensor
from torch import nn
from torch.nn import functional as F

from .divergence import TrainingDivergedError, find_monitor

__all__ = ["BatchIterator", "FunnelDataset", "FunnelValidSplit", "HybridLoss", "HybridNet",
           "core_loss_width", "core_mean"]

INPUT_KEYS = ("cat", "num", "num_missing")


class FunnelDataset(torch.utils.data.Dataset):
    """Tensors of an encoded funnel data set, built once and sliced per batch.

    Parameters
    ----------
    cat : int32 or int64 array-like (n, n_categorical)
        Per-field ids, kept in their integer type (other types become int64).
    num : float32 array-like (n, n_numeric), missing values set to 0
    num_missing : bool array-like (n, n_numeric)
    y : float32 array-like (n, n_tasks), NaN for a missing label, optional
    sample_weight : float32 array-like (n,), optional
        Per-row loss weights; batches then carry them under the key ``"sample_weight"``.

    Notes
    -----
    Arrays of the right dtype are shared with the caller, not copied.  :meth:`subset` gives a view
    of some rows: the tensors stay shared and only the row indices are stored (``rows``).
    """

    def __init__(self, cat, num, num_missing, y=None, sample_weight=None):
        self.cat = torch.as_tensor(cat)
        if self.cat.dtype not in (torch.int32, torch.int64):
            self.cat = self.cat.long()
        self.num = torch.as_tensor(num, dtype=torch.float32)
        self.num_missing = torch.as_tensor(num_missing, dtype=torch.bool)
        self.y = None if y is None else torch.as_tensor(y, dtype=torch.float32)
        self.sample_weight = None if sample_weight is None else torch.as_tensor(sample_weight, dtype=torch.float32)
        self.rows = None  # int64 row indices of a view made by subset(); None: every row

    def __len__(self):
        return self.cat.shape[0] if self.rows is None else self.rows.numel()

    def _slice(self, idx):
        if self.rows is not None:
            idx = self.rows[idx]
        x = {"cat": self.cat[idx], "num": self.num[idx], "num_missing": self.num_missing[idx]}
        if self.sample_weight is not None:
            x["sample_weight"] = self.sample_weight[idx]
        y = None if self.y is None else self.y[idx]
        return x, y

    def __getitem__(self, i):
        x, y = self._slice(i)
        return x, (torch.zeros(0) if y is None else y)

    def targets(self):
        """The labels of this data set's rows, float32 (len(self), n_tasks), or None."""
        if self.y is None or self.rows is None:
            return self.y
        return self.y[self.rows]

    def subset(self, idx):
        """A view of the rows ``idx`` of this data set (positions in it): no tensor is copied."""
        view = copy.copy(self)
        idx = torch.as_tensor(np.asarray(idx), dtype=torch.long)
        view.rows = idx if self.rows is None else self.rows[idx]
        return view


class BatchIterator:
    """Yields ``(X_dict, y)`` batches by slicing a :class:`FunnelDataset` (no per-row Python)."""

    def __init__(self, dataset, batch_size, shuffle=False, generator=None):
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.generator = generator

    def __len__(self):
        return -(-len(self.dataset) // self.batch_size)

    def __iter__(self):
        n = len(self.dataset)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else None
        for start in range(0, n, self.batch_size):
            stop = min(start + self.batch_size, n)
            idx = order[start:stop] if order is not None else slice(start, stop)
            yield self.dataset._slice(idx)


class FunnelValidSplit:
    """Hold out a validation fraction, stratified on funnel depth, never on the core target.

    The funnel depth of a row is the number of stages it passed (0..k).  Stratifying on it keeps the
    rare late stages represented in the validation set; with missing stage labels, or a depth class
    too small to split, the split is a plain shuffle.

    Parameters
    ----------
    validation_fraction : float in (0, 1)
    n_stages : int
    random_state : int or None
    """

    def __init__(self, validation_fraction, n_stages, random_state=None):
        self.validation_fraction = validation_fraction
        self.n_stages = n_stages
        self.random_state = random_state

    def __call__(self, dataset, y=None, **fit_params):
        n = len(dataset)
        stratify = None
        y = dataset.targets()
        if self.n_stages and y is not None:
            stages = y[:, : self.n_stages].numpy()
            if not np.isnan(stages).any():
                depth = stages.sum(axis=1).astype(int)
                counts = np.bincount(depth)
                n_valid = int(np.ceil(self.validation_fraction * n))
                n_classes = (counts > 0).sum()
                if counts[counts > 0].min() >= 2 and min(n_valid, n - n_valid) >= n_classes:
                    stratify = depth
        train_idx, valid_idx = train_test_split(
            np.arange(n),
            test_size=self.validation_fraction,
            random_state=self.random_state,
            stratify=stratify,
        )
        return dataset.subset(np.sort(train_idx)), dataset.subset(np.sort(valid_idx))


CORE_LOSSES = ("mse", "ziln", "tweedie")
_HALF_LOG_2PI = 0.5 * float(np.log(2 * np.pi))


def core_loss_width(core_loss):
    """Outputs of the core head each core loss needs: 3 for "ziln" (logit, mu, sigma), else 1."""
    return 3 if core_loss == "ziln" else 1


ZILN_MIN_SIGMA = 1e-3  # the floor of the lognormal's sigma (also behind the ZILN loss's lower bound)


def ziln_parameters(out):
    """(logit, mu, sigma) of the zero-inflated lognormal from the core head's 3 outputs (..., 3)."""
    logit, mu, raw_sigma = out.unbind(-1)
    return logit, mu, F.softplus(raw_sigma).clamp(min=ZILN_MIN_SIGMA, max=20.0)


def core_mean(out, core_loss):
    """Conditional mean of the (scaled) core target from the core head's outputs, float (n,).

    "mse": the output itself.  "ziln": ``sigmoid(logit) * exp(mu + sigma^2 / 2)`` (the mean of a
    lognormal times the probability of a positive amount; Wang et al., 2019).  "tweedie": ``exp(eta)``
    (log link).  Works on torch tensors and NumPy arrays alike.
    """
    if core_loss == "mse":
        return out[..., 0]
    is_torch = isinstance(out, torch.Tensor)
    t = out if is_torch else torch.as_tensor(out)
    if core_loss == "ziln":
        logit, mu, sigma = ziln_parameters(t)
        mean = torch.sigmoid(logit) * torch.exp((mu + 0.5 * sigma**2).clamp(max=80.0))
    else:
        mean = torch.exp(t[..., 0].clamp(max=80.0))
    return mean if is_torch else mean.numpy()


class HybridLoss(nn.Module):
    """Per-task losses for hybrid targets (HTLNet §3): BCE for each stage, ``core_loss`` for the core.

    Parameters
    ----------
    n_stages : int
        Number k of binary stages (the first k columns).
    core_scale : float, default=1.0
        Variance of the (transformed) core target on the training data; the *monitored* total
        divides the core MSE by it so that no task dominates by its units (DESIGN.md).
    task_weights : sequence of float, optional
        Static weight of each task in the optimised loss (default all 1).
    pos_weight : sequence of float, optional
        Weight of the positive class in each stage's BCE (``torch`` ``pos_weight``); default all 1.
    uncertainty : bool, default=False
        Learn Kendall et al.'s (2018) per-task log-variances ``s_t`` and optimise
        ``exp(-s) L + s / 2`` per stage and ``exp(-s) L / 2 + s / 2`` for the core (see :meth:`objective`).
    core_loss : {"mse", "ziln", "tweedie"}, default="mse"
        Loss of the core target y (a non-negative amount for "ziln" and "tweedie"):

        - "mse": ``(out - y)^2`` (HTLNet §3);
        - "ziln": the negative log-likelihood of the zero-inflated lognormal (Wang et al., 2019,
          "A Deep Probabilistic Model for Customer Lifetime Value Prediction", eq. 2-4): the BCE of
          ``1[y > 0]`` on ``logit``, plus, for ``y > 0``,
          ``log y + log sigma + log(2 pi) / 2 + (log y - mu)^2 / (2 sigma^2)``;
        - "tweedie": the Tweedie negative log-likelihood with log link and power ``p`` (up to terms
          free of the prediction; Jorgensen, 1987): ``-y exp((1 - p) eta) / (1 - p) + exp((2 - p) eta) / (2 - p)``.
    tweedie_power : float in (1, 2), default=1.5
    core_loss_scale : float, default=1.0
        Factor of the core's squared error (``core_loss="mse"``): the estimator trains
        ``target_transform="none"`` on the standardised core z and passes the core's training
        variance here, so that the loss is the squared error in the target's own units (HTLNet §3's
        raw MSE) while the network's outputs stay of order 1 (capped at 1e12, see
        ``core_report_scale``).
    core_report_scale : float, default=1.0
        Factor from the optimised core loss to the one the history reports (float64): the core's
        variance over ``core_loss_scale`` when the cap applies, so the history always holds the
        squared error in the target's units.

    Notes
    -----
    ``forward(y_pred, y_true, sample_weight=None)`` takes float32 (batch, k + m) stage logits and the
    core head's m outputs (:func:`core_loss_width`), float32 (batch, k + 1) labels with NaN for
    missing, and optional float32 (batch,) row weights; returns float32 (k + 1,) per-task (weighted)
    mean losses over the observed labels.  A task with no observed label in the batch gets loss 0
    and no gradient.
    """

    def __init__(self, n_stages, core_scale=1.0, task_weights=None, pos_weight=None, uncertainty=False,
                 core_loss="mse", tweedie_power=1.5, core_loss_scale=1.0, core_report_scale=1.0):
        super().__init__()
        if core_loss not in CORE_LOSSES:
            raise ValueError(f"core_loss must be one of {CORE_LOSSES}, got {core_loss!r}")
        self.core_loss = core_loss
        self.tweedie_power = float(tweedie_power)
        self.core_loss_scale = float(core_loss_scale)
        self.core_report_scale = float(core_report_scale)
        self.log_vars = nn.Parameter(torch.zeros(int(n_stages) + 1)) if uncertainty else None
        pos = torch.ones(int(n_stages)) if pos_weight is None else pos_weight
        self.register_buffer("pos_weight", torch.as_tensor(pos, dtype=torch.float32))
        self.n_stages = int(n_stages)
        self.core_scale = float(core_scale)
        weights = torch.ones(self.n_stages + 1) if task_weights is None else task_weights
        self.register_buffer("task_weights", torch.as_tensor(weights, dtype=torch.float32))
        monitor = torch.ones(self.n_stages + 1)
        monitor[-1] = 1.0 / self.core_scale
        self.register_buffer("monitor_weights", monitor)

    def history_factors(self):
        """Factors from each task's optimised loss to the loss the history reports, float64 (k + 1,):
        1 for every task but the core's ``core_report_scale`` (the squared error in the target's
        units under a capped ``core_loss_scale``; 1 for a criterion pickled before it existed)."""
        factors = np.ones(self.n_stages + 1)
        factors[-1] = getattr(self, "core_report_scale", 1.0)
        return factors

    def objective(self, task_losses):
        """The per-task terms that are optimised (:meth:`objective_term` of each), float32 (k + 1,)."""
        return torch.stack([self.objective_term(t, loss) for t, loss in enumerate(task_losses)])

    def core_per_row(self, out, y):
        """Per-row core loss, (batch,), for the core head's outputs ``out`` (batch, m) and labels y."""
        if self.core_loss == "mse":
            error = (out[:, 0] - y) ** 2
            return error if self.core_loss_scale == 1.0 else self.core_loss_scale * error
        if self.core_loss == "ziln":
            logit, mu, sigma = ziln_parameters(out)
            positive = y > 0
            bce = F.binary_cross_entropy_with_logits(logit, positive.to(out.dtype), reduction="none")
            log_y = torch.log(torch.where(positive, y, torch.ones_like(y)))
            nll = log_y + torch.log(sigma) + _HALF_LOG_2PI + 0.5 * ((log_y - mu) / sigma) ** 2
            return bce + torch.where(positive, nll, torch.zeros_like(nll))
        p = self.tweedie_power
        eta = out[:, 0].clamp(-40.0, 40.0)
        return -y * torch.exp((1 - p) * eta) / (1 - p) + torch.exp((2 - p) * eta) / (2 - p)

    def task_loss(self, t, out, y_true, sample_weight=None):
        """Task t's (weighted) mean loss, a 0-d tensor, from its own head output ``out``
        (batch, width) and the labels ``y_true`` (batch, k + 1); the graph holds only ``out``."""
        y = y_true[:, t]
        observed = ~torch.isnan(y)
        target = torch.where(observed, y, torch.zeros_like(y))
        if t < self.n_stages:
            per_row = F.binary_cross_entropy_with_logits(out[:, 0], target, pos_weight=self.pos_weight[t],
                                                         reduction="none")
        else:
            per_row = self.core_per_row(out, target)
        mask = observed.to(per_row.dtype)
        if sample_weight is not None:
            mask = mask * sample_weight
        return (per_row * mask).sum() / mask.sum().clamp_min(1.0)

    def objective_term(self, t, loss):
        """Task t's optimised term for its 0-d ``loss``: the static task weight, and with
        ``uncertainty`` Kendall et al.'s ``scale exp(-s_t) L + s_t / 2`` (scale 1/2 for the
        regression, 1 for a classification)."""
        term = loss * self.task_weights[t]
        if self.log_vars is not None:
            scale = 0.5 if t == self.n_stages else 1.0
            term = scale * torch.exp(-self.log_vars[t]) * term + 0.5 * self.log_vars[t]
        return term

    def forward(self, y_pred, y_true, sample_weight=None):
        k = self.n_stages
        outputs = [y_pred[:, t : t + 1] for t in range(k)] + [y_pred[:, k:]]
        return torch.stack([self.task_loss(t, out, y_true, sample_weight) for t, out in enumerate(outputs)])


_LARGE_GRADIENT = 1e10


def _combine_scaled(strategy, grads):
    """``strategy.combine(grads)``, computed on ``grads / s`` and scaled back by ``s = max |grads|``
    when the gradients are so large (a core loss in raw units, ``target_transform="none"``) that
    their squared norms would overflow float32.  Every strategy is positively homogeneous of degree
    1 (projections, norm ratios and sums), so this changes nothing but the overflow."""
    scale = grads.abs().max()
    if not bool(torch.isfinite(scale)) or float(scale) <= _LARGE_GRADIENT:
        return strategy.combine(grads)
    return strategy.combine(grads / scale) * scale


class HybridNet(NeuralNet):
    """skorch ``NeuralNet`` for hybrid funnel targets.

    Parameters
    ----------
    module : torch module class or instance
        A model whose ``forward(cat, num, num_missing, generator=None)`` returns (batch, k + 1); for a
        gradient strategy that needs per-task gradients it must also provide ``embed``,
        ``forward_from_embedding`` and an ``embedding`` with ``sparse_grad`` / ``set_sparse_grad``
        (see :class:`sk_htlnet.modules.HTLNet`).
    task_names : sequence of str
        Names of the k + 1 tasks; the history holds ``train_loss_<name>`` and ``valid_loss_<name>``.
    gradient_strategy : sk_htlnet.gradient.GradientStrategy, optional
        Applied to the shared embedding's gradient; None sums the task gradients.
    seed : int, optional
        Seeds parameter initialisation, the batch shuffle and the Gumbel noise through private
        generators (the global torch seed is left untouched).
    sparse_updates : bool, default=False
        Train every embedding table with ``torch.optim.SparseAdam`` (``embedding_optimizer_``, lazy
        Adam: only the rows present in a batch and their moments are updated) and the other
        parameters with ``optimizer``.  A step then costs O(batch) on the tables, not O(table size).
    record_gradient_norms : bool, default=False
        Record, per batch, the norm of each task's gradient on the shared embedding before any
        adjustment under the history keys ``grad_norm_<name>`` (the paper's Figure 5).  Forces one
        backward pass per task even for ``gradient_adjustment="none"``.
    **kwargs
        Passed to :class:`skorch.NeuralNet`.

    Notes
    -----
    History keys: ``train_loss`` and ``valid_loss`` are the monitored totals (stage BCEs plus the
    core loss divided by ``criterion__core_scale``, which is 1 for the likelihood losses); ``train_loss_<name>`` / ``valid_loss_<name>`` are
    each task's optimised loss (the core's on its transformed scale), averaged over batches weighted
    by batch size.
    """

    def __init__(self, module, *args, task_names=("core",), gradient_strategy=None, seed=None,
                 record_gradient_norms=False, sparse_updates=False, criterion=HybridLoss, **kwargs):
        super().__init__(module, *args, criterion=criterion, **kwargs)
        self.sparse_updates = sparse_updates
        self.task_names = task_names
        self.gradient_strategy = gradient_strategy
        self.seed = seed
        self.record_gradient_norms = record_gradient_norms

    def notify(self, method_name, **cb_kwargs):
        """skorch's notify, except that a callback stopping training at the end of an epoch
        (early stopping raises ``KeyboardInterrupt``) no longer keeps the later callbacks, such as
        the epoch table, from seeing that epoch."""
        if method_name != "on_epoch_end":
            return super().notify(method_name, **cb_kwargs)
        getattr(self, method_name)(self, **cb_kwargs)
        stop = None
        for _, cb in self.callbacks_:
            try:
                getattr(cb, method_name)(self, **cb_kwargs)
            except KeyboardInterrupt as exc:
                stop = exc
        if stop is not None:
            raise stop

    # ---- set-up -------------------------------------------------------------------------------
    def get_default_callbacks(self):
        callbacks = list(super().get_default_callbacks())
        for name in self.task_names:
            callbacks.append((f"train_loss_{name}", PassthroughScoring(name=f"train_loss_{name}", on_train=True)))
            callbacks.append((f"valid_loss_{name}", PassthroughScoring(name=f"valid_loss_{name}")))
        return callbacks

    def _seeds(self):
        rng = np.random.default_rng(self.seed)
        return [int(s) for s in rng.integers(0, 2**62, size=4)]  # init, shuffle, Gumbel noise, dropout

    def initialize_module(self):
        init_seed = self._seeds()[0]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(init_seed)
            return super().initialize_module()

    def forward_at_initialisation(self, dataset):
        """The module's eval-mode output on ``dataset`` with the weights it was initialised with
        (the seeded initialisation of :meth:`initialize_module`), as a tensor of shape (rows,
        outputs); the trained weights are restored afterwards."""
        trained = {key: value.detach().clone() for key, value in self.module_.state_dict().items()}
        current = self.module_
        try:
            self.initialize_module()
            initial = self.module_.state_dict()
        finally:
            self.module_ = current
        try:
            self.module_.load_state_dict(initial)
            return self.forward(dataset, training=False)
        finally:
            self.module_.load_state_dict(trained)

    def _tables(self):
        """The embedding tables of the module (the parameters SparseAdam trains)."""
        from .modules.embedding import SharedEmbedding

        return [m for m in self.module_.modules() if isinstance(m, SharedEmbedding)]

    def initialize_optimizer(self, *args, **kwargs):
        """``optimizer`` on every parameter, or, with ``sparse_updates``, on all but the embedding
        tables, which get ``torch.optim.SparseAdam`` (same ``lr``, ``optimizer__betas`` and
        ``optimizer__eps`` when set; SparseAdam has no weight decay) as ``embedding_optimizer_``."""
        embeddings = self._tables()
        for emb in embeddings:
            emb.sparse = bool(self.sparse_updates)
        if not self.sparse_updates:
            return super().initialize_optimizer(*args, **kwargs)
        tables = {id(emb.table) for emb in embeddings}
        named = list(self.get_all_learnable_params())
        dense = [(n, p) for n, p in named if id(p) not in tables]
        args, kwargs = self.get_params_for_optimizer("optimizer", dense)
        self.optimizer_ = self.optimizer(*args, **kwargs)
        options = {k: v for k, v in kwargs.items() if k in ("lr", "betas", "eps")}
        self.embedding_optimizer_ = torch.optim.SparseAdam([p for _, p in named if id(p) in tables], **options)
        return self

    def initialize(self):
        super().initialize()
        _, shuffle_seed, noise_seed, dropout_seed = self._seeds()
        self.shuffle_generator_ = torch.Generator().manual_seed(shuffle_seed)
        self.noise_generator_ = torch.Generator(device=self.device).manual_seed(noise_seed)
        # nn.Dropout draws from torch's global generator: on the CPU, training steps swap in a
        # private state of it (dropout_rng_state_), so a seeded fit is reproducible with dropout too
        has_dropout = any(isinstance(m, nn.Dropout) and m.p > 0 for m in self.module_.modules())
        cpu = torch.device(self.device).type == "cpu"
        self.dropout_rng_state_ = torch.Generator().manual_seed(dropout_seed).get_state() \
            if has_dropout and cpu else None
        return self

    @contextlib.contextmanager
    def _dropout_rng(self):
        """Run a training step with torch's global CPU generator at ``dropout_rng_state_`` (then
        saved and the caller's state put back); a no-op without dropout or off the CPU."""
        state = getattr(self, "dropout_rng_state_", None)
        if state is None:
            yield
            return
        saved = torch.get_rng_state()
        torch.set_rng_state(state)
        try:
            yield
        finally:
            self.dropout_rng_state_ = torch.get_rng_state()
            torch.set_rng_state(saved)

    # ---- pickling -------------------------------------------------------------------------------
    _GENERATORS = ("shuffle_generator_", "noise_generator_")

    def __getstate__(self):
        """skorch's state, with each random generator stored as (device, state): a CUDA generator
        pickled as such would need a GPU to load."""
        state = super().__getstate__()
        for name in self._GENERATORS:
            if isinstance(state.get(name), torch.Generator):
                state[name] = (str(state[name].device), state[name].get_state())
        return state

    def __setstate__(self, state):
        """skorch's loading (a CUDA net loads on the CPU where no GPU is available), then the random
        generators on the net's device: at their saved state, or, where the device type changed,
        afresh from ``seed`` (a CPU and a CUDA generator do not share a state format)."""
        saved = {name: state.pop(name) for name in self._GENERATORS if isinstance(state.get(name), tuple)}
        super().__setstate__(state)
        seeds = dict(zip(self._GENERATORS, self._seeds()[1:]))
        for name, (device, generator_state) in saved.items():
            device = torch.device(device)
            if name == "noise_generator_" and device.type != torch.device(self.device).type:
                generator = torch.Generator(device=self.device).manual_seed(seeds[name])
            else:
                generator = torch.Generator(device=device)
                generator.set_state(generator_state)
            setattr(self, name, generator)

    def fit_loop(self, X, y=None, epochs=None, **fit_params):
        """skorch's loop; without ``epochs``, runs the epochs left to reach ``max_epochs`` (a fit
        resumed from a checkpoint has a history already)."""
        if epochs is None:
            epochs = max(self.max_epochs - len(self.history), 0)
        return super().fit_loop(X, y, epochs=epochs, **fit_params)

    def get_iterator(self, dataset, training=False):
        if isinstance(dataset, FunnelDataset):
            generator = self.shuffle_generator_ if training else None
            return BatchIterator(dataset, self.batch_size, shuffle=training, generator=generator)
        return super().get_iterator(dataset, training=training)

    # ---- forward and losses ---------------------------------------------------------------------
    def infer(self, x, **fit_params):
        x = {k: v for k, v in to_tensor(x, device=self.device).items() if k != "sample_weight"}
        generator = self.noise_generator_ if self.module_.training else None
        return self.module_(**x, generator=generator, **fit_params)

    def get_task_losses(self, y_pred, y_true, X=None):
        """Per-task losses, float32 (k + 1,), from the criterion (row weights from ``X`` if any)."""
        weight = None
        if isinstance(X, dict) and "sample_weight" in X:
            weight = to_tensor(X["sample_weight"], device=self.device)
        return self.criterion_(y_pred, to_tensor(y_true, device=self.device), weight)

    def get_loss(self, y_pred, y_true, X=None, training=False):
        """Monitored total loss (see class Notes)."""
        return (self.get_task_losses(y_pred, y_true, X) * self.criterion_.monitor_weights).sum()

    def _record(self, prefix, task_losses):
        values = task_losses.detach().cpu().tolist()
        for name, value, factor in zip(self.task_names, values, self.criterion_.history_factors()):
            self.history.record_batch(f"{prefix}_loss_{name}", value * float(factor))
        total = float(np.dot(values, self.criterion_.monitor_weights.cpu().numpy()))
        return torch.as_tensor(total)

    # ---- steps ----------------------------------------------------------------------------------
    def train_step(self, batch, **fit_params):
        """One forward, backward and optimiser step.  skorch passes its step as a closure to every
        optimiser, which would run it once per optimiser; with ``sparse_updates`` (two optimisers)
        the step runs once and both optimisers step without a closure (neither Adam nor SparseAdam
        needs one).  Dropout masks come from the net's own seeded state (:meth:`_dropout_rng`)."""
        with self._dropout_rng():
            return self._train_step(batch, **fit_params)

    def _train_step(self, batch, **fit_params):
        if not self.sparse_updates:
            return super().train_step(batch, **fit_params)
        self._zero_grad_optimizer()
        step = self.train_step_single(batch, **fit_params)
        self.notify("on_grad_computed", named_parameters=TeeGenerator(self.get_all_learnable_params()),
                    batch=batch, training=True)
        self._step_optimizer(None)
        return step

    def train_step_single(self, batch, **fit_params):
        self._set_training(True)
        Xi, yi = batch
        strategy = self.gradient_strategy
        shared = getattr(self.module_, "embedding", None)
        per_task = strategy is not None and (strategy.needs_task_gradients or self.record_gradient_norms)
        if not per_task or shared is None:
            y_pred = self.infer(Xi, **fit_params)
            task_losses = self.get_task_losses(y_pred, yi, Xi)
            self.criterion_.objective(task_losses).sum().backward()
        else:
            y_pred, task_losses = self._adjusted_backward(Xi, yi, strategy)
        self._check_finite(task_losses)
        return {"loss": self._record("train", task_losses), "y_pred": y_pred}

    def _check_finite(self, task_losses):
        """Raise :class:`TrainingDivergedError` when a task's batch loss is NaN or infinite; with a
        :class:`~sk_htlnet.divergence.DivergenceMonitor` among the callbacks (the estimator always
        adds one) the best weights kept so far are put back first.  Finite blow-ups are the
        monitor's check, at the end of each epoch."""
        finite = torch.isfinite(task_losses.detach())
        if not bool(finite.all()):
            bad = [name for name, ok in zip(self.task_names, finite.tolist()) if not ok]
            epoch = len(self.history)
            monitor = find_monitor(self)
            if monitor is not None:
                loss = float(task_losses.detach()[self.task_names.index(bad[0])])
                raise monitor.diverged(self, bad, loss=loss, epoch=epoch, reason="nan")
            raise TrainingDivergedError(
                f"training diverged at epoch {epoch}: the loss of {bad} became NaN or infinite. "
                "Lower learning_rate, use target_transform='log1p' or 'standardize' for a core target "
                "with large values, or check the inputs for extreme values.",
                reason="nan", task=bad[0], tasks=bad, epoch=epoch, learning_rate=float(self.lr),
            )

    def _adjusted_backward(self, Xi, yi, strategy):
        """One backward pass per task on the towers; the shared gradient goes through ``strategy``."""
        x = {k: v for k, v in to_tensor(Xi, device=self.device).items() if k != "sample_weight"}
        module = self.module_
        e = module.embed(**x).detach().requires_grad_()
        if getattr(module, "supports_per_task", False):
            # one graph per task: each backward pass traverses only its own task's tower
            outputs = module.forward_from_embedding(e, generator=self.noise_generator_, per_task=True)
            y_true = to_tensor(yi, device=self.device)
            weight = to_tensor(Xi["sample_weight"], device=self.device) if "sample_weight" in Xi else None
            losses = [self.criterion_.task_loss(t, out, y_true, weight) for t, out in enumerate(outputs)]
            weighted = [self.criterion_.objective_term(t, loss) for t, loss in enumerate(losses)]
            y_pred = torch.cat([o.detach() for o in outputs], dim=1)
            task_losses = torch.stack([loss.detach() for loss in losses])
        else:
            y_pred = module.forward_from_embedding(e, generator=self.noise_generator_)
            task_losses = self.get_task_losses(y_pred, yi, Xi)
            weighted = self.criterion_.objective(task_losses)
        n_tasks = len(weighted)
        grads = []
        for t in range(n_tasks):
            e.grad = None
            weighted[t].backward(retain_graph=t < n_tasks - 1)
            grads.append(e.grad if e.grad is not None else torch.zeros_like(e))
        rows, task_grads = module.embedding.sparse_grad(torch.stack(grads), **x)
        if self.record_gradient_norms:
            for name, norm in zip(self.task_names, task_grads.norm(dim=1).tolist()):
                self.history.record_batch(f"grad_norm_{name}", norm)
        module.embedding.set_sparse_grad(rows, _combine_scaled(strategy, task_grads))
        return y_pred, task_losses

    def validation_step(self, batch, **fit_params):
        self._set_training(False)
        Xi, yi = batch
        with torch.no_grad():
            y_pred = self.infer(Xi, **fit_params)
            task_losses = self.get_task_losses(y_pred, yi, Xi)
        return {"loss": self._record("valid", task_losses), "y_pred": y_pred}
