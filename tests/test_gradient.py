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


@pytest.mark.parametrize("name", ["htlnet", "none", "pcgrad", "metabalance", "uncertainty"])
def test_adjusted_rows_are_what_combine_sums(name):
    """``adjust`` gives one row per task (the paper's Figure 5 plots their norms); ``combine`` applies
    their sum, and the core's row is the core's own gradient under the HTLNet rule."""
    grads = torch.tensor([[-1.0, 2.0, 0.5], [0.3, -0.2, 4.0], [2.0, 1.0, -1.0]])
    rows = get_strategy(name, seed=0).adjust(grads)
    assert rows.shape == grads.shape
    torch.testing.assert_close(rows.sum(0), get_strategy(name, seed=0).combine(grads))
    if name == "htlnet":
        torch.testing.assert_close(rows[-1], grads[-1])


def test_net_records_each_task_gradient_norm_before_and_after_the_rule():
    """With gamma = 1 and a C that does not bind, every stage row after the rule has the core's norm
    (HTLNet §4's magnitude step), while before it the norms differ."""
    from sk_htlnet import HTLNetRegressor
    from sk_htlnet.datasets import make_funnel

    X, Y = make_funnel(600, n_stages=2, random_state=0)
    est = HTLNetRegressor(relax_factor=1.0, clip_ratio=1e12, max_iter=1, early_stopping=False, batch_size=200,
                          random_state=0, n_threads=1, net_kwargs={"record_gradient_norms": True}).fit(X, Y)
    batches = est.history_[-1]["batches"]
    assert len(batches) == 3
    for b in batches:
        core = b["grad_norm_adjusted_core"]
        assert core == pytest.approx(b["grad_norm_core"])
        for stage in ("stage_1", "stage_2"):
            assert b[f"grad_norm_adjusted_{stage}"] == pytest.approx(core, rel=1e-4)
        assert b["grad_norm_stage_1"] != pytest.approx(core, rel=1e-2)
