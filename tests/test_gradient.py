"""The gradient rule of HTLNet §4 on hand-made gradients."""

import numpy as np
import pytest
import torch

from sk_htlnet.gradient import HTLNetAdjustment, NoAdjustment, get_strategy


def _rule(gamma=0.5, C=10.0, **kw):
    return HTLNetAdjustment(relax_factor=gamma, clip_ratio=C, **kw)


def test_conflicting_stage_gradient_is_projected_then_rescaled():
    core = torch.tensor([2.0, 0.0, 0.0])
    stage = torch.tensor([-1.0, 1.0, 0.0])  # cos < 0
    gamma = 0.5
    out = _rule(gamma).combine(torch.stack([stage, core]))
    projected = torch.tensor([0.0, 1.0, 0.0])  # stage - (stage.core / |core|^2) core
    r = 2.0 / 1.0
    expected = core + gamma * r * projected + (1 - gamma) * projected
    torch.testing.assert_close(out, expected)


def test_non_conflicting_gradient_is_not_projected():
    core = torch.tensor([2.0, 0.0])
    stage = torch.tensor([1.0, 1.0])  # cos > 0
    gamma = 0.25
    out = _rule(gamma).combine(torch.stack([stage, core]))
    r = 2.0 / np.sqrt(2.0)
    torch.testing.assert_close(out, core + (gamma * r + 1 - gamma) * stage)


@pytest.mark.parametrize("scale, ratio", [(1e-4, 10.0), (1e4, 0.1)])
def test_magnitude_ratio_is_clipped(scale, ratio):
    core = torch.tensor([1.0, 0.0])
    stage = torch.tensor([0.0, scale])
    gamma = 1.0
    out = _rule(gamma, C=10.0).combine(torch.stack([stage, core]))
    torch.testing.assert_close(out, core + ratio * stage)


def test_core_gradient_is_never_changed_and_shared_sum():
    g = torch.Generator().manual_seed(0)
    grads = torch.randn(4, 50, generator=g)
    rule = _rule(0.3, 5.0)
    out = rule.combine(grads)
    # subtracting the adjusted stages one by one leaves exactly the core gradient
    adjusted = []
    for t in range(3):
        single = rule.combine(torch.stack([grads[t], grads[3]])) - grads[3]
        adjusted.append(single)
    torch.testing.assert_close(out, grads[3] + sum(adjusted))


def test_ablations_and_degenerate_cases():
    core = torch.tensor([1.0, 0.0])
    stage = torch.tensor([-3.0, 4.0])
    no_proj = _rule(0.0, project=False).combine(torch.stack([stage, core]))
    torch.testing.assert_close(no_proj, core + stage)
    no_scale = _rule(1.0, rescale=False).combine(torch.stack([stage, core]))
    torch.testing.assert_close(no_scale, core + torch.tensor([0.0, 4.0]))
    # zero core gradient: no projection, ratio 1/C; zero stage gradient stays zero
    out = _rule(1.0, C=4.0).combine(torch.stack([stage, torch.zeros(2)]))
    torch.testing.assert_close(out, stage / 4.0)
    out = _rule(1.0).combine(torch.stack([torch.zeros(2), core]))
    torch.testing.assert_close(out, core)
    # no stage at all (k = 0): the core gradient alone
    torch.testing.assert_close(_rule().combine(core[None]), core)


def test_strategy_registry():
    assert isinstance(get_strategy("none"), NoAdjustment)
    assert not get_strategy("none").needs_task_gradients
    s = get_strategy("htlnet", relax_factor=0.2, clip_ratio=3.0)
    assert (s.relax_factor, s.clip_ratio) == (0.2, 3.0)
    with pytest.raises(ValueError, match="gradient_adjustment"):
        get_strategy("magic")
