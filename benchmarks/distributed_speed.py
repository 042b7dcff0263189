"""Data-parallel throughput: training rows/s of one fit on 1 process against 2 (or more) processes
(issue 18), each process with one thread (CPU) or one GPU.

Each configuration is one ``torchrun --standalone --nproc_per_node=N`` launch of this file in
``--worker`` mode.  Every rank generates the same ``make_funnel`` data (not timed), keeps its shard
(rows ``rank::N``) and calls ``HTLNetRegressor(distributed=True).fit`` on it, with early stopping
off so every configuration trains the same number of epochs.  The 1-process baseline takes the same
path with a group of one, so the ratio measures what a second process adds, not a code-path switch.

Two rates, from the slowest rank:

- ``epoch rows/s``: training rows of one epoch divided by the median epoch time (skorch's ``dur``:
  the batches, the gradient exchange, the synchronised validation and callbacks);
- ``fit rows/s``: training rows times epochs divided by the whole ``fit`` (adds what runs once:
  the vocabularies' union, the statistics of the reference sample, the retransformation).

    python benchmarks/distributed_speed.py                     # CPU, 1 and 2 processes, gloo
    python benchmarks/distributed_speed.py --device cuda       # one GPU per process, NCCL
    python benchmarks/distributed_speed.py --quick             # 4,000 rows, a smoke run

Writes ``--out``/distributed_speed.csv and .md (``distributed_speed_cuda.*`` on a GPU,
``*_batch<N>.*`` with a ``--batch-size`` other than 4,096, ``*_quick.*`` with ``--quick``) and prints
the table.  On a machine with fewer cores than processes the ratio measures contention, not scaling.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# the model of benchmarks/speed.py at a size an epoch of which takes tens of seconds on one core
SIZES = dict(embedding_dim=16, tower_units=(128, 64, 32), batch_size=4096, n_threads=1, random_state=0,
             numeric_encoding="linear", core_loss="mse")
FUNNEL = dict(n_stages=2, n_categorical=8, n_numeric=8, cardinality=10_000, random_state=0)


def worker(args):
    """One rank: fit on its shard, write its timings as JSON."""
    import torch

    from sk_htlnet import HTLNetRegressor
    from sk_htlnet.datasets import make_funnel

    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    torch.set_num_threads(1)
    X, Y = make_funnel(args.rows, **FUNNEL)
    X, Y = X.iloc[rank::world], Y.iloc[rank::world]
    device = f"cuda:{os.environ.get('LOCAL_RANK', 0)}" if args.device == "cuda" else "cpu"
    est = HTLNetRegressor(distributed=True, max_iter=args.epochs, early_stopping=False, device=device,
                          **dict(SIZES, batch_size=args.batch_size))
    start = time.perf_counter()
    est.fit(X, Y)
    fit_s = time.perf_counter() - start
    durations = [epoch["dur"] for epoch in est.history_]
    Path(args.worker, f"rank{rank}.json").write_text(json.dumps(
        dict(rank=rank, world=world, shard_rows=len(X), fit_s=fit_s, epoch_s=durations)))


def launch(nproc, args, folder):
    """One torchrun launch of ``nproc`` workers; returns their records."""
    out = Path(folder, f"n{nproc}")
    out.mkdir()
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           __file__, "--worker", str(out), "--rows", str(args.rows), "--epochs", str(args.epochs),
           "--device", args.device, "--batch-size", str(args.batch_size)]
    subprocess.run(cmd, check=True, env=env)
    return [json.loads(p.read_text()) for p in sorted(out.glob("rank*.json"))]


def measure(args):
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for nproc in args.nproc:
            ranks = launch(nproc, args, folder)
            # all rows (the validation split is the same share in every configuration and an epoch scores it)
            epoch_s = float(np.median(np.max([r["epoch_s"] for r in ranks], axis=0)))
            fit_s = max(r["fit_s"] for r in ranks)
            rows.append(dict(device=args.device, processes=nproc, rows=args.rows, epochs=args.epochs,
                             batch_size=args.batch_size,
                             epoch_s=epoch_s, fit_s=fit_s, epoch_rows_per_s=args.rows / epoch_s,
                             fit_rows_per_s=args.rows * args.epochs / fit_s))
    table = pd.DataFrame(rows)
    base = table.loc[table["processes"] == min(args.nproc)].iloc[0]
    table["epoch_speedup"] = table["epoch_rows_per_s"] / base["epoch_rows_per_s"]
    table["fit_speedup"] = table["fit_rows_per_s"] / base["fit_rows_per_s"]
    return table


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=400_000, help="rows over all processes")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--nproc", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--batch-size", type=int, default=SIZES["batch_size"],
                        help="the global batch (split over the processes)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--quick", action="store_true", help="4,000 rows, 2 epochs")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    if args.quick:
        args.rows, args.epochs = 4_000, 2
    table = measure(args)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = ("distributed_speed" + ("_cuda" if args.device == "cuda" else "")
            + ("" if args.batch_size == SIZES["batch_size"] else f"_batch{args.batch_size}")
            + ("_quick" if args.quick else ""))
    table.to_csv(args.out / f"{stem}.csv", index=False)
    shown = table.assign(processes=table["processes"].astype(str))[["processes", "epoch_rows_per_s", "epoch_speedup", "fit_rows_per_s", "fit_speedup"]]
    text = shown.to_markdown(index=False, floatfmt=("d", ".0f", ".2f", ".0f", ".2f"))
    (args.out / f"{stem}.md").write_text(
        f"{args.rows:,} rows of make_funnel, {args.epochs} epochs, global batch {args.batch_size:,}, "
        f"device {args.device}, one thread "
        f"per process, {os.cpu_count()} cores\n\n{text}\n")
    print(text)
    return table


if __name__ == "__main__":
    main()
