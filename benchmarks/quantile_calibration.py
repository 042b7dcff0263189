"""Calibration of the core target's predicted quantiles on held-out real data (issue 19).

For each real funnel with a non-negative core target (Hillstrom's spend, AutoClaim's and
ausprivauto's claim amounts, CreditCard's expenditure, Charity's gift), one
``HTLNetRegressor(core_loss="ziln", random_state=seed)`` with every other setting at its default
is fitted on nine tenths and ``predict_distribution`` is read on the held-out tenth: the latest
tenth where the data has dates (AutoClaim, as in compare.py), a random tenth otherwise.  Where that
tenth would hold fewer than ``MIN_TEST_ROWS`` rows (CreditCard, Charity) every row is held out once
instead (10-fold, out-of-fold predictions): a tenth of 132 rows cannot tell a 0.05 error from
sampling noise (the 95% binomial half-width at tau = 0.5 is 0.085 there).  For each level tau the coverage is the
share of held-out targets below the predicted tau-quantile, a zero target counted by the share of
the atom's mass below tau (:func:`sk_htlnet.distribution.quantile_coverage`); calibrated quantiles
give tau.  The goal: within 0.05 of tau at every level.

    python benchmarks/quantile_calibration.py             # every data set present, seed 0
    python benchmarks/quantile_calibration.py --quick     # Hillstrom, 3,000 rows, 2 epochs (10-fold)

Writes ``--out``/quantile_calibration.csv (one row per data set and level), .md (the table) and
.png (the reliability plot: coverage against tau, the 0.05 band shaded).
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import datasets  # noqa: E402  (benchmarks/datasets.py)
from compare import split  # noqa: E402

from sklearn.base import clone  # noqa: E402
from sklearn.model_selection import KFold  # noqa: E402

from sk_htlnet import HTLNetRegressor  # noqa: E402
from sk_htlnet.distribution import quantile_coverage  # noqa: E402

LEVELS = [0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99]
DATASETS = ["hillstrom", "autoclaim", "ausprivauto", "creditcard", "charity"]
TOLERANCE = 0.05
MIN_TEST_ROWS = 1000


def _held_out(est, X_fit, Y_fit, X_test, Y_test):
    """(observed targets, coverage per level, predicted zero masses) of one fit on its held-out rows."""
    est.fit(X_fit, Y_fit)
    y = Y_test.iloc[:, -1].to_numpy(dtype=np.float64)
    dist = est.predict_distribution(X_test)
    observed = ~np.isnan(y)
    return y[observed], quantile_coverage(y, dist, LEVELS), dist.zero_mass[observed]


def measure(name, seed, n_rows=None, max_iter=None):
    X, Y, dates = datasets.load(name, n_rows=n_rows, seed=seed)
    params = {} if max_iter is None else {"max_iter": max_iter}
    est = HTLNetRegressor(core_loss="ziln", random_state=seed, **params)
    if dates is None and len(X) < 10 * MIN_TEST_ROWS:
        scheme = "random, 10-fold out-of-fold"
        folds = [_held_out(clone(est), X.iloc[a], Y.iloc[a], X.iloc[b], Y.iloc[b])
                 for a, b in KFold(10, shuffle=True, random_state=seed).split(X)]
    else:
        scheme = "chronological" if dates is not None else "random"
        X_fit, X_test, Y_fit, Y_test = split(X, Y, seed, dates)
        folds = [_held_out(est, X_fit, Y_fit, X_test, Y_test)]
    y = np.concatenate([f[0] for f in folds])
    # the pooled share over every held-out row: each fold's coverage weighted by its rows
    coverage = sum(len(f[0]) * f[1] for f in folds) / len(y)
    zero_mass = np.concatenate([f[2] for f in folds])
    band = 1.96 * np.sqrt(np.asarray(LEVELS) * (1 - np.asarray(LEVELS)) / len(y))
    return pd.DataFrame(dict(dataset=name, seed=seed, split=scheme, test_rows=len(y),
                             zero_share=float((y == 0).mean()), predicted_zero_share=float(zero_mass.mean()),
                             tau=LEVELS, coverage=coverage, error=coverage - np.asarray(LEVELS),
                             sampling_half_width=band))


def table(results):
    lines = [f"Coverage of the predicted quantiles on held-out rows (within {TOLERANCE} of tau is the goal; "
             "a zero target counted by the share of the atom's mass below tau). The last column is the 95% "
             "binomial half-width at tau = 0.5 for that many rows: what sampling alone moves a perfectly "
             "calibrated coverage by.", "",
             "| data set | test rows | zero share (observed / predicted) | " +
             " | ".join(f"{t:g}" for t in LEVELS) + " | max abs error | sampling ± |",
             "|---|---:|---:|" + "---:|" * len(LEVELS) + "---:|---:|"]
    for name, part in results.groupby("dataset", sort=False):
        worst = part["error"].abs().max()
        cells = " | ".join(f"{c:.3f}" for c in part["coverage"])
        lines.append(f"| {name} ({part['split'].iloc[0]}) | {part['test_rows'].iloc[0]:,} | "
                     f"{part['zero_share'].iloc[0]:.3f} / {part['predicted_zero_share'].iloc[0]:.3f} | {cells} | "
                     f"{'**' if worst > TOLERANCE else ''}{worst:.3f}{'**' if worst > TOLERANCE else ''} | "
                     f"{1.96 * np.sqrt(0.25 / part['test_rows'].iloc[0]):.3f} |")
    return "\n".join(lines) + "\n"


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5))
    grid = np.linspace(0, 1, 101)
    ax.fill_between(grid, grid - TOLERANCE, grid + TOLERANCE, color="0.9", label=f"tau ± {TOLERANCE}")
    ax.plot(grid, grid, color="0.5", lw=1)
    for name, part in results.groupby("dataset", sort=False):
        ax.plot(part["tau"], part["coverage"], marker="o", ms=3, label=name)
    ax.set(xlabel="level tau", ylabel="share of held-out targets below the tau-quantile",
           xlim=(0, 1), ylim=(0, 1), title="ZILN quantiles, held-out rows")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=DATASETS, choices=DATASETS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--quick", action="store_true", help="Hillstrom, 3,000 rows, 2 epochs")
    args = parser.parse_args(argv)
    names, n_rows, max_iter = (["hillstrom"], 3000, 2) if args.quick else (args.datasets, None, None)
    present = [n for n in names if n == "hillstrom" or datasets.SHARED.exists()]
    results = pd.concat([measure(n, args.seed, n_rows, max_iter) for n in present], ignore_index=True)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "quantile_calibration" + ("_quick" if args.quick else "")
    results.to_csv(args.out / f"{stem}.csv", index=False)
    text = table(results)
    (args.out / f"{stem}.md").write_text(text)
    plot(results, args.out / f"{stem}.png")
    print(text)
    return results


if __name__ == "__main__":
    main()
