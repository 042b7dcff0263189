"""The torch modules of HTLNet: shapes, the LEU, the IFU, stop-gradient and the sparse gradients."""

import pytest
import torch

from sk_htlnet.modules import ARCHITECTURES, HTLNet, InformationFusion, LabelEmbedding, SharedEmbedding


def _batch(n=32, cards=(5, 7), n_num=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    cat = torch.stack([torch.randint(0, c, (n,), generator=g) for c in cards] or [torch.zeros(n, dtype=torch.long)], dim=1)
    cat = cat[:, : len(cards)]
    num = torch.randn(n, n_num, generator=g)
    missing = torch.rand(n, n_num, generator=g) < 0.2
    num = torch.where(missing, torch.zeros_like(num), num)
    return {"cat": cat, "num": num, "num_missing": missing}


@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_output_shape_for_any_number_of_stages(k):
    torch.manual_seed(0)
    model = HTLNet([5, 7], 3, k, embedding_dim=4, tower_units=(16, 8), label_embedding_dim=4, fusion_dim=6)
    out = model(**_batch())
    assert out.shape == (32, k + 1)
    assert torch.isfinite(out).all()
    assert len(model.label_embeddings) == k
    assert len(model.rep_fusions) == k


def test_only_categorical_or_only_numeric_fields():
    model = HTLNet([5, 7], 0, 1, embedding_dim=4, tower_units=(8,))
    b = _batch(n_num=0)
    assert model(**b).shape == (32, 2)
    model = HTLNet([], 3, 1, embedding_dim=4, tower_units=(8,))
    b = _batch(cards=())
    assert model(**b).shape == (32, 2)


def test_leu_is_stochastic_in_training_and_deterministic_in_eval():
    leu = LabelEmbedding(4)
    logit = torch.zeros(1000)
    leu.train()
    a, b = leu(logit), leu(logit)
    assert not torch.equal(a, b)
    # a hard sample puts exactly one of the two rows forward
    rows = torch.stack([leu.table[0].expand(1000, 4), leu.table[1].expand(1000, 4)])
    assert ((a == rows[0]).all(1) | (a == rows[1]).all(1)).all()
    leu.eval()
    c, d = leu(logit), leu(logit)
    assert torch.equal(c, d)
    torch.testing.assert_close(c[0], 0.5 * leu.table[0] + 0.5 * leu.table[1])


def test_hard_sample_probability_equals_prediction():
    # docs/method.md (Model): with the straight-through sample P(sample = 1) = y_hat exactly.
    leu = LabelEmbedding(2)
    g = torch.Generator().manual_seed(0)
    logit = torch.full((200_000,), -2.0)  # y_hat = 0.1192
    q1 = leu.label_probability(logit, g)
    assert set(q1.unique().tolist()) <= {0.0, 1.0}
    # binomial standard error sqrt(p(1-p)/n) = 7e-4; 5 s.e.
    assert abs(q1.mean().item() - torch.sigmoid(torch.tensor(-2.0)).item()) < 3.6e-3


def test_attention_fusion_weights_sum_to_one_and_concat_differs():
    x = torch.randn(8, 3, 5)
    att = InformationFusion(5, 3, 4, "attention")
    out = att(x)
    assert out.shape == (8, 4)
    torch.testing.assert_close(att.last_weights.sum(1), torch.ones(8))
    cat = InformationFusion(5, 3, 4, "concat")
    assert cat(x).shape == (8, 4)
    with pytest.raises(ValueError, match="fusion"):
        InformationFusion(5, 3, 4, "sum")


TRANSFER_PATHS = {"both": {}, "label_embedding": {"representation_transfer": False},
                  "representation": {"label_embedding": False}}


@pytest.mark.parametrize("per_task", [False, True], ids=["joined", "per_task"])
@pytest.mark.parametrize("path", list(TRANSFER_PATHS))
@pytest.mark.parametrize("stop_gradient", [True, False])
def test_stop_gradient_keeps_the_core_loss_out_of_the_upstream_towers(stop_gradient, path, per_task):
    """HTLNet §2.6: the upstream logit (label-embedding path) and representation (IFU path) are
    detached, so the core loss trains no parameter of a stage tower or head.  With
    ``stop_gradient=False`` the same loss does reach every upstream tower through each path: the
    control that shows the paths carry gradient at all.  ``per_task`` is the graph the gradient rule
    differentiates (one output per task)."""
    torch.manual_seed(0)
    model = HTLNet([5, 7], 3, 2, embedding_dim=4, tower_units=(16, 8), label_embedding_dim=4, fusion_dim=6,
                   stop_gradient=stop_gradient, **TRANSFER_PATHS[path])
    model.train()
    b = _batch()
    if per_task:
        core = model.forward_from_embedding(model.embed(**b), per_task=True)[2][:, 0]
    else:
        core = model(**b)[:, 2]
    core.pow(2).mean().backward()  # the core loss only
    for t in (0, 1):
        upstream = list(model.towers[t].parameters()) + list(model.heads[t].parameters())
        reached = [p.grad is not None and bool(torch.count_nonzero(p.grad)) for p in upstream]
        assert not any(reached) if stop_gradient else any(reached), (t, reached)
    # ...while the transfer units, the core tower and the shared embedding do learn from it
    if path != "representation":
        assert torch.count_nonzero(model.label_embeddings[0].table.grad) > 0
    if path != "label_embedding":
        assert torch.count_nonzero(model.rep_fusions[1].value.weight.grad) > 0
    assert torch.count_nonzero(model.towers[2].layers[0][0].weight.grad) > 0
    assert torch.count_nonzero(model.embedding.table.grad) > 0


def test_stage_loss_does_not_reach_downstream_towers():
    model = HTLNet([5, 7], 3, 2, embedding_dim=4, tower_units=(16, 8))
    out = model(**_batch())
    out[:, 0].sum().backward()
    for t in (1, 2):
        for p in model.towers[t].parameters():
            assert p.grad is None or torch.count_nonzero(p.grad) == 0


def test_sparse_grad_equals_dense_autograd_gradient():
    torch.manual_seed(0)
    emb = SharedEmbedding([5, 7], 3, 4)
    b = _batch()
    e = emb(**b)
    w = torch.randn(2, *e.shape)
    losses = [(e * w[0]).sum(), (e * w[1]).pow(2).sum()]
    params = [emb.table, emb.num_weight, emb.num_bias, emb.num_missing]
    dense = [torch.cat([g.flatten() for g in torch.autograd.grad(l, params, retain_graph=True)]) for l in losses]
    grad_e = torch.stack([torch.autograd.grad(l, e, retain_graph=True)[0] for l in losses])
    rows, sparse = emb.sparse_grad(grad_e, **b)
    for t in range(2):
        assert torch.allclose(sparse[t].dot(sparse[t]), dense[t].dot(dense[t]), rtol=1e-5)
    torch.testing.assert_close(sparse[0].dot(sparse[1]), dense[0].dot(dense[1]), rtol=1e-5, atol=1e-5)
    # writing the sparse vector back reproduces the dense gradient exactly
    emb.set_sparse_grad(rows, sparse[1])
    written = torch.cat([p.grad.flatten() for p in params])
    torch.testing.assert_close(written, dense[1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_core_prior_without_stage_priors_goes_to_the_core_head(name):
    # found by a new user: without stage_logit_priors the core prior was written into stage 1's head
    torch.manual_seed(0)
    model = ARCHITECTURES[name]([7], 3, 2, embedding_dim=4, tower_units=(8,), core_prior=[5.0, -3.0, 2.0]).eval()
    out = model(torch.zeros(4, 1, dtype=torch.long), torch.zeros(4, 3), torch.zeros(4, 3, dtype=torch.bool))
    assert out.shape == (4, 2 + 3)  # two stage logits, then the three ZILN outputs
    assert (out[:, :2].abs() < 2).all()  # default-initialised stage heads, not the prior's 5
    assert ((out[:, 2] - 5.0).abs() < 2).all() and ((out[:, 3] + 3.0).abs() < 2).all()  # the core head's
    with pytest.raises(ValueError, match="stage_logit_priors holds 1 values for 2 stage heads"):
        ARCHITECTURES[name]([7], 3, 2, stage_logit_priors=[0.0], core_prior=0.0)
