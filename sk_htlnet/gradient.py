"""Gradient-adjustment strategies for the shared embedding parameters (HTLNet §4).

Each strategy receives the per-task gradients on the shared parameters as one matrix ``G`` of shape
(n_tasks, n_params), tasks in funnel order with the core task last, every row one flattened vector
over all shared parameters (cosines and norms are global, not per tensor); ``adjust`` returns the
adjusted per-task rows and ``combine`` their sum, the single gradient to apply.  Strategies know nothing of scikit-learn or skorch; the net's train step calls
them (see :mod:`sk_htlnet.net`).  Every non-shared parameter always receives its own task's gradient.
"""

import torch

_EPS = 1e-12


class GradientStrategy:
    """Interface: combine per-task shared gradients into one.

    Attributes
    ----------
    needs_task_gradients : bool
        If False the net skips the per-task backward passes and back-propagates the summed loss once
        (the result equals ``combine(G)``; only the floating-point summation order differs).
    """

    needs_task_gradients = True
    uses_uncertainty = False

    def adjust(self, grads):
        """Return each task's adjusted gradient, shape (n_tasks, n_params), from ``grads`` (n_tasks,
        n_params): the rows whose sum :meth:`combine` applies (the paper's Figure 5 plots their norms)."""
        raise NotImplementedError

    def combine(self, grads):
        """Return the shared gradient, shape (n_params,): the sum of :meth:`adjust`'s rows."""
        return self.adjust(grads).sum(0)


class NoAdjustment(GradientStrategy):
    """Plain multi-task training: the shared gradient is the sum of the task gradients."""

    needs_task_gradients = False

    def adjust(self, grads):
        return grads


class HTLNetAdjustment(GradientStrategy):
    """The gradient rule of HTLNet §4 (the paper's Algorithm 1), anchored on the core task.

    For every stage gradient ``G_t`` and the core gradient ``G_c``:

    1. direction: if ``G_t . G_c < 0``, ``G_t <- G_t - (G_t . G_c / ||G_c||^2) G_c`` (PCGrad's
       projection onto the normal plane of ``G_c``; ``G_c`` itself is never changed);
    2. magnitude, on the projected ``G_t``: ``r = clip(||G_c|| / ||G_t||, 1/C, C)``,
       ``G_t <- gamma r G_t + (1 - gamma) G_t`` (MetaBalance's relaxation with the current step's norms);
    3. shared gradient ``= G_c + sum_t G_t``.

    Parameters
    ----------
    relax_factor : float, default=0.1
        ``gamma`` in [0, 1]; 0 keeps stage magnitudes, 1 rescales them to the core's norm.
    clip_ratio : float, default=10.0
        ``C >= 1``, bound of the magnitude ratio.
    project : bool, default=True
        Apply step 1 (False is the paper's "without projection" ablation).
    rescale : bool, default=True
        Apply step 2 (False is the paper's "without magnitude rule" ablation).

    Notes
    -----
    When the core gradient is zero (no core label in the batch) the projection is skipped and the
    ratio is ``1 / C``.  A stage with a zero gradient stays zero.
    """

    def __init__(self, relax_factor=0.1, clip_ratio=10.0, project=True, rescale=True):
        self.relax_factor = float(relax_factor)
        self.clip_ratio = float(clip_ratio)
        self.project = project
        self.rescale = rescale

    def adjust(self, grads):
        core, stages = grads[-1], grads[:-1]
        if stages.shape[0] == 0:
            return grads.clone()
        core_sq = core.dot(core)
        if self.project and core_sq > 0:
            dots = stages @ core
            coef = torch.where(dots < 0, dots / core_sq, torch.zeros_like(dots))
            stages = stages - coef.unsqueeze(1) * core
        if self.rescale:
            ratio = core_sq.sqrt() / stages.norm(dim=1).clamp_min(_EPS)
            ratio = ratio.clamp(1.0 / self.clip_ratio, self.clip_ratio)
            gamma = self.relax_factor
            stages = stages * (gamma * ratio + (1.0 - gamma)).unsqueeze(1)
        return torch.cat([stages, core.unsqueeze(0)])


class PCGrad(GradientStrategy):
    """PCGrad (Yu et al., NeurIPS 2020): project each task's gradient off every conflicting one.

    For each task i, for each other task j in a random order: if ``g_i . g_j < 0``,
    ``g_i <- g_i - (g_i . g_j / ||g_j||^2) g_j`` (with the original ``g_j``); the shared gradient is the
    sum.  All tasks, the core included, are treated alike.

    Parameters
    ----------
    seed : int, optional
        Seeds the random task order (a private generator).
    """

    def __init__(self, seed=None):
        self.generator = torch.Generator()
        if seed is not None:
            self.generator.manual_seed(int(seed))

    def adjust(self, grads):
        n = grads.shape[0]
        sq = (grads * grads).sum(1)
        out = []
        for i in range(n):
            g = grads[i].clone()
            for j in torch.randperm(n, generator=self.generator).tolist():
                if j == i or sq[j] == 0:
                    continue
                dot = g.dot(grads[j])
                if dot < 0:
                    g = g - dot / sq[j] * grads[j]
            out.append(g)
        return torch.stack(out)


class MetaBalance(GradientStrategy):
    """MetaBalance (He et al., WWW 2022) with the core task as the target task.

    Each stage (auxiliary) gradient's magnitude is pulled towards the core's using moving averages of
    the norms: ``m_t <- beta m_t + (1 - beta) ||G_t||``, ``G_t <- r (m_c / m_t) G_t + (1 - r) G_t``; no
    projection.  The shared gradient is ``G_c + sum_t G_t``.

    Parameters
    ----------
    relax_factor : float, default=0.1
        ``r`` in [0, 1].
    beta : float, default=0.9
        Moving-average factor of the norms.
    """

    def __init__(self, relax_factor=0.1, beta=0.9):
        self.relax_factor = float(relax_factor)
        self.beta = float(beta)
        self.norms = None

    def adjust(self, grads):
        norms = grads.norm(dim=1)
        self.norms = norms if self.norms is None else self.beta * self.norms + (1 - self.beta) * norms
        core, stages = grads[-1], grads[:-1]
        ratio = self.norms[-1] / self.norms[:-1].clamp_min(_EPS)
        r = self.relax_factor
        return torch.cat([stages * (r * ratio + (1 - r)).unsqueeze(1), core.unsqueeze(0)])


class UncertaintyWeighting(NoAdjustment):
    """Kendall et al. (CVPR 2018): learned per-task loss weights from homoscedastic uncertainty.

    The weighting happens in the loss (:class:`sk_htlnet.losses.HybridLoss` with ``uncertainty=True``
    learns ``s_t = log sigma_t^2``: ``exp(-s) L + s / 2`` for a stage, ``exp(-s) L / 2 + s / 2`` for the
    core); the gradients are then summed as usual.
    """

    uses_uncertainty = True


GRADIENT_ADJUSTMENTS = ("htlnet", "none", "pcgrad", "metabalance", "uncertainty")

# relax_factor="auto" and clip_ratio="auto" on a transformed core (a re-implementation's choices,
# HTLNET.md §4: the paper publishes none)
TRANSFORMED_RELAX_FACTOR = 0.1
TRANSFORMED_CLIP_RATIO = 10.0


def resolve_rule(relax_factor, clip_ratio, core_loss_scale, core_units):
    """The ``(gamma, C)`` of HTLNet §4 that ``relax_factor`` and ``clip_ratio`` give a fit.

    Parameters
    ----------
    relax_factor, clip_ratio : float or "auto"
        The estimator's parameters; a number is returned as it is (float).
    core_loss_scale : float
        The factor ``s`` the core's loss carries (the criterion's ``core_loss_scale``: the core's
        variance for a squared error in its own units, else 1).
    core_units : bool
        Whether the core's loss is in the core's own units (``target_transform="none"`` with the
        squared error), so that its gradient scales with the unit the core is measured in.

    Returns
    -------
    (float, float)
        On a transformed core (log1p, standardised, or a likelihood) "auto" is gamma = 0.1 and
        C = 10.  In the core's own units it is gamma = 1 and C = 10 max(s, 1/s): the core's
        gradient on the shared embedding is ``s`` times what it is on the standardised scale, so a
        fixed C = 10 caps the magnitude step far below it (the stages' gradients were then left
        orders of magnitude below the core's, and the rule changed nothing), while with gamma = 1
        and a C that scales with ``s`` the step gives each stage gradient the core's norm,
        ``G_t <- ||G_c|| G_t / ||G_t||``, which does not depend on the core's unit
        (tests/test_paper_regime.py: a core in units 1e6 times larger trains the same stages).
    """
    if relax_factor == "auto":
        relax_factor = 1.0 if core_units else TRANSFORMED_RELAX_FACTOR
    if clip_ratio == "auto":
        s = float(core_loss_scale)
        clip_ratio = TRANSFORMED_CLIP_RATIO * (max(s, 1.0 / s) if core_units and s > 0 else 1.0)
    return float(relax_factor), float(clip_ratio)


def get_strategy(name, *, relax_factor=0.1, clip_ratio=10.0, project=True, rescale=True, seed=None):
    """Strategy object for a ``gradient_adjustment`` name (one of ``GRADIENT_ADJUSTMENTS``)."""
    if name == "htlnet":
        return HTLNetAdjustment(relax_factor=relax_factor, clip_ratio=clip_ratio, project=project, rescale=rescale)
    if name == "none":
        return NoAdjustment()
    if name == "pcgrad":
        return PCGrad(seed=seed)
    if name == "metabalance":
        return MetaBalance(relax_factor=relax_factor)
    if name == "uncertainty":
        return UncertaintyWeighting()
    raise ValueError(f"gradient_adjustment must be one of {GRADIENT_ADJUSTMENTS}, got {name!r}")
