"""The default batch size on the real funnels of docs/comparison.md (issue 16: small-data defaults).

Fits the untuned estimator, ``HTLNetRegressor(random_state=seed)``, with every other parameter at
its default but ``batch_size``, on the split of ``benchmarks/compare.py`` (the test tenth held out by
the same seed), for each batch size given (an integer, or ``auto``: the estimator's rule), and
reports the metrics of docs/method.md on the test split as mean ± standard deviation over seeds,
together with the resolved batch size and the seconds per fit (one torch thread).

    OMP_NUM_THREADS=1 python benchmarks/batch_size.py                    # 5 seeds, every size
    python benchmarks/batch_size.py --summarize                          # rewrite the table

Results: ``--out``/batch_size.csv (one row per data set, batch size and seed; a rerun resumes) and
``--out``/batch_size.md.
"""

import argparse
import sys
import time
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import datasets  # noqa: E402
from compare import split  # noqa: E402

from sk_htlnet import HTLNetRegressor  # noqa: E402
from sk_htlnet.metrics import funnel_report  # noqa: E402

SIZES = ["auto", 1024, 512, 256, 128, 64, 32]


def _size(text):
    return text if text == "auto" else int(text)


def run(args):
    path = args.out / "batch_size.csv"
    rows = pd.read_csv(path).to_dict("records") if path.exists() else []
    done = {(r["dataset"], str(r["batch_size"]), int(r["seed"])) for r in rows}
    for name in args.datasets:
        try:
            X, Y, _ = datasets.load(name, args.n_rows)
        except FileNotFoundError as exc:
            print(f"skipping {name}: {exc}")
            continue
        for seed in args.seeds:
            X_fit, X_test, Y_fit, Y_test = split(X, Y, seed)
            for size in args.sizes:
                if (name, str(size), seed) in done:
                    continue
                est = HTLNetRegressor(batch_size=size, random_state=seed)
                t0 = time.perf_counter()
                est.fit(X_fit, Y_fit)
                seconds = time.perf_counter() - t0
                report = funnel_report(Y_test, est.predict(X_test)).drop(columns="task")
                metrics = {f"{t}:{m}": v for (t, m), v in report.stack().dropna().items()}
                resolved = getattr(est, "batch_size_", size)
                rows.append(dict(dataset=name, batch_size=str(size), seed=seed, resolved=resolved,
                                 n_iter=est.n_iter_, fit_s=seconds, **metrics))
                print(f"{name} seed {seed} batch {size} ({resolved}): {seconds:.1f} s, "
                      + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if "AUC" in k or "Gini" in k),
                      flush=True)
                pd.DataFrame(rows).to_csv(path, index=False)
    return pd.DataFrame(rows)


def summary(results):
    """One markdown table per data set: a row per batch size, mean ± sd of AUC, NRMSE and Gini."""
    out = []
    for name, frame in results.groupby("dataset", sort=False):
        frame = frame.dropna(axis=1, how="all")
        metrics = [c for c in frame.columns if c.endswith((":AUC", ":NRMSE", ":Gini"))]
        lines = ["| batch_size | resolved | seeds | " + " | ".join(metrics) + " | s per fit |",
                 "|---" * (len(metrics) + 4) + "|"]
        for size, g in frame.groupby("batch_size", sort=False):
            cells = [f"{g[m].mean():.4f}" + (f" ± {g[m].std():.4f}" if len(g) > 1 else "") for m in metrics]
            resolved = "/".join(str(v) for v in sorted(set(g["resolved"])))
            lines.append(f"| {size} | {resolved} | {len(g)} | " + " | ".join(cells) + f" | {g['fit_s'].mean():.1f} |")
        out.append(f"### {name}\n\n" + "\n".join(lines))
    return "\n\n".join(out) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--datasets", nargs="+", default=["creditcard", "charity", "autoclaim", "hillstrom"])
    parser.add_argument("--sizes", nargs="+", type=_size, default=SIZES)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--n-rows", type=int, default=None, help="subsample every data set (quick runs)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--summarize", action="store_true", help="only rewrite --out/batch_size.md")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.summarize:
        results = pd.read_csv(args.out / "batch_size.csv")
    else:
        torch.set_num_threads(1)
        results = run(args)
    (args.out / "batch_size.md").write_text(summary(results))
    print(summary(results))
    return results


if __name__ == "__main__":
    main()
