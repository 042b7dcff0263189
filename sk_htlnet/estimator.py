"""HTLNetRegressor: HTLNet for hybrid funnel targets as a scikit-learn estimator.

This module holds the public class: its docstring, parameter constraints and ``__init__``.  The
fitting steps are in :mod:`sk_htlnet._base`, the rooms it draws on are listed in docs/developer.md.
"""

import numbers
import os

import torch
from sklearn.utils._param_validation import Interval, StrOptions

from ._base import BaseHTLNet
from .core_losses import CORE_LOSSES
from .gradient import GRADIENT_ADJUSTMENTS
from .modules import ARCHITECTURES
from .preprocessing import NUMERIC_ENCODINGS

__all__ = ["HTLNetRegressor"]


class HTLNetRegressor(BaseHTLNet):
    """HTLNet for hybrid targets: k binary funnel stages, then a continuous core target.

    Tang et al., "Touch the Core: Exploring Task Dependence Among Hybrid Targets for
    Recommendation", RecSys 2024 (arXiv 2403.17442).  Shared field embeddings feed one tower per
    task; each stage's prediction is turned into a label embedding by Gumbel-softmax sampling (LEU)
    and passed downstream with the stage's representation through attention (IFU); the shared
    embedding's gradient is arbitrated by a rule anchored on the core regression task.  Backed by a
    skorch ``NeuralNet`` (``net_``).

    Parameters
    ----------
    architecture : {"htlnet", "single_task", "shared_bottom", "mmoe", "ple", "esmm", "aitm"}, \
            default="htlnet"
        The model (:mod:`sk_htlnet.modules`): HTLNet, or one of the paper's baselines with the same
        embedding and tower sizes: independent single-task DNNs, Shared-Bottom, MMoE, PLE, and our
        adaptations of ESMM (entire-space products for the stages, a plain core tower) and AITM
        (attention transfer along the chain, a regression head for the core) to hybrid targets.
    gradient_adjustment : {"htlnet", "none", "pcgrad", "metabalance", "uncertainty"}, default="htlnet"
        How the task gradients on the shared embedding are combined: HTLNet §4's rule, the plain
        sum, PCGrad (Yu et al., 2020), MetaBalance with the core as target task (He et al., 2022,
        using ``relax_factor``), or Kendall et al.'s (2018) learned uncertainty loss weights.  Has no
        effect with ``architecture="single_task"`` (nothing is shared).
    categorical_features : "from_dtype", list of column labels or int, or bool mask, default="from_dtype"
        Categorical columns, embedded natively.  "from_dtype": DataFrame columns of category,
        string or object dtype; an array has none unless listed here.  A listed value that is one of
        a DataFrame's column labels (str, int, a MultiIndex tuple) names that column; other ints are
        positions.
    embedding_dim : int, default=16
        Size of each field's embedding.
    numeric_encoding : {"linear", "quantile", "piecewise_linear", "periodic"}, \
            default="piecewise_linear"
        How numeric columns enter the shared embedding (standardised and clipped to the training
        range first): "linear" ``x W_j + b_j`` (the paper's sketch); "quantile" one learned row per
        training-quantile bucket (``n_bins``), like a categorical field; "piecewise_linear" Gorishniy et al.'s (2022)
        piecewise-linear encoding over the same quantile bins, then a linear map; "periodic" their
        PLR embedding (trainable sin/cos frequencies, linear, ReLU).  Bin edges are learned in
        ``fit`` from the training rows and reused by ``predict``.  Missing values always get their
        own learned vector.  The default won on the real funnels of docs/comparison.md.
    n_bins : int, default=16
        Maximum number of quantile bins per numeric column for "quantile" and "piecewise_linear"
        (columns with fewer distinct values get fewer).
    tower_units : tuple of int, default=(128, 64, 32)
        Hidden widths of every task tower (AITM's sizes).
    label_embedding_dim : int, default=16
        Size of the LEU's label vectors.
    fusion_dim : int, default=32
        Output size of each IFU.
    fusion : {"attention", "concat"}, default="attention"
        IFU operator (HTLNet §2.4).
    label_sampling : {"hard", "relaxed"}, default="hard"
        LEU sampling (straight-through hard sample, or relaxed Gumbel-softmax), HTLNet §2.3.
    tau : float, default=1.0
        Gumbel-softmax temperature (> 0).  Inert with ``label_sampling="hard"`` and
        ``stop_gradient=True`` (the defaults): the forward pass uses the hard sample, which does not
        depend on tau, and the straight-through gradient that tau shapes would reach only the
        upstream logit, which is detached; fits at any tau are then identical.  It matters with
        ``label_sampling="relaxed"`` (the sample itself) or ``stop_gradient=False``.
    relax_factor : float or "auto", default="auto"
        gamma of HTLNet §4, in [0, 1]: 0 switches the magnitude step off, 1 moves a stage's gradient
        norm fully to ``r`` times its own.  "auto" is 0.1 (a re-implementation's value; the paper
        publishes none) on a transformed core (log1p, standardised, or a likelihood loss) and 1
        when the core's squared error is in its own units (``target_transform="none"``), where the
        core's gradient grows with the square of its unit (:func:`sk_htlnet.gradient.resolve_rule`;
        the fitted value is ``relax_factor_``).
    clip_ratio : float or "auto", default="auto"
        C of HTLNet §4, >= 1: the norm ratio ``r = ||G_core|| / ||G_t||`` is clipped to
        ``[1/C, C]``, so C = 1 makes ``r = 1`` and switches the magnitude step off, and a larger C
        lets it scale a stage's gradient by up to C (times gamma).  "auto" is 10 on a transformed
        core and ``10 max(s, 1/s)`` in the core's own units, with ``s`` the core's variance (the
        factor its loss carries); with gamma = 1 the step then gives each stage gradient the core's
        norm, whatever the unit (``clip_ratio_``).
    target_transform : {"auto", "none", "standardize", "log1p"}, default="auto"
        Transform of the core target inside the MSE (``core_loss_ == "mse"``).  "auto" is "log1p"
        when every observed core value is >= 0 (amounts: zero-inflated, heavy-tailed) and
        "standardize" otherwise; with a likelihood core loss it is "none".
        Predictions are always in the target's units and estimate the conditional mean (with
        "log1p", through ``retransformation``).  "none" is the paper's squared error in the
        target's own units at any scale: the network's output is scaled by the core's training
        standard deviation, and the loss is its square times the standardised error (the factor
        capped at 1e12 for float32, with no effect on training; the history reports the raw error).
    core_loss : {"auto", "mse", "ziln", "tweedie"}, default="auto"
        Loss of the core target.  "auto" is "ziln" when every observed core value is >= 0,
        ``target_transform`` is "auto" and ``retransformation`` is not "smearing" (any explicit
        transform, "none" included, or smearing asks for the paper's MSE); else "mse" (so a signed
        target still fits).  "mse" (the paper's) on the ``target_transform`` scale; "ziln" the
        zero-inflated lognormal likelihood (Wang et al., 2019: a probability of a positive amount
        and lognormal parameters ``mu``, ``sigma``, whose mean is ``p exp(mu + sigma^2 / 2)``);
        "tweedie" the Tweedie likelihood with log link and power ``tweedie_power`` (mean
        ``exp(eta)``).  ``predict`` returns that mean, recalibrated by ``retransformation``.  "ziln"
        and "tweedie" need a core target >= 0 and model it in its own units (``target_transform``
        must be "auto" or "none"; internally it is divided by its training mean for
        conditioning).  Which combination estimates what: the user guide page
        "Choosing a target transform and a core loss".
    tweedie_power : float in (1, 2), default=1.5
        Power of the Tweedie variance function (near 1: Poisson-like; near 2: Gamma-like).
    retransformation : {"isotonic", "smearing", "none"}, default="isotonic"
        With ``target_transform="log1p"``, how predictions on the log scale are mapped back to the
        conditional mean, fitted on the training rows (a seeded sample of 200,000 when there are
        more): "isotonic" (centered isotonic regression of y on the network's output; adapts to
        zero inflation, keeps the ranking), "smearing" (Duan's 1983 estimate, a single factor;
        biased when the log-scale residuals are not homoscedastic, as on zero-inflated amounts) or
        "none" (``expm1``, uncorrected: biased low).
        With ``core_loss`` "ziln" or "tweedie": "isotonic" recalibrates the distribution's mean
        the same way, "none" returns it as computed ("smearing" is refused).  No effect with
        "standardize" or "none" transforms of the MSE (their inverse is exact).
    task_weights : array-like of shape (k + 1,), default=None
        Static weights of the task losses in the optimised sum; None means all 1.
    stage_pos_weight : float or array-like of shape (k,), default=None
        Weight of the positive class in each stage's log loss (one value for all stages, or one
        per stage); None means 1.  Values above 1 make a rare stage's positives count more, at the
        price of calibration: the predicted probabilities then estimate the odds multiplied by the
        weight, not P(stage = 1 | x).
    dropout : float, default=0.0
        Dropout after each tower layer.
    n_experts : int, default=4
        Experts of MMoE; PLE uses ``max(1, n_experts // 2)`` task-specific experts per task and as
        many shared experts, on two extraction levels.
    label_embedding, representation_transfer, stop_gradient : bool, default=True
        HTLNet's ablation switches (the paper's "without LEU", "without the IFU representation
        path", "without stop-gradient").
    gradient_projection, gradient_rescaling : bool, default=True
        Ablations of the gradient rule: "without projection", "without magnitude rule".
    learning_rate : float, default=1e-3
        Adam step size.
    weight_decay : float, default=0.0
        Adam's L2 penalty (with ``sparse_updates``, on every parameter but the embedding tables).
    sparse_updates : bool, default=True
        Train the embedding tables with ``torch.optim.SparseAdam`` (lazy Adam: a step updates only
        the rows of the categories present in the batch, and their moments) and the rest with Adam.
        A step then costs O(batch) instead of O(number of categories), which keeps an epoch linear
        in the rows when fields have millions of categories (docs/performance.md).  False trains the
        tables with dense Adam like every other parameter (the paper's setting; absent rows then
        keep moving with their momentum).
    batch_size : int or "auto", default="auto"
        Rows per optimisation step.  "auto" takes the largest power of two at most half the
        training rows (at least two steps an epoch), kept within 32 to 1024: 1024 from 2,048
        training rows on, 64 for 200 rows, 32 below 128, so that a small set gets enough steps
        in ``max_iter`` epochs (:func:`sk_htlnet.data.resolve_batch_size`; the fitted value is
        ``batch_size_``).
    max_iter : int, default=30
        Maximum number of epochs.
    early_stopping : "auto" or bool, default="auto"
        Stop when the validation loss stops improving and restore the best weights; "auto" enables
        it when there are more than 10,000 rows.
    validation_fraction : float, default=0.1
        Share of the training rows held out for early stopping (stratified on funnel depth, never
        on the core target).
    n_iter_no_change : int, default=5
        Patience in epochs.
    tol : float, default=1e-4
        Minimum absolute decrease of the validation loss that counts as an improvement.
    random_state : int, RandomState instance or None, default=None
        Seeds initialisation, the validation split, the shuffle and the Gumbel noise; an int makes
        two fits bit-identical on CPU.  The global torch seed is not touched.
    device : str, default="cpu"
        Torch device, e.g. "cuda".
    n_threads : int or None, default=None
        Number of CPU threads torch may use during ``fit`` and ``predict`` (restored afterwards);
        None leaves torch's setting (by default, one per core).  Set ``n_threads=1`` when a search
        runs several fits at once (``GridSearchCV(..., n_jobs=2)``) so the processes do not
        oversubscribe the cores.
    distributed : bool, default=False
        True: data-parallel training on ``torch.distributed`` (docs/user_guide/distributed.md).
        Under a launcher (``torchrun``, ``accelerate launch``, Ray Train's TorchTrainer, Spark's
        TorchDistributor) each process calls ``fit(X, y)`` on its own rows; every training step
        is one step on the union of the processes' batches (``batch_size`` is that global batch),
        with the gradient rule applied to the per-task gradients summed over the processes, and
        the fitted model is the same on every process.  The default process group is used, or
        initialised from the launcher's environment (gloo on the CPU, NCCL on a GPU); without a
        launcher the fit is an ordinary one-process fit, so the same script runs anywhere.
        ``warm_start``, ``partial_fit`` and ``checkpoint_dir`` are refused on several processes.
    verbose : int, default=0
        0 is silent; 1 prints the per-epoch table (the total losses and, with early stopping,
        each task's validation loss; every task's training loss is in ``history_``), in colour
        only on a terminal (not in a redirected log, nor with ``NO_COLOR`` set); 2 adds a
        per-batch progress bar (tqdm, through skorch's ``ProgressBar``).
    warm_start : bool, default=False
        Continue training the fitted net on the next ``fit`` instead of starting afresh.  The net
        keeps what it was built with (architecture, encoding, optimiser, callbacks): a continued
        fit (or ``partial_fit``) honours a new ``max_iter`` and ``n_threads`` only, and warns
        naming any other parameter changed since the fit that built the net.
    checkpoint_dir : str or path-like, default=None
        If set (a leading ``~`` is the home folder), the net's weights, optimiser state and
        history are written to this folder after every epoch, each epoch as new files written
        atomically (temporary file, fsync, rename), then a ``manifest.json`` with their SHA-256
        digests and the fit's fingerprint, then the previous epoch's files are deleted
        (:mod:`sk_htlnet.checkpoint`), so that a process killed at any instant leaves the last
        complete epoch.  The fingerprint is the net's settings, every parameter but ``max_iter``,
        ``n_threads``, ``verbose``, ``learning_rate``, ``weight_decay``, ``warm_start``,
        ``checkpoint_dir``, ``callbacks`` and ``device``, and a SHA-256 of the training data (the
        encoded rows, the raw targets, the encoder's statistics, vocabularies and column labels).
        A later ``fit`` (or first ``partial_fit``) with the same data and fingerprinted parameters
        resumes from it and runs the remaining ``max_iter`` epochs, with the current
        ``learning_rate`` and ``weight_decay``, after checking the manifest, the digests and that
        the loaded weights equal the files; a checkpoint that fails a check (a missing, truncated
        or altered file, a fingerprint that differs, whose message names the parameters or says
        the training data differ, or one written with the other ``sparse_updates``) raises
        ``ValueError`` naming the folder, and is never resumed in part.  Files of an epoch after
        the first without a manifest (a lost manifest) are refused too; a folder without a manifest
        holding nothing or only files of epoch 1 (a fit killed in its first epoch) holds no
        complete epoch: the fit starts afresh there.  While a fit runs it holds the folder's lock
        (``checkpoint.lock``, released by the operating system if the process dies): a second fit
        on the same folder raises ``ValueError``; a folder removed or replaced during the fit
        stops it with ``OSError`` when the epoch ends.  A continued fit (``warm_start``, later
        ``partial_fit`` calls) keeps the fingerprint of the fit that built the net.  None writes
        nothing.  The resumed fit is not bit-identical to an uninterrupted one (the shuffle and
        Gumbel generators restart).
    callbacks : list of skorch callbacks or (name, callback) tuples, default=None
        Extra callbacks for the skorch net.
    net_kwargs : dict, default=None
        skorch double-underscore settings applied to the net, e.g. ``{"optimizer__betas": (0.9, 0.99)}``.

    Attributes
    ----------
    n_features_in_ : int
    feature_names_in_ : ndarray of str, only when X is a DataFrame
    target_names_ : list of str
        Names of the k stages and the core target, in funnel order.
    n_stages_ : int
        Number k of binary stages.
    target_transform_ : str
        The transform used ("auto" resolved; "none" for ``core_loss`` "ziln" and "tweedie").
    core_loss_ : str
        The core loss used ("auto" resolved).
    net_ : HybridNet
        The fitted skorch net.
    history_ : skorch.History
        Per-epoch records: ``train_loss``, ``valid_loss`` (monitored totals: stage BCEs plus the core
        MSE over the transformed core's training variance, or the likelihood core loss as is), and
        per task ``train_loss_<name>``, ``valid_loss_<name>`` (each task's optimised loss), plus
        skorch's ``dur`` and ``epoch``.
    n_iter_ : int
        Epochs run.
    relax_factor_, clip_ratio_ : float
        gamma and C of the gradient rule ("auto" resolved against the core's loss).
    batch_size_ : int
        Rows per optimisation step ("auto" resolved against the training rows of the first fit).
    feature_encoder_ : sk_htlnet.preprocessing.FeatureEncoder
        The fitted encoding of X's columns (vocabularies, bin edges, missing flags).
    core_transform_ : sk_htlnet.core_transform.CoreTransform
        The fitted transform of the core target to the scale the loss sees, and back (with the
        isotonic retransformation's knots when ``retransformation="isotonic"``).

    Examples
    --------
    >>> from sk_htlnet import HTLNetRegressor
    >>> from sk_htlnet.datasets import load_hillstrom
    >>> X, Y = load_hillstrom()
    >>> est = HTLNetRegressor(max_iter=2, random_state=0).fit(X, Y)
    >>> est.predict(X).shape
    (64000, 3)
    """

    _parameter_constraints = {
        "architecture": [StrOptions(set(ARCHITECTURES))],
        "gradient_adjustment": [StrOptions(set(GRADIENT_ADJUSTMENTS))],
        "categorical_features": [StrOptions({"from_dtype"}), "array-like", None],
        "embedding_dim": [Interval(numbers.Integral, 1, None, closed="left")],
        "numeric_encoding": [StrOptions(set(NUMERIC_ENCODINGS))],
        "n_bins": [Interval(numbers.Integral, 2, None, closed="left")],
        "tower_units": ["array-like"],
        "label_embedding_dim": [Interval(numbers.Integral, 1, None, closed="left")],
        "fusion_dim": [Interval(numbers.Integral, 1, None, closed="left")],
        "fusion": [StrOptions({"attention", "concat"})],
        "label_sampling": [StrOptions({"hard", "relaxed"})],
        "tau": [Interval(numbers.Real, 0, None, closed="neither")],
        "relax_factor": [StrOptions({"auto"}), Interval(numbers.Real, 0, 1, closed="both")],
        "clip_ratio": [StrOptions({"auto"}), Interval(numbers.Real, 1, None, closed="left")],
        "target_transform": [StrOptions({"auto", "none", "standardize", "log1p"})],
        "core_loss": [StrOptions({"auto", *CORE_LOSSES})],
        "tweedie_power": [Interval(numbers.Real, 1, 2, closed="neither")],
        "retransformation": [StrOptions({"isotonic", "smearing", "none"})],
        "task_weights": ["array-like", None],
        "stage_pos_weight": [Interval(numbers.Real, 0, None, closed="neither"), "array-like", None],
        "dropout": [Interval(numbers.Real, 0, 1, closed="left")],
        "n_experts": [Interval(numbers.Integral, 1, None, closed="left")],
        "label_embedding": ["boolean"],
        "representation_transfer": ["boolean"],
        "stop_gradient": ["boolean"],
        "gradient_projection": ["boolean"],
        "gradient_rescaling": ["boolean"],
        "learning_rate": [Interval(numbers.Real, 0, None, closed="neither")],
        "weight_decay": [Interval(numbers.Real, 0, None, closed="left")],
        "sparse_updates": ["boolean"],
        "batch_size": [StrOptions({"auto"}), Interval(numbers.Integral, 1, None, closed="left")],
        "max_iter": [Interval(numbers.Integral, 1, None, closed="left")],
        "early_stopping": [StrOptions({"auto"}), "boolean"],
        "validation_fraction": [Interval(numbers.Real, 0, 1, closed="neither")],
        "n_iter_no_change": [Interval(numbers.Integral, 1, None, closed="left")],
        "tol": [Interval(numbers.Real, 0, None, closed="left")],
        "random_state": ["random_state"],
        "device": [str, torch.device],
        "n_threads": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "distributed": ["boolean"],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
        "checkpoint_dir": [str, os.PathLike, None],
        "callbacks": [list, None],
        "net_kwargs": [dict, None],
    }

    def __init__(
        self,
        *,
        architecture="htlnet",
        gradient_adjustment="htlnet",
        categorical_features="from_dtype",
        embedding_dim=16,
        numeric_encoding="piecewise_linear",
        n_bins=16,
        tower_units=(128, 64, 32),
        label_embedding_dim=16,
        fusion_dim=32,
        fusion="attention",
        label_sampling="hard",
        tau=1.0,
        relax_factor="auto",
        clip_ratio="auto",
        target_transform="auto",
        core_loss="auto",
        tweedie_power=1.5,
        retransformation="isotonic",
        task_weights=None,
        stage_pos_weight=None,
        dropout=0.0,
        n_experts=4,
        label_embedding=True,
        representation_transfer=True,
        stop_gradient=True,
        gradient_projection=True,
        gradient_rescaling=True,
        learning_rate=1e-3,
        weight_decay=0.0,
        sparse_updates=True,
        batch_size="auto",
        max_iter=30,
        early_stopping="auto",
        validation_fraction=0.1,
        n_iter_no_change=5,
        tol=1e-4,
        random_state=None,
        device="cpu",
        n_threads=None,
        distributed=False,
        verbose=0,
        warm_start=False,
        checkpoint_dir=None,
        callbacks=None,
        net_kwargs=None,
    ):
        self.architecture = architecture
        self.gradient_adjustment = gradient_adjustment
        self.categorical_features = categorical_features
        self.embedding_dim = embedding_dim
        self.numeric_encoding = numeric_encoding
        self.n_bins = n_bins
        self.tower_units = tower_units
        self.label_embedding_dim = label_embedding_dim
        self.fusion_dim = fusion_dim
        self.fusion = fusion
        self.label_sampling = label_sampling
        self.tau = tau
        self.relax_factor = relax_factor
        self.clip_ratio = clip_ratio
        self.target_transform = target_transform
        self.core_loss = core_loss
        self.tweedie_power = tweedie_power
        self.retransformation = retransformation
        self.task_weights = task_weights
        self.stage_pos_weight = stage_pos_weight
        self.dropout = dropout
        self.n_experts = n_experts
        self.label_embedding = label_embedding
        self.representation_transfer = representation_transfer
        self.stop_gradient = stop_gradient
        self.gradient_projection = gradient_projection
        self.gradient_rescaling = gradient_rescaling
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.sparse_updates = sparse_updates
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.random_state = random_state
        self.device = device
        self.n_threads = n_threads
        self.distributed = distributed
        self.verbose = verbose
        self.warm_start = warm_start
        self.checkpoint_dir = checkpoint_dir
        self.callbacks = callbacks
        self.net_kwargs = net_kwargs


    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True  # k stages + the core; 1-D y is plain regression
        tags.target_tags.single_output = True
        tags.input_tags.allow_nan = True  # missing numeric values (and labels) are supported
        tags.input_tags.categorical = True
        tags.input_tags.string = True  # string / object / category DataFrame columns are embedded
        return tags
