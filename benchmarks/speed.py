"""Speed and memory: ratios measured in one run (issue: fast at every size).

On ``make_funnel`` data (20 categorical fields of mixed cardinality up to 1e6, 10 numeric, 2 stages)
at each size in ``--sizes``, one epoch of each of:

(a) ``HTLNetRegressor(gradient_adjustment="none")`` against a minimal hand-written PyTorch loop
    training the identical module (same tensors, batch size, loss, Adam) - the wrapper's cost; also
    the fit with ``retransformation="none"`` (no calibration pass) and skorch's epoch alone;
(b) ``gradient_adjustment="htlnet"`` against ``"none"`` on the same model - the rule's cost;
(c) our ``architecture="mmoe"`` / ``"ple"`` against torch-rechub 0.9.0's MMOE / PLE trained by the
    same raw loop at identical sizes, and HTLNet against them;
(d) ``predict`` rows/s against a raw ``torch.inference_mode`` forward of the same module on
    ready-made tensors (so (d) includes our DataFrame encoding), the fastest of three runs of each;
(e) peak resident memory of a fit (in a fresh process that loads the data from a pickle written by
    this script, so the data generation does not count) against the size of the input data.

Sizes above ``--all-models-up-to`` (default 1e6) run only what the scaling needs: the HTLNet fit
of (e), timed in its fresh process, and the input size.  An epoch of one model at 1e7 rows takes
about 12 minutes on one CPU core, so all eight models there would take hours.

    python benchmarks/speed.py                 # sizes 1e5 1e6 1e7
    python benchmarks/speed.py --quick         # 5,000 rows, for the test suite
    python benchmarks/speed.py --device cuda   # on a GPU (memory: also the GPU's peak allocation)

Writes ``--out``/speed.csv (every measurement and ratio) and speed.md (the table of
docs/performance.md; ``speed_cuda.*`` on a GPU) and prints the ratios.
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

CARDINALITIES = [1_000_000, 100_000, 10_000, 1_000, 100, 10] * 3 + [50, 5]  # 20 fields
SIZES = dict(embedding_dim=16, tower_units=(128, 64, 32), batch_size=4096, n_threads=1, random_state=0)
# the model of the comparison: the paper's linear numerics and MSE, so the ratios measure the code paths
# (wrapper, rule, architecture), not the choice of encoding or loss; the peer gets the same inputs
MODEL = dict(numeric_encoding="linear", core_loss="mse")
DEVICE = torch.device("cpu")  # set by --device
PREDICT_REPEATS = 3


def _sync():
    """Wait for the GPU's queued work, so a timer stops when the work is done."""
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def _to_device(batch):
    return {k: v.to(DEVICE, non_blocking=True) for k, v in batch.items()}


def data(n):
    return make_funnel(n, n_stages=2, n_categorical=20, n_numeric=10, cardinality=CARDINALITIES, random_state=0)


def _tensors(est, X, Y):
    return est.make_dataset(X, Y)


def ours(X, Y, **params):
    """Seconds for one epoch of HTLNetRegressor (no validation split), and the fitted estimator."""
    est = HTLNetRegressor(**{**SIZES, **MODEL, **params}, device=str(DEVICE), max_iter=1, early_stopping=False)
    t0 = time.perf_counter()
    est.fit(X, Y)
    _sync()
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
    module.to(DEVICE).train()
    _sync()
    t0 = time.perf_counter()
    order = torch.randperm(len(dataset))
    for start in range(0, len(dataset), batch_size):
        x, y = dataset._slice(order[start:start + batch_size])
        x, y = _to_device(x), y.to(DEVICE, non_blocking=True)
        for opt in optimizers:
            opt.zero_grad()
        criterion(forward(module, x), y).sum().backward()
        for opt in optimizers:
            opt.step()
    _sync()
    return time.perf_counter() - t0


def _ours_forward(module, x):
    return module(**x)


def rechub_epoch(name, est, dataset):
    import rechub_peer
    from torch.nn import functional as F

    k = est.n_stages_
    model = rechub_peer._build(name, est.feature_encoder_, k + 1, {**SIZES, "tower_units": SIZES["tower_units"]})

    def loss(pred, y):
        stages = [F.binary_cross_entropy(pred[:, t].clamp(1e-7, 1 - 1e-7), y[:, t]) for t in range(k)]
        return torch.stack(stages + [F.mse_loss(pred[:, k], y[:, k])])

    return raw_epoch(model, dataset, SIZES["batch_size"], loss, lambda m, x: m(rechub_peer._inputs(x)))


def measure(X, Y, repeats=1):
    """Seconds of each measurement on (X, Y); with ``repeats`` > 1, the fastest of that many runs
    of the whole set (a run's slowest moments are the machine's, not the code's)."""
    runs = [_measure_once(X, Y) for _ in range(repeats)]
    return {key: min(run[key] for run in runs) if key.endswith("_s") else runs[0][key] for key in runs[0]}


def input_mb(X, Y):
    return (X.memory_usage(deep=True).sum() + Y.memory_usage(deep=True).sum()) / 2**20


def _measure_once(X, Y):
    rows = {"rows": len(X)}
    t_none, est_none = ours(X, Y, gradient_adjustment="none")
    t_rule, _ = ours(X, Y, gradient_adjustment="htlnet")
    dataset = _tensors(est_none, X, Y)
    module = est_none.net_.module_
    rows["ours_none_s"] = t_none
    rows["ours_none_loop_s"] = sum(h["dur"] for h in est_none.history_)  # skorch's epoch, without set-up
    # without the isotonic retransformation, which costs a forward pass over (up to 200,000) training rows
    rows["ours_none_uncalibrated_s"] = ours(X, Y, gradient_adjustment="none", retransformation="none")[0]
    rows["raw_loop_s"] = raw_epoch(module, dataset, SIZES["batch_size"], est_none.net_.criterion_, _ours_forward)
    rows["ours_htlnet_s"] = t_rule
    for arch in ("mmoe", "ple"):
        rows[f"ours_{arch}_s"] = ours(X, Y, architecture=arch, gradient_adjustment="none")[0]
        try:
            rows[f"rechub_{arch}_s"] = rechub_epoch({"mmoe": "MMOE", "ple": "PLE"}[arch], est_none, dataset)
        except ImportError:
            rows[f"rechub_{arch}_s"] = float("nan")
    # (d): the fastest of PREDICT_REPEATS alternating runs of each (a predict costs a fraction of a fit)
    rows["ours_predict_s"] = rows["raw_predict_s"] = float("inf")
    for _ in range(PREDICT_REPEATS):
        t0 = time.perf_counter()
        est_none.predict(X)
        rows["ours_predict_s"] = min(rows["ours_predict_s"], time.perf_counter() - t0)
        module.eval()
        _sync()
        t0 = time.perf_counter()
        with torch.inference_mode():
            for start in range(0, len(dataset), SIZES["batch_size"]):
                module(**_to_device(dataset._slice(slice(start, start + SIZES["batch_size"]))[0])).cpu()
        # .cpu(), like predict's numpy output, waits for the GPU
        rows["raw_predict_s"] = min(rows["raw_predict_s"], time.perf_counter() - t0)
    rows["input_mb"] = input_mb(X, Y)
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
    """A fresh process fits one epoch with the rule: its peak resident memory (MB) after its imports,
    after loading (X, Y) from a pickle and after the fit (high-water marks), the fit's seconds, and the
    GPU's peak allocation (MB) on a GPU (else NaN)."""
    import pickle
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.pkl"
        with open(path, "wb") as f:
            pickle.dump((X, Y), f, protocol=pickle.HIGHEST_PROTOCOL)
        code = (
            "import sys, json, pickle, torch; sys.path.insert(0, %r); import speed; peak = speed.peak_rss_mb; "
            "speed.DEVICE = torch.device(%r); torch.set_num_threads(1); "
            "base = peak(); X, Y = pickle.load(open(%r, 'rb')); loaded = peak(); "
            "seconds = speed.ours(X, Y, gradient_adjustment='htlnet')[0]; "
            "gpu = torch.cuda.max_memory_allocated() / 2**20 if speed.DEVICE.type == 'cuda' else float('nan'); "
            "print(json.dumps([base, loaded, peak(), seconds, gpu]))"
        ) % (str(Path(__file__).resolve().parent), str(DEVICE), str(path))
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[1e5, 1e6, 1e7])
    parser.add_argument("--all-models-up-to", type=float, default=1e6,
                        help="larger sizes run only the HTLNet fit of the memory probe (scaling and memory)")
    parser.add_argument("--quick", action="store_true",
                        help="5,000 rows: checks that the script runs (at that size fixed costs dominate the ratios)")
    parser.add_argument("--repeats", type=int, default=1, help="keep the fastest of this many runs per size")
    parser.add_argument("--device", default="cpu", help='torch device of every model, e.g. "cuda"')
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--summarize", action="store_true", help="only rewrite --out/speed[_cuda].md from its csv")
    args = parser.parse_args(argv)
    sizes = [5000] if args.quick else [int(s) for s in args.sizes]
    global DEVICE
    DEVICE = torch.device(args.device)
    name = ("speed_quick" if args.quick else "speed") + ("" if DEVICE.type == "cpu" else f"_{DEVICE.type}")
    if args.summarize:
        return summarize(args.out, name)
    torch.set_num_threads(1)
    ours(*data(2000))  # warm-up: the first torch calls are slow
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for n in sizes:
        X, Y = data(n)
        row = measure(X, Y, args.repeats) if n <= args.all_models_up_to else {"rows": n, "input_mb": input_mb(X, Y)}
        memory = peak_memory(X, Y)
        del X, Y
        row["peak_imports_mb"], row["peak_loaded_mb"], row["peak_fit_mb"], row["fresh_htlnet_s"] = memory[:4]
        row["peak_gpu_mb"] = memory[4]
        results.append(row)
        print(json.dumps(row), flush=True)
        pd.DataFrame(results).to_csv(args.out / f"{name}_partial.csv", index=False)  # kept if a later size fails
    table = pd.DataFrame(results).set_index("rows")
    table = table.reindex(columns=list(dict.fromkeys(c for r in results for c in r if c != "rows")))
    ratios = ratio_table(table)
    table.join(ratios).to_csv(args.out / f"{name}.csv")
    (args.out / f"{name}_partial.csv").unlink()
    (args.out / f"{name}.md").write_text(markdown(table, ratios))
    print(ratios.to_string(float_format=lambda v: f"{v:.2f}"))
    return table, ratios


# (name, numerator, denominator, target): each ratio of the issue, from the columns of speed.csv
RATIOS = [
    ("(a) fit / raw loop", "ours_none_s", "raw_loop_s", "<= 1.10"),
    ("(a) fit without the retransformation / raw loop", "ours_none_uncalibrated_s", "raw_loop_s", "<= 1.10"),
    ("(a) training loop only / raw loop", "ours_none_loop_s", "raw_loop_s", "<= 1.10"),
    ("(b) htlnet rule / none", "ours_htlnet_s", "ours_none_s", "<= 1.5"),
    ("(c) rechub MMoE / ours (speed-up)", "rechub_mmoe_s", "ours_mmoe_s", ">= 1"),
    ("(c) rechub PLE / ours (speed-up)", "rechub_ple_s", "ours_ple_s", ">= 1"),
    ("(c) HTLNet / rechub MMoE", "ours_htlnet_s", "rechub_mmoe_s", ""),
    ("(d) predict / raw forward", "ours_predict_s", "raw_predict_s", "<= 1.10"),
    ("(e) peak memory of a fit / input", "fit_memory_mb", "input_mb", "<= 3"),
]


def _columns(table):
    table = table.copy()
    table["fit_memory_mb"] = table["peak_fit_mb"] - table["peak_imports_mb"]  # above the interpreter's
    return table


def ratio_table(table):
    """The ratios of :data:`RATIOS` (NaN where a size did not measure them) and the throughputs."""
    table = _columns(table)

    def col(name):
        return table[name] if name in table else pd.Series(np.nan, index=table.index)

    ratios = {name: col(num) / col(den) for name, num, den, _ in RATIOS}
    ratios["fit rows/s (htlnet)"] = table.index / col("ours_htlnet_s")
    ratios["fit rows/s (htlnet, fresh process)"] = table.index / col("fresh_htlnet_s")
    return pd.DataFrame(ratios, index=table.index)


def _met(value, target):
    if not target or not np.isfinite(value):
        return ""
    bound = float(target.split()[1])
    return " yes" if (value <= bound if target.startswith("<=") else value >= bound) else " no"


def markdown(table, ratios):
    """The tables of docs/performance.md: each ratio (with its two measurements) by size."""
    table = _columns(table)
    sizes = list(table.index)
    head = "| measurement | target | " + " | ".join(f"{n:,} rows" for n in sizes) + " |"
    lines = [head, "|---|---|" + "---|" * len(sizes)]
    for name, num, den, target in RATIOS:
        cells = []
        for n in sizes:
            value = ratios.loc[n, name]
            if not np.isfinite(value):
                cells.append("not run")
                continue
            unit = " MB" if num.endswith("_mb") else " s"
            cells.append(f"**{value:.2f}**{_met(value, target)} ({_fmt(table.loc[n, num])} / {_fmt(table.loc[n, den])}{unit})")
        lines.append(f"| {name} | {target or '(reported)'} | " + " | ".join(cells) + " |")
    for label, key in [("in this process", "fit rows/s (htlnet)"), ("in a fresh process (that of (e))",
                                                                      "fit rows/s (htlnet, fresh process)")]:
        cells = [f"{v:,.0f}" if np.isfinite(v) else "not run" for v in ratios[key]]
        lines.append(f"| fit rows/s, HTLNet with the rule, {label} | linear in rows | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _fmt(value):
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def summarize(out, name):
    """Rewrite ``out/name.md`` from ``out/name.csv``."""
    if not (out / f"{name}.csv").is_file():
        raise SystemExit(f"no {out / (name + '.csv')}: run benchmarks/speed.py without --summarize first "
                         "(with the same --quick and --device)")
    table = pd.read_csv(out / f"{name}.csv", index_col="rows")
    table = table[[c for c in table.columns if not c.startswith(("(", "fit rows/s"))]]
    (out / f"{name}.md").write_text(markdown(table, ratio_table(table)))


if __name__ == "__main__":
    main()
