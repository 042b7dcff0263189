"""Speed and memory: ratios measured in one run (issue: fast at every size).

On ``make_funnel`` data (20 categorical fields of mixed cardinality up to 1e6, 10 numeric, 2 stages)
at each size in ``--sizes``, one epoch of each of:

(a) ``HTLNetRegressor(gradient_adjustment="none")`` against a minimal hand-written PyTorch loop
    training the identical module (same tensors, batch size, loss, Adam) - the wrapper's cost;
(b) ``gradient_adjustment="htlnet"`` against ``"none"`` on the same model - the rule's cost;
(c) our ``architecture="mmoe"`` / ``"ple"`` against torch-rechub 0.9.0's MMOE / PLE trained by the
    same raw loop at identical sizes, and HTLNet against them;
(d) ``predict`` rows/s against a raw ``torch.inference_mode`` forward of the same module on
    ready-made tensors (so (d) includes our DataFrame encoding);
(e) peak resident memory of a fit (in a fresh process that loads the data from a pickle written by
    this script, so the data generation does not count) against the size of the input data.

    python benchmarks/speed.py                 # sizes 1e5 1e6 1e7
    python benchmarks/speed.py --quick         # 5,000 rows, for the test suite

Writes ``--out``/speed.csv and prints the ratio tables.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sk_htlnet import HTLNetRegressor  # noqa: E402
from sk_htlnet.datasets import make_funnel  # noqa: E402
from sk_htlnet.modules import SharedEmbedding  # noqa: E402
from sk_htlnet.net import FunnelDataset  # noqa: E402

CARDINALITIES = [1_000_000, 100_000, 10_000, 1_000, 100, 10] * 3 + [50, 5]  # 20 fields
SIZES = dict(embedding_dim=16, tower_units=(128, 64, 32), batch_size=4096, n_threads=1, random_state=0)
# the model of the comparison: the paper's linear numerics and MSE, so the ratios measure the code paths
# (wrapper, rule, architecture), not the choice of encoding or loss; the peer gets the same inputs
MODEL = dict(numeric_encoding="linear", core_loss="mse")


def data(n):
    return make_funnel(n, n_stages=2, n_categorical=20, n_numeric=10, cardinality=CARDINALITIES, random_state=0)


def _tensors(est, X, Y):
    inputs = est._encoder.transform(X)
    return FunnelDataset(inputs["cat"], inputs["num"], inputs["num_missing"], est._core_targets(Y).astype(np.float32))


def ours(X, Y, **params):
    """Seconds for one epoch of HTLNetRegressor (no validation split), and the fitted estimator."""
    est = HTLNetRegressor(**{**SIZES, **MODEL, **params}, max_iter=1, early_stopping=False)
    t0 = time.perf_counter()
    est.fit(X, Y)
    return time.perf_counter() - t0, est


def raw_epoch(module, dataset, batch_size, criterion, forward):
    """A minimal PyTorch training loop: shuffle, slice, forward, loss, backward, optimiser step.

    The optimisers mirror the estimator's: SparseAdam on embedding tables that produce sparse
    gradients (``sparse_updates``), Adam on every other parameter."""
    tables = [m.table for m in module.modules() if isinstance(m, SharedEmbedding) and m.sparse]
    sparse = {id(t) for t in tables}
    optimizers = [torch.optim.Adam([p for p in module.parameters() if id(p) not in sparse], lr=1e-3)]
    if tables:
        optimizers.append(torch.optim.SparseAdam(tables, lr=1e-3))
    module.train()
    t0 = time.perf_counter()
    order = torch.randperm(len(dataset))
    for start in range(0, len(dataset), batch_size):
        x, y = dataset._slice(order[start:start + batch_size])
        for opt in optimizers:
            opt.zero_grad()
        criterion(forward(module, x), y).sum().backward()
        for opt in optimizers:
            opt.step()
    return time.perf_counter() - t0


def _ours_forward(module, x):
    return module(**x)


def rechub_epoch(name, est, dataset):
    import rechub_peer
    from torch.nn import functional as F

    k = est.n_stages_
    model = rechub_peer._build(name, est._encoder, k + 1, {**SIZES, "tower_units": SIZES["tower_units"]})

    def loss(pred, y):
        stages = [F.binary_cross_entropy(pred[:, t].clamp(1e-7, 1 - 1e-7), y[:, t]) for t in range(k)]
        return torch.stack(stages + [F.mse_loss(pred[:, k], y[:, k])])

    return raw_epoch(model, dataset, SIZES["batch_size"], loss, lambda m, x: m(rechub_peer._inputs(x)))


def measure(n, quick, repeats=1):
    """Seconds of each measurement at n rows; with ``repeats`` > 1, the fastest of that many runs
    of the whole set (a run's slowest moments are the machine's, not the code's)."""
    runs = [_measure_once(n) for _ in range(repeats)]
    return {key: min(run[key] for run in runs) if key.endswith("_s") else runs[0][key] for key in runs[0]}


def _measure_once(n):
    X, Y = data(n)
    rows = {"rows": n}
    t_none, est_none = ours(X, Y, gradient_adjustment="none")
    t_rule, _ = ours(X, Y, gradient_adjustment="htlnet")
    dataset = _tensors(est_none, X, Y)
    module = est_none.net_.module_
    rows["ours_none_s"] = t_none
    rows["ours_none_loop_s"] = sum(h["dur"] for h in est_none.history_)  # skorch's epoch, without set-up
    rows["raw_loop_s"] = raw_epoch(module, dataset, SIZES["batch_size"], est_none.net_.criterion_, _ours_forward)
    rows["ours_htlnet_s"] = t_rule
    for arch in ("mmoe", "ple"):
        rows[f"ours_{arch}_s"] = ours(X, Y, architecture=arch, gradient_adjustment="none")[0]
        try:
            rows[f"rechub_{arch}_s"] = rechub_epoch({"mmoe": "MMOE", "ple": "PLE"}[arch], est_none, dataset)
        except ImportError:
            rows[f"rechub_{arch}_s"] = float("nan")
    t0 = time.perf_counter()
    est_none.predict(X)
    rows["ours_predict_s"] = time.perf_counter() - t0
    module.eval()
    t0 = time.perf_counter()
    with torch.inference_mode():
        for start in range(0, len(dataset), SIZES["batch_size"]):
            module(**dataset._slice(slice(start, start + SIZES["batch_size"]))[0])
    rows["raw_predict_s"] = time.perf_counter() - t0
    rows["input_mb"] = (X.memory_usage(deep=True).sum() + Y.memory_usage(deep=True).sum()) / 2**20
    return rows


def peak_rss_mb():
    """This process's peak resident memory in MB: VmHWM from /proc (Linux), which starts afresh with
    the process image; ``ru_maxrss`` would carry over the parent's peak through fork and exec."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_memory(X, Y):
    """Peak resident memory (MB) of a fresh process: after its imports, after loading (X, Y) from a
    pickle, and after fitting one epoch with the rule (``ru_maxrss``, a high-water mark)."""
    import pickle
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.pkl"
        with open(path, "wb") as f:
            pickle.dump((X, Y), f, protocol=pickle.HIGHEST_PROTOCOL)
        code = (
            "import sys, json, pickle; sys.path.insert(0, %r); import speed; peak = speed.peak_rss_mb; "
            "base = peak(); X, Y = pickle.load(open(%r, 'rb')); loaded = peak(); "
            "speed.ours(X, Y, gradient_adjustment='htlnet'); print(json.dumps([base, loaded, peak()]))"
        ) % (str(Path(__file__).resolve().parent), str(path))
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[1e5, 1e6, 1e7])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=1, help="keep the fastest of this many runs per size")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    sizes = [5000] if args.quick else [int(s) for s in args.sizes]
    torch.set_num_threads(1)
    ours(*data(2000))  # warm-up: the first torch calls are slow
    results = []
    for n in sizes:
        row = measure(n, args.quick, args.repeats)
        row["peak_imports_mb"], row["peak_loaded_mb"], row["peak_fit_mb"] = peak_memory(*data(n))
        results.append(row)
        print(json.dumps(row), flush=True)
    table = pd.DataFrame(results).set_index("rows")
    ratios = pd.DataFrame({
        "(a) wrapper / raw loop": table["ours_none_s"] / table["raw_loop_s"],
        "(a) training loop only / raw loop": table["ours_none_loop_s"] / table["raw_loop_s"],
        "(b) htlnet rule / none": table["ours_htlnet_s"] / table["ours_none_s"],
        "(c) rechub MMoE / ours (speed-up)": table["rechub_mmoe_s"] / table["ours_mmoe_s"],
        "(c) rechub PLE / ours (speed-up)": table["rechub_ple_s"] / table["ours_ple_s"],
        "(c) HTLNet / rechub MMoE": table["ours_htlnet_s"] / table["rechub_mmoe_s"],
        "(d) predict / raw forward": table["ours_predict_s"] / table["raw_predict_s"],
        "(e) peak memory of a fit / input": (table["peak_fit_mb"] - table["peak_imports_mb"]) / table["input_mb"],
        "fit rows/s (htlnet)": table.index / table["ours_htlnet_s"],
    })
    args.out.mkdir(parents=True, exist_ok=True)
    table.join(ratios).to_csv(args.out / ("speed_quick.csv" if args.quick else "speed.csv"))
    print(ratios.to_string(float_format=lambda v: f"{v:.2f}"))
    return table, ratios


if __name__ == "__main__":
    main()
