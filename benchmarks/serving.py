"""Serving latency: one row at a time, ``predict`` against onnxruntime on the exported graph
(issue 19).

The model: ``HTLNetRegressor(random_state=0)`` with its defaults (piecewise-linear numerics, the
ZILN core head, the isotonic retransformation), fitted on the bundled Hillstrom data and written
by :func:`sk_htlnet.export.to_onnx`.  One thread everywhere (``torch.set_num_threads(1)``,
onnxruntime's intra- and inter-op pools of one).  Measured:

- single-row latency, p50 and p99 over ``--calls`` calls on distinct held-out rows, after 100 warm-up
  calls: ``predict`` on a one-row DataFrame; onnxruntime's ``run`` on ready inputs (what a service
  that builds the tensors itself pays); and ``onnx_inputs`` + ``run`` from the one-row DataFrame;
- batch throughput: rows per second of ``predict`` and of onnxruntime on ``--batch`` rows
  (the faster of three runs each).

    python benchmarks/serving.py            # 5,000 calls, batches of 10,000 rows
    python benchmarks/serving.py --quick    # 200 calls (in the test suite)

Writes ``--out``/serving.csv and serving.md (``serving_quick.*`` with ``--quick``). The goal is a
p99 under 1 ms in onnxruntime.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def _latencies(call, rows, warmup=100):
    for i in range(min(warmup, len(rows))):
        call(rows[i])
    out = np.empty(len(rows))
    for i, row in enumerate(rows):
        start = time.perf_counter()
        call(row)
        out[i] = time.perf_counter() - start
    return out


def _throughput(call, n_rows, repeats=3):
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    return n_rows / best


def measure(args):
    import onnxruntime as ort
    import torch

    from sk_htlnet import HTLNetRegressor
    from sk_htlnet.datasets import load_hillstrom
    from sk_htlnet.export import onnx_inputs, to_onnx

    torch.set_num_threads(1)
    X, Y = load_hillstrom()
    if args.quick:
        X, Y = X.iloc[:4000], Y.iloc[:4000]
    held = X.iloc[-max(args.calls, 1000):].reset_index(drop=True)
    fit = X.iloc[: len(X) - len(held)]
    params = dict(max_iter=2) if args.quick else {}
    est = HTLNetRegressor(random_state=0, n_threads=1, **params).fit(fit, Y.iloc[: len(fit)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    with tempfile.TemporaryDirectory() as folder:
        path = to_onnx(est, Path(folder) / "model.onnx")
        size_kb = path.stat().st_size / 1024
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    frames = [held.iloc[[i]] for i in range(args.calls)]
    ready = [onnx_inputs(est, f) for f in frames]
    worst = max(np.max(np.abs(session.run(None, r)[0] - est.predict(f)) / np.maximum(np.abs(est.predict(f)), 1e-12))
                for r, f in zip(ready[:50], frames[:50]))
    timings = {
        "predict (DataFrame)": _latencies(est.predict, frames),
        "onnxruntime run (ready inputs)": _latencies(lambda r: session.run(None, r), ready),
        "onnx_inputs + onnxruntime run (DataFrame)": _latencies(lambda f: session.run(None, onnx_inputs(est, f)),
                                                               frames),
    }
    batch = pd.concat([held] * int(np.ceil(args.batch / len(held))), ignore_index=True).iloc[: args.batch]
    batch_inputs = onnx_inputs(est, batch)
    rates = {
        "predict (DataFrame)": _throughput(lambda: est.predict(batch), len(batch)),
        "onnxruntime run (ready inputs)": _throughput(lambda: session.run(None, batch_inputs), len(batch)),
        "onnx_inputs + onnxruntime run (DataFrame)": _throughput(
            lambda: session.run(None, onnx_inputs(est, batch)), len(batch)),
    }
    rows = []
    for name, t in timings.items():
        rows.append(dict(path=name, calls=len(t), p50_ms=1e3 * np.percentile(t, 50), p99_ms=1e3 * np.percentile(t, 99),
                         mean_ms=1e3 * t.mean(), batch_rows=len(batch), batch_rows_per_s=rates[name]))
    return pd.DataFrame(rows), dict(onnx_kb=size_kb, max_rel_diff=worst, params=sum(
        p.numel() for p in est.net_.module_.parameters()))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--quick", action="store_true", help="200 calls, batches of 2,000, a 2-epoch model")
    args = parser.parse_args(argv)
    if args.quick:
        args.calls, args.batch = 200, 2000
    table, facts = measure(args)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "serving" + ("_quick" if args.quick else "")
    table.to_csv(args.out / f"{stem}.csv", index=False)
    shown = table.rename(columns={"batch_rows_per_s": "batch rows/s"}).drop(columns=["batch_rows"])
    shown.columns = [c.replace("_ms", " (ms)").replace("_", " ") for c in shown.columns]
    text = (f"Hillstrom default model ({facts['params']:,} parameters, ONNX file {facts['onnx_kb']:.0f} kB), one "
            f"thread, {os.cpu_count()} cores; batches of {args.batch:,} rows; onnxruntime vs predict, "
            f"largest relative difference on 50 rows: {facts['max_rel_diff']:.1e}\n\n"
            + shown.to_markdown(index=False, floatfmt=("", "d", ".3f", ".3f", ".3f", ",.0f")) + "\n")
    (args.out / f"{stem}.md").write_text(text)
    print(text)
    return table


if __name__ == "__main__":
    main()
