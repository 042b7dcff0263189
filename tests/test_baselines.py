"""The paper's baselines and ablations as parameters (architecture=, gradient_adjustment=, switches)."""

import numpy as np
import pytest
import torch

from sk_htlnet import HTLNetRegressor
from sk_htlnet.datasets import make_funnel
from sk_htlnet.gradient import MetaBalance, PCGrad, get_strategy
from sk_htlnet.modules import ARCHITECTURES, ESMM, HTLNet

from _sizes import SMALL_NET

FAST = dict(SMALL_NET, max_iter=2, random_state=0, n_threads=1, n_experts=2)


@pytest.fixture(scope="module")
def funnel():
    return make_funnel(1200, n_stages=2, n_categorical=2, n_numeric=3, stage_rates=0.5, random_state=0)


def _batch(n=16):
    g = torch.Generator().manual_seed(0)
    return {"cat": torch.randint(0, 5, (n, 2), generator=g), "num": torch.randn(n, 3, generator=g),
            "num_missing": torch.zeros(n, 3, dtype=torch.bool)}


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
@pytest.mark.parametrize("k", [0, 2])
def test_every_architecture_fits_hybrid_targets(funnel, architecture, k):
    X, Y = funnel
    y = Y if k else Y["core"]
    est = HTLNetRegressor(**FAST, architecture=architecture).fit(X, y)
    pred = est.predict(X)
    assert pred.shape == ((len(X), 3) if k else (len(X),))
    assert est.net_.module_.__class__ is ARCHITECTURES[architecture]


def test_heads_start_at_the_base_rates():
    priors = [-1.0, -2.5]
    for name, cls in ARCHITECTURES.items():
        model = cls([5, 5], 3, 2, embedding_dim=4, tower_units=(16, 8), stage_logit_priors=priors, core_prior=0.7)
        model.eval()
        with torch.no_grad():
            for layer in model.modules():  # zero every weight: the output is the heads' biases only
                if isinstance(layer, torch.nn.Linear):
                    layer.weight.zero_()
            out = model(**_batch())
        torch.testing.assert_close(out[0], torch.tensor(priors + [0.7]), atol=1e-4, rtol=1e-4, msg=name)


def test_esmm_stage_probabilities_are_entire_space_products():
    model = ESMM([5, 5], 3, 3, embedding_dim=4, tower_units=(16, 8))
    with torch.no_grad():
        p = torch.sigmoid(model(**_batch())[:, :3])
        raw = model.tasks([model.embed(**_batch())] * 4)
    assert (p[:, 1] <= p[:, 0] + 1e-6).all() and (p[:, 2] <= p[:, 1] + 1e-6).all()
    torch.testing.assert_close(p[:, 2], torch.sigmoid(raw[:, :3]).prod(1), rtol=1e-4, atol=1e-6)


def test_single_task_models_share_nothing(funnel):
    X, Y = funnel
    a = HTLNetRegressor(**FAST, architecture="single_task").fit(X, Y).predict(X)
    b = HTLNetRegressor(**FAST, architecture="single_task").fit(X, Y.assign(core=Y["core"] * 0 + 1)).predict(X)
    np.testing.assert_array_equal(a[:, :2], b[:, :2])  # the core labels cannot move the stages
    shared = HTLNetRegressor(**FAST, architecture="shared_bottom").fit(X, Y).predict(X)
    shared_b = HTLNetRegressor(**FAST, architecture="shared_bottom").fit(
        X, Y.assign(core=Y["core"] * 0 + 1)).predict(X)
    assert not np.array_equal(shared[:, :2], shared_b[:, :2])  # ...while shared layers do


def test_pcgrad_projects_every_conflicting_pair():
    g1, g2 = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])
    out = PCGrad(seed=0).combine(torch.stack([g1, g2]))
    p1 = g1 - (g1.dot(g2) / g2.dot(g2)) * g2  # [0.5, 0.5]
    p2 = g2 - (g2.dot(g1) / g1.dot(g1)) * g1  # [0, 1]
    torch.testing.assert_close(out, p1 + p2)
    agree = torch.stack([torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0])])
    torch.testing.assert_close(PCGrad(seed=0).combine(agree), agree.sum(0))


def test_metabalance_uses_moving_average_norms():
    mb = MetaBalance(relax_factor=1.0, beta=0.5)
    core, stage = torch.tensor([4.0, 0.0]), torch.tensor([0.0, 1.0])
    torch.testing.assert_close(mb.combine(torch.stack([stage, core])), core + 4.0 * stage)
    # second step: stage norm 3 now, averaged with 1 -> 2; core norm 4 -> 4
    torch.testing.assert_close(mb.combine(torch.stack([3 * stage, core])), core + 2.0 * 3 * stage)


@pytest.fixture(scope="module")
def summed_gradients(funnel):
    """Predictions of the fit that sums the task gradients (gradient_adjustment="none")."""
    X, Y = funnel
    return HTLNetRegressor(**FAST, gradient_adjustment="none").fit(X, Y).predict(X)


@pytest.mark.parametrize("name", ["pcgrad", "metabalance", "uncertainty", "none", "htlnet"])
def test_gradient_adjustments_train(funnel, summed_gradients, name):
    """Each rule reaches training: same seed and batches as the plain sum, so only the combined
    gradient differs, and it moves some column's predictions by 14% to 61% of their largest value;
    summing the per-task gradients (the rule skipped) moves them by under 1e-4, float rounding.
    Only "uncertainty" learns log-variances."""
    X, Y = funnel
    est = HTLNetRegressor(**FAST, gradient_adjustment=name).fit(X, Y)
    moved = (np.abs(est.predict(X) - summed_gradients).max(axis=0) / np.abs(summed_gradients).max(axis=0)).max()
    assert moved == 0 if name == "none" else moved > 0.01
    log_vars = est.net_.criterion_.log_vars
    if name == "uncertainty":  # the learned log-variances are optimised with the net
        assert log_vars is not None and torch.count_nonzero(log_vars.detach()) == 3
    else:
        assert log_vars is None


def test_gradient_rule_ablation_switches_reach_the_strategy():
    s = get_strategy("htlnet", project=False, rescale=True)
    assert (s.project, s.rescale) == (False, True)
    est = HTLNetRegressor(**FAST, gradient_projection=False, gradient_rescaling=False)
    X, Y = make_funnel(400, random_state=1)
    strategy = est.fit(X, Y).net_.gradient_strategy
    assert (strategy.project, strategy.rescale) == (False, False)


def test_htlnet_ablations_change_the_transfer_paths():
    b = _batch()
    kw = dict(embedding_dim=4, tower_units=(16, 8), label_embedding_dim=4, fusion_dim=6)
    torch.manual_seed(0)
    no_le = HTLNet([5, 5], 3, 2, label_embedding=False, **kw)
    no_le(**b)[:, 2].sum().backward()
    assert all(p.grad is None for p in no_le.label_embeddings.parameters())
    assert no_le.towers[2].layers[0][0].in_features == 6 + no_le.embedding.output_dim
    torch.manual_seed(0)
    no_rep = HTLNet([5, 5], 3, 2, representation_transfer=False, **kw)
    no_rep(**b)[:, 2].sum().backward()
    assert all(p.grad is None for p in no_rep.rep_fusions.parameters())
    torch.manual_seed(0)
    no_sg = HTLNet([5, 5], 3, 2, stop_gradient=False, **kw)
    no_sg.train()
    no_sg(**b)[:, 2].pow(2).mean().backward()  # without stop-gradient the core loss reaches tower 1
    assert torch.count_nonzero(no_sg.towers[0].layers[0][0].weight.grad) > 0
