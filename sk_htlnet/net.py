"""The skorch ``NeuralNet`` subclass behind :class:`~sk_htlnet.HTLNetRegressor`.

It adds to skorch's loop (docs/method.md, Training loop): a hybrid loss with label masks, a train step that applies a
gradient-adjustment strategy (:mod:`sk_htlnet.gradient`) to the shared embedding, per-task loss
entries in the history, a fast tensor batch iterator, and seeded private random generators so that
a fixed seed gives bit-identical fits on CPU without touching the global torch seed.
"""

import contextlib

import numpy as np
import torch
from skorch import NeuralNet
from skorch.callbacks import EarlyStopping, PassthroughScoring
from skorch.utils import TeeGenerator, to_tensor
from torch import nn

from .data import BatchIterator, FunnelDataset
from .distributed import SINGLE, align_rows, gather_rows, set_table_grad, sum_dense_grads, table_grad_rows
from .divergence import TrainingDivergedError, find_monitor
from .logs import log_callbacks
from .losses import HybridLoss

__all__ = ["HybridNet"]


_LARGE_GRADIENT = 1e10


def _nonfinite(task_losses):
    """Per task, 1.0 where the batch loss is NaN or infinite, else 0.0 (float32 (n_tasks,))."""
    return (~torch.isfinite(task_losses.detach())).to(torch.float32)


def _adjust_scaled(strategy, grads):
    """``strategy.adjust(grads)`` (the adjusted per-task rows), computed on ``grads / s`` and scaled
    back by ``s = max |grads|`` when the gradients are so large (a core loss in raw units,
    ``target_transform="none"``) that their squared norms would overflow float32.  Every strategy is
    positively homogeneous of degree 1 (projections, norm ratios and sums), so this changes nothing
    but the overflow."""
    scale = grads.abs().max()
    if not bool(torch.isfinite(scale)) or float(scale) <= _LARGE_GRADIENT:
        return strategy.adjust(grads)
    return strategy.adjust(grads / scale) * scale


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
        Record, per batch, the norm of each task's gradient on the shared embedding before the
        gradient adjustment under the history keys ``grad_norm_<name>``, and after it (the task's
        row of :meth:`sk_htlnet.gradient.GradientStrategy.adjust`, whose sum is applied) under
        ``grad_norm_adjusted_<name>`` (the paper's Figure 5).  Forces one backward pass per task even
        for ``gradient_adjustment="none"``.
    group : sk_htlnet.distributed.Group, optional
        The processes of a data-parallel fit (:mod:`sk_htlnet.distributed`): each training step is
        one step on the union of the ranks' batches (the same number of batches on every rank,
        ``ceil(total training rows / batch_size)``), the initial weights are rank 0's, shuffles,
        Gumbel noise and dropout are seeded per rank, and each epoch's history holds every rank's
        batches.  None (or one process): plain training.
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
                 record_gradient_norms=False, sparse_updates=False, criterion=HybridLoss, group=None, **kwargs):
        super().__init__(module, *args, criterion=criterion, **kwargs)
        self.group = group
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
        own = dict(log_callbacks(self.task_names, int(self.verbose or 0)))
        callbacks = [(name, own.pop(name, cb)) for name, cb in super().get_default_callbacks()]
        callbacks += list(own.items())  # the progress bar, with verbose >= 2
        for name in self.task_names:
            callbacks.append((f"train_loss_{name}", PassthroughScoring(name=f"train_loss_{name}", on_train=True)))
            callbacks.append((f"valid_loss_{name}", PassthroughScoring(name=f"valid_loss_{name}")))
        return callbacks

    @property
    def group_(self):
        """The fit's :class:`~sk_htlnet.distributed.Group` (the one-process group without one)."""
        return self.group if self.group is not None else SINGLE

    def _seeds(self):
        """Seeds of the initialisation (shared by every rank), the shuffle, the Gumbel noise and
        dropout (rank 0's are those of a one-process fit; the other ranks' are drawn from the seed
        and the rank)."""
        seeds = [int(s) for s in np.random.default_rng(self.seed).integers(0, 2**62, size=4)]
        rank = self.group_.rank
        if rank:
            seeds[1:] = [int(s) for s in np.random.default_rng([int(self.seed or 0), rank]).integers(0, 2**62, 3)]
        return seeds

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
        if self.group_.active:  # every rank starts from rank 0's weights
            with torch.no_grad():
                for tensor in list(self.module_.state_dict().values()) + list(self.criterion_.state_dict().values()):
                    self.group_.broadcast_(tensor)
        self._n_batches = None
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

    def reset_optimizer_state(self):
        """Clear the per-parameter state (Adam's moments) of every initialised optimiser
        (``optimizer_``, and ``embedding_optimizer_`` with ``sparse_updates``)."""
        for name in getattr(self, "_optimizers", []):  # skorch's names, without the trailing "_"
            optimizer = getattr(self, name + "_", None)
            if isinstance(optimizer, torch.optim.Optimizer):
                optimizer.state.clear()

    @contextlib.contextmanager
    def without_validation(self):
        """Train without the validation split and early stopping for the duration of the block
        (``partial_fit`` of the estimator: one epoch on a chunk, as scikit-learn's
        ``MLPRegressor.partial_fit``); both are put back afterwards."""
        saved = self.train_split, self.callbacks_
        self.train_split = None
        self.callbacks_ = [(name, cb) for name, cb in saved[1] if not isinstance(cb, EarlyStopping)]
        try:
            yield self
        finally:
            self.train_split, self.callbacks_ = saved

    def fit_loop(self, X, y=None, epochs=None, **fit_params):
        """skorch's loop; without ``epochs``, runs the epochs left to reach ``max_epochs`` (a fit
        resumed from a checkpoint has a history already)."""
        if epochs is None:
            epochs = max(self.max_epochs - len(self.history), 0)
        return super().fit_loop(X, y, epochs=epochs, **fit_params)

    def get_iterator(self, dataset, training=False):
        if isinstance(dataset, FunnelDataset):
            generator = self.shuffle_generator_ if training else None
            n_batches = self._global_batches(len(dataset)) if training and self.group_.active else None
            return BatchIterator(dataset, self.batch_size, shuffle=training, generator=generator,
                                 n_batches=n_batches)
        return super().get_iterator(dataset, training=training)

    def _global_batches(self, n_local):
        """Training batches per epoch on every rank: ``ceil(total rows / batch_size)`` (the batch
        size is the global batch's); each rank splits its rows into that many near-equal batches."""
        cached = getattr(self, "_n_batches", None)
        if cached is None or cached[0] != n_local:
            sizes = self.group_.all_gather_object(int(n_local))
            n_batches = -(-sum(sizes) // int(self.batch_size))
            if min(sizes) < n_batches:
                raise ValueError(
                    f"distributed fit: the ranks hold {sizes} training rows, but every rank needs at least one "
                    f"row in each of the {n_batches} batches of an epoch (total rows / batch_size={self.batch_size}); "
                    "give each rank a comparable share of the rows or use a larger batch_size")
            cached = self._n_batches = (n_local, n_batches)
        return cached[1]

    def on_epoch_end(self, net, **kwargs):
        """With several ranks, every rank's batch records of the epoch are put in each rank's
        history before the epoch's scores (train and validation losses, early stopping, the
        divergence check) are computed, so that they are the losses over all ranks' rows."""
        super().on_epoch_end(net, **kwargs)
        if self.group_.active:
            row = self.history[-1]
            row["batches"] = [b for part in self.group_.all_gather_object(row["batches"]) for b in part]

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
            objective = self.criterion_.objective(task_losses)
            longest = None
            if self.group_.active:
                shares, longest = self._step_totals(Xi, yi)
                objective = objective * shares
            objective.sum().backward()
            (nonfinite,) = self._sum_gradients(shared=None, longest=longest, extra=[_nonfinite(task_losses)])
        else:
            y_pred, task_losses, nonfinite = self._adjusted_backward(Xi, yi, strategy)
        self._check_finite(task_losses, nonfinite)
        return {"loss": self._record("train", task_losses), "y_pred": y_pred}

    def _step_totals(self, Xi, yi):
        """This rank's share of each task's global-batch loss and the ranks' bound on the table rows
        a batch touches, in one collective (:meth:`Group.step_totals`)."""
        weight = to_tensor(Xi["sample_weight"], device=self.device) if "sample_weight" in Xi else None
        lookups = int(np.prod(Xi["cat"].shape)) if "cat" in Xi else 0
        return self.group_.step_totals(to_tensor(yi, device=self.device), weight, lookups)

    def _sum_gradients(self, shared, longest, extra=()):
        """Sum every gradient over the ranks but the ``shared`` embedding's parameters, and the
        tensors of ``extra`` with them (returned summed; as given in one process): embedding tables
        on the rows the ranks touch (an all-gather of the row ids each, padded to ``longest``), then
        one all-reduce of the tables' rows, every dense gradient and ``extra``."""
        group = self.group_
        extra = list(extra)
        if not group.active:
            return extra
        skip = set() if shared is None else {id(p) for p in shared.parameters()}
        tables = [emb for emb in self._tables() if id(emb.table) not in skip]
        skip |= {id(emb.table) for emb in tables}
        unions, parts = [], []
        for emb in tables:
            rows, values = table_grad_rows(emb.table)
            unions.append(gather_rows(group, rows, longest, emb.table.shape[0]))
            parts.append(align_rows(rows, values.reshape(1, -1), unions[-1], emb.table.shape[1]))
        summed = sum_dense_grads(group, [p for _, p in self.get_all_learnable_params() if id(p) not in skip],
                                 extra=parts + extra)
        for emb, union, part in zip(tables, unions, summed):
            set_table_grad(emb.table, union, part, sparse=emb.sparse)
        return summed[len(tables):]

    def _check_finite(self, task_losses, nonfinite):
        """Raise :class:`TrainingDivergedError` when a task's batch loss is NaN or infinite; with a
        :class:`~sk_htlnet.divergence.DivergenceMonitor` among the callbacks (the estimator always
        adds one) the best weights kept so far are put back first.  Finite blow-ups are the
        monitor's check, at the end of each epoch.  ``nonfinite``: per task, the number of ranks
        whose loss is not finite (:func:`_nonfinite`, summed over the ranks with the gradients), so
        that every rank stops at the same step."""
        finite = nonfinite == 0
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
        longest = None
        if self.group_.active:
            shares, longest = self._step_totals(Xi, yi)
            weighted = [term * shares[t] for t, term in enumerate(weighted)]
        grads = []
        for t in range(n_tasks):
            e.grad = None
            weighted[t].backward(retain_graph=t < n_tasks - 1)
            grads.append(e.grad if e.grad is not None else torch.zeros_like(e))
        rows, task_grads = module.embedding.sparse_grad(torch.stack(grads), **x)
        nonfinite = _nonfinite(task_losses)
        if self.group_.active:  # the rule on the global batch: the task gradients summed first
            union = gather_rows(self.group_, rows, longest, module.embedding.table.shape[0])
            local = align_rows(rows, task_grads, union, module.embedding.embedding_dim)
            rows, (task_grads, nonfinite) = union, self._sum_gradients(
                shared=module.embedding, longest=longest, extra=[local, nonfinite])
        adjusted = _adjust_scaled(strategy, task_grads)
        if self.record_gradient_norms:
            for name, before, after in zip(self.task_names, task_grads.norm(dim=1).tolist(),
                                           adjusted.norm(dim=1).tolist()):
                self.history.record_batch(f"grad_norm_{name}", before)
                self.history.record_batch(f"grad_norm_adjusted_{name}", after)
        module.embedding.set_sparse_grad(rows, adjusted.sum(0))
        return y_pred, task_losses, nonfinite

    def validation_step(self, batch, **fit_params):
        self._set_training(False)
        Xi, yi = batch
        with torch.no_grad():
            y_pred = self.infer(Xi, **fit_params)
            task_losses = self.get_task_losses(y_pred, yi, Xi)
        return {"loss": self._record("valid", task_losses), "y_pred": y_pred}
