"""torch-rechub 0.9.0's SharedBottom, MMoE and PLE on hybrid targets, trained like our estimator.

The peer library's models are built with the sizes of ``compare.SIZES`` (embedding 16 per
categorical field, a first layer of 128 units for the bottom / experts, towers of 64 and 32) and
trained by the loop below with what ``HTLNetRegressor`` uses: the same feature encoding (ids for
categorical fields; standardised, clipped numerics as rechub dense features, missing = 0), the same
validation rows (``FunnelValidSplit`` with the seed our estimator derives from ``random_state``),
Adam, batch size, maximum epochs, early stopping on the same monitored loss (stage BCEs plus the core
MSE over its variance, patience ``n_iter_no_change``, best weights restored), and the same core
target transform and retransformation.  rechub's own differences stay: BatchNorm in every MLP layer,
raw dense features instead of embedded ones, no missing-value embeddings, sigmoid outputs.
"""

import time

import numpy as np
import torch
from sklearn.utils import check_random_state
from torch.nn import functional as F

from sk_htlnet.core_transform import CoreTransform
from sk_htlnet.data import FunnelDataset, FunnelValidSplit
from sk_htlnet.preprocessing import FeatureEncoder


def _build(name, enc, n_tasks, sizes):
    from torch_rechub.basic.features import DenseFeature, SparseFeature
    from torch_rechub.models.multi_task import MMOE, PLE, SharedBottom

    d = sizes["embedding_dim"]
    features = [SparseFeature(f"c{j}", vocab_size=c, embed_dim=d) for j, c in enumerate(enc.cardinalities_)]
    features += [DenseFeature(f"n{j}") for j in range(len(enc.mean_))]
    first, rest = [sizes["tower_units"][0]], list(sizes["tower_units"][1:])
    task_types = ["classification"] * (n_tasks - 1) + ["regression"]
    towers = [{"dims": rest} for _ in range(n_tasks)]
    if name == "SharedBottom":
        return SharedBottom(features, task_types, bottom_params={"dims": first}, tower_params_list=towers)
    if name == "MMOE":
        return MMOE(features, task_types, n_expert=4, expert_params={"dims": first}, tower_params_list=towers)
    return PLE(features, task_types, n_level=2, n_expert_specific=2, n_expert_shared=2,
               expert_params={"dims": first}, tower_params_list=towers)


def _inputs(batch):
    x = {f"c{j}": batch["cat"][:, j].long() for j in range(batch["cat"].shape[1])}
    x.update({f"n{j}": batch["num"][:, j] for j in range(batch["num"].shape[1])})
    return x


def _losses(pred, y, k, core_var):
    """Per-task losses (stage BCE on probabilities, core MSE), and the monitored total."""
    losses = [F.binary_cross_entropy(pred[:, t].clamp(1e-7, 1 - 1e-7), y[:, t]) for t in range(k)]
    losses.append(F.mse_loss(pred[:, k], y[:, k]))
    losses = torch.stack(losses)
    monitor = losses.clone()
    monitor[k] = monitor[k] / core_var
    return losses, monitor.sum()


def _predict_raw(model, data, batch_size):
    model.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(data), batch_size):
            x, _ = data._slice(slice(start, start + batch_size))
            out.append(model(_inputs(x)))
    return torch.cat(out).double().numpy()


def fit(name, X, Y, seed, max_iter, sizes):
    """Train a rechub model; returns (predict(X) -> (n, k + 1), fit s/epoch, parameter count, model)."""
    enc = FeatureEncoder()
    inputs = enc.fit_transform(X)
    values = Y.to_numpy(dtype=np.float64)
    k = values.shape[1] - 1
    transform = CoreTransform("log1p" if np.nanmin(values[:, k]) >= 0 else "standardize").fit(values[:, k])
    y_model = values.copy()
    y_model[:, k] = transform.forward(values[:, k])
    data = FunnelDataset(inputs["cat"], inputs["num"], inputs["num_missing"], y_model.astype(np.float32))
    split_seed = int(check_random_state(seed).randint(np.iinfo(np.int32).max))  # as HTLNetRegressor
    train, valid = FunnelValidSplit(1 / 9, k, split_seed)(data)
    core_var = float(np.var(y_model[:, k])) or 1.0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(split_seed)
        model = _build(name, enc, k + 1, sizes)
    opt = torch.optim.Adam(model.parameters(), lr=sizes["learning_rate"])
    gen = torch.Generator().manual_seed(split_seed)
    bs, best, best_state, misses, epochs = sizes["batch_size"], np.inf, None, 0, 0
    t0 = time.perf_counter()
    for _ in range(max_iter):
        epochs += 1
        model.train()
        order = torch.randperm(len(train), generator=gen)
        for start in range(0, len(train), bs):
            x, y = train._slice(order[start:start + bs])
            if len(y) < 2:  # BatchNorm cannot train on a single row
                continue
            opt.zero_grad()
            losses, _ = _losses(model(_inputs(x)), y, k, core_var)
            losses.sum().backward()
            opt.step()
        pred = torch.as_tensor(_predict_raw(model, valid, bs), dtype=torch.float32)
        _, monitored = _losses(pred, valid.targets(), k, core_var)
        if monitored.item() < best - 1e-4:
            best, misses = monitored.item(), 0
            best_state = {n: v.clone() for n, v in model.state_dict().items()}
        else:
            misses += 1
            if misses >= sizes["n_iter_no_change"]:
                break
    model.load_state_dict(best_state)
    per_epoch = (time.perf_counter() - t0) / epochs
    transform.fit_retransformation(values[:, k], _predict_raw(model, data, bs)[:, k])

    def predict(X_new):
        new = enc.transform(X_new)
        raw = _predict_raw(model, FunnelDataset(new["cat"], new["num"], new["num_missing"]), bs)
        raw[:, k] = transform.inverse(raw[:, k])
        return raw

    return predict, per_epoch, int(sum(p.numel() for p in model.parameters())), model
