"""HTLNet on the Hillstrom e-mail campaign: visit -> conversion -> spend.

The main job of ``make demo``.  64,000 customers of Kevin Hillstrom's MineThatData challenge (bundled
with the package) are split 8:1:1 with a fixed seed (train / validation for early stopping / test).
HTLNet learns the three hybrid targets jointly; per-task HistGradientBoosting models are the baseline.
The script prints every metric of docs/method.md (Metrics) on the test split for both, and saves a figure
of the first seed's test split: the funnel's observed against predicted totals (customers, visits,
conversions, spend), observed against predicted per decile of the prediction for each target (a
calibration diagram: ``sk_htlnet.metrics.calibration_table``), the spend gain (Lorenz) curve with each
model's normalised Gini (the printed one), and HTLNet's learning curve.

Run ``python examples/hillstrom_funnel.py --help`` for options; ``--seeds 0 1 2 3 4`` repeats the
comparison over several split seeds and prints each seed's figures and their mean.
"""

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.model_selection import train_test_split

from sk_htlnet import HTLNetRegressor
from sk_htlnet.datasets import load_hillstrom
from sk_htlnet.metrics import calibration_table, compare_reports, funnel_report, gain_curve


def split(X, Y, seed):
    """Fixed-seed 8:1:1 split: the test tenth here, the validation tenth inside the estimator."""
    X_fit, X_test, Y_fit, Y_test = train_test_split(X, Y, test_size=0.1, random_state=seed)
    return X_fit, X_test, Y_fit, Y_test


def fit_htlnet(X_fit, Y_fit, seed, verbose, max_iter):
    est = HTLNetRegressor(
        max_iter=max_iter,
        early_stopping=True,
        validation_fraction=1 / 9,  # 10% of all rows, so the split is 8:1:1
        random_state=seed,
        verbose=verbose,
    )
    return est.fit(X_fit, Y_fit)


def fit_gradient_boosting(X_fit, Y_fit, seed):
    """One HistGradientBoosting model per task, the same 1/9 of the fitting rows for early stopping."""
    models = []
    for name in Y_fit.columns:
        y = Y_fit[name]
        if name == Y_fit.columns[-1]:
            model = HistGradientBoostingRegressor(
                categorical_features="from_dtype", early_stopping=True, validation_fraction=1 / 9,
                random_state=seed,
            )
        else:
            model = HistGradientBoostingClassifier(
                categorical_features="from_dtype", early_stopping=True, validation_fraction=1 / 9,
                random_state=seed,
            )
        models.append(model.fit(X_fit, y))
    return models


def predict_gradient_boosting(models, X):
    cols = [m.predict_proba(X)[:, 1] for m in models[:-1]] + [models[-1].predict(X)]
    return np.column_stack(cols)


def run_seed(X, Y, seed, verbose, max_iter):
    X_fit, X_test, Y_fit, Y_test = split(X, Y, seed)
    t0 = time.perf_counter()
    est = fit_htlnet(X_fit, Y_fit, seed, verbose, max_iter)
    t_htl = time.perf_counter() - t0
    t0 = time.perf_counter()
    gbm = fit_gradient_boosting(X_fit, Y_fit, seed)
    t_gbm = time.perf_counter() - t0
    pred_htl = est.predict(X_test)
    pred_gbm = predict_gradient_boosting(gbm, X_test)
    report = pd.concat(
        {"HTLNet": funnel_report(Y_test, pred_htl), "HistGB": funnel_report(Y_test, pred_gbm)}, axis=0
    )
    return report, est, (Y_test, pred_htl, pred_gbm), (t_htl, t_gbm)


def side_by_side(report):
    """Rows: target x metric; columns: the two models."""
    return compare_reports({model: report.loc[model] for model in ("HTLNet", "HistGB")})


MODELS = {"HTLNet": "#1f78b4", "HistGB": "#d95f02"}  # colour of each model in the figure


def decile_tables(test, n_bins=10):
    """Per target and model: mean predicted against mean observed per decile of the prediction.

    ``calibration_table`` bins each model's own predictions (tied predictions share a bin, so a
    model with many ties, such as gradient boosting's spend, can have unequal or fewer bins).
    """
    Y_test, pred_htl, pred_gbm = test
    return {
        (name, model): calibration_table(Y_test[name], pred[:, j], n_bins=n_bins)
        for j, name in enumerate(Y_test.columns)
        for model, pred in (("HTLNet", pred_htl), ("HistGB", pred_gbm))
    }


def funnel_totals(test):
    """Observed and predicted totals on the test split: rows, then each stage's count, then the core sum."""
    Y_test, pred_htl, pred_gbm = test
    rows = pd.DataFrame({"observed": [len(Y_test)], "HTLNet": [len(Y_test)], "HistGB": [len(Y_test)]},
                        index=["customers"], dtype=float)
    sums = pd.DataFrame({"observed": Y_test.sum().to_numpy(), "HTLNet": pred_htl.sum(axis=0),
                         "HistGB": pred_gbm.sum(axis=0)}, index=list(Y_test.columns))
    return pd.concat([rows, sums])


def plot(est, test, report, path, seed=0):
    """Save the demo figure: the funnel's totals, calibration by decile per target, the core gain curve.

    Every number shown is computed by ``sk_htlnet.metrics``: the AUCs and Ginis in the legends are
    the ``report`` that the script prints (``funnel_report``), the deciles ``calibration_table``,
    the curves ``gain_curve``. Returns the (closed) matplotlib Figure.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator, PercentFormatter

    Y_test, pred_htl, pred_gbm = test
    names = list(Y_test.columns)
    stages, core = names[:-1], names[-1]
    tables = decile_tables(test)
    n = len(Y_test)
    fig, axes = plt.subplots(2, 3, figsize=(15, 9.2))
    axes = axes.ravel()

    # (a) the funnel itself: observed against predicted totals, log scale (counts and USD)
    ax = axes[0]
    totals = funnel_totals(test)
    groups = list(totals.index)
    y = np.arange(len(groups))[::-1]
    series = [("observed", "#4d4d4d"), *MODELS.items()]
    height = 0.26
    for i, (label, colour) in enumerate(series):
        values = totals[label].to_numpy(dtype=float)
        offsets = y + (1 - i) * height
        shown = np.arange(len(groups)) > 0 if label != "observed" else np.ones(len(groups), bool)
        ax.barh(offsets[shown], values[shown], height=height, color=colour, label=label)
        for k in np.flatnonzero(shown):
            text = f"${values[k]:,.0f}" if groups[k] == core else f"{values[k]:,.0f}"
            ax.text(values[k] * 1.08, offsets[k], text, va="center", fontsize=8)
    ax.set_xscale("log")
    ax.set_xlim(max(1.0, totals.to_numpy().min() / 3), totals.to_numpy().max() * 8)
    ax.set_yticks(y, [f"{g} (rows)" if g == "customers" else
                      (f"{g} total (USD)" if g == core else f"{g}s (count)") for g in groups])
    ax.set(title="the funnel: observed vs predicted totals",
           xlabel="total over the test rows, log scale (predicted: sum of probabilities; USD)")
    ax.legend(fontsize=8, loc="center right")

    # (b, c) each stage: observed rate against mean predicted probability per decile of the prediction
    for ax, name in zip(axes[1:1 + len(stages)], stages):
        top = 0.0
        for model, colour in MODELS.items():
            table = tables[(name, model)]
            auc = report.loc[(model, name), "AUC"]
            ax.plot(table["mean_predicted"], table["mean_observed"], "o-", color=colour, ms=5,
                    label=f"{model} (AUC {auc:.4f})")
            top = max(top, table["mean_predicted"].max(), table["mean_observed"].max())
        _diagonal(ax, top * 1.08)
        ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=1 if top < 0.05 else 0))
        ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=1 if top < 0.05 else 0))
        positives = int(np.nansum(Y_test[name]))
        per_decile = f"{positives / 10:.0f}" if positives >= 100 else f"{positives / 10:.1f}"
        ax.set(title=f"{name}: calibration by decile",
               xlabel=f"mean predicted P({name}) in the decile", ylabel=f"observed {name} rate in the decile")
        ax.text(0.98, 0.03, f"{positives:,} {name}s in {n:,} rows,\nabout {per_decile} per decile",
                transform=ax.transAxes, ha="right", va="bottom", fontsize=8, color="#4d4d4d")
        ax.legend(fontsize=8, loc="upper left")

    # (d) the core target: mean observed against mean predicted per decile of the prediction
    ax = axes[3]
    top = 0.0
    for model, colour in MODELS.items():
        table = tables[(core, model)]
        merged = f" ({len(table)} bins: tied predictions)" if len(table) < 10 else ""
        ax.plot(table["mean_predicted"], table["mean_observed"], "o-", color=colour, ms=5,
                label=f"{model}{merged}")
        top = max(top, table["mean_predicted"].max(), table["mean_observed"].max())
    _diagonal(ax, top * 1.08)
    buyers = int((Y_test[core] > 0).sum())
    ax.set(title=f"{core}: calibration by decile",
           xlabel=f"mean predicted {core} in the decile (USD)", ylabel=f"mean observed {core} in the decile (USD)")
    ax.text(0.98, 0.03, f"{buyers} rows with {core} > 0 in {n:,}", transform=ax.transAxes,
            ha="right", va="bottom", fontsize=8, color="#4d4d4d")
    ax.legend(fontsize=8, loc="upper left")

    # (e) the core gain (Lorenz) curve, read at every 5% of the ranking (a few dozen buyers make
    # the full-resolution curve a staircase)
    ax = axes[4]
    observed = Y_test[core].to_numpy()
    grid = np.linspace(0, 1, 21)
    for model, pred in (("HTLNet", pred_htl), ("HistGB", pred_gbm)):
        share, gain = gain_curve(observed, pred[:, -1])
        gini = report.loc[(model, core), "Gini"]
        ax.plot(grid, np.interp(grid, share, gain), color=MODELS[model], lw=2,
                label=f"{model} (normalised Gini {gini:.4f})")
    ax.plot([0, 1], [0, 1], color="grey", ls=":", label="random (Gini 0)")
    ax.set(title=f"{core} gain curve, ranked by predicted {core}",
           xlabel="share of customers contacted, highest predicted first", ylabel=f"share of total {core} reached",
           xlim=(0, 1), ylim=(0, 1.02))
    ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.legend(fontsize=8, loc="lower right")

    # (f) small: HTLNet's learning curve (sum of the task losses) and the epoch early stopping kept
    ax = axes[5]
    epochs = est.history_[:, "epoch"]
    ax.plot(epochs, est.history_[:, "train_loss"], "-", color="#a6cee3", label="train")
    ax.plot(epochs, est.history_[:, "valid_loss"], "-", color=MODELS["HTLNet"], label="validation")
    best = int(np.argmin(est.history_[:, "valid_loss"]))
    ax.axvline(epochs[best], color="grey", ls=":", label=f"best epoch {epochs[best]} (restored)")
    ax.set(title="HTLNet learning curve (sum of the task losses)", xlabel="epoch", ylabel="loss")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=8)

    fig.suptitle(f"HTLNet vs per-task HistGradientBoosting on Hillstrom, test split of {n:,} customers "
                 f"(split seed {seed})", fontsize=12)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return fig


def _diagonal(ax, top):
    ax.plot([0, top], [0, top], color="grey", ls=":", label="perfect calibration")
    ax.set(xlim=(0, top), ylim=(0, top))
    ax.set_aspect("equal", adjustable="box")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="split seeds (default: 0)")
    parser.add_argument("--out", type=Path, default=Path("output") / "hillstrom_funnel.png",
                        help="where to save the figure (default: output/hillstrom_funnel.png)")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch progress table")
    parser.add_argument("--max-iter", type=int, default=HTLNetRegressor().max_iter,
                        help="maximum epochs (default: the estimator's default)")
    parser.add_argument("--n-rows", type=int, default=None,
                        help="use a random subset of this many customers (a quick run)")
    args = parser.parse_args(argv)

    pd.set_option("display.width", 120)
    X, Y = load_hillstrom()
    if args.n_rows:
        X, _, Y, _ = train_test_split(X, Y, train_size=args.n_rows, random_state=0, stratify=Y["conversion"])
    print(f"Hillstrom: {len(X):,} customers; visit {Y['visit'].mean():.2%}, conversion "
          f"{Y['conversion'].mean():.2%}, mean spend ${Y['spend'].mean():.2f}")
    reports = []
    for i, seed in enumerate(args.seeds):
        print(f"\n=== split seed {seed}: training HTLNet (per-epoch losses; early stopping on validation) ===")
        report, est, test, (t_htl, t_gbm) = run_seed(X, Y, seed, 0 if args.quiet else 1, args.max_iter)
        print(f"\nTest split ({len(test[0]):,} rows), seed {seed}. Fit time: HTLNet {t_htl:.0f} s "
              f"({est.n_iter_} epochs), per-task HistGradientBoosting {t_gbm:.1f} s")
        print(side_by_side(report).to_string(float_format=lambda v: f"{v:.4f}"))
        htl = report.loc["HTLNet"].drop(columns="task")
        assert np.isfinite(htl.to_numpy()[~htl.isna().to_numpy()]).all()
        reports.append(report.assign(seed=seed))
        if i == 0:
            plot(est, test, report, args.out, seed=seed)
            print(f"\nFigure (funnel totals, calibration by decile, spend gain curve): {args.out.resolve()}")
    if len(args.seeds) > 1:
        print(f"\n=== every split seed, and the mean and standard deviation over seeds {args.seeds} ===")
        print(seed_table(reports).to_string(float_format=lambda v: f"{v:.4f}"))
    return reports


def seed_table(reports):
    """One row per (seed, model), one column per (target, metric); then mean and std per model."""
    rows = {}
    for report in reports:
        seed = int(report["seed"].iloc[0])
        for model in ("HTLNet", "HistGB"):
            part = report.loc[model].drop(columns=["task", "seed"]).stack().dropna()
            rows[(str(seed), model)] = part
    table = pd.DataFrame(rows).T
    table.index.names = ["seed", "model"]
    stats = table.groupby(level="model", sort=False).agg(["mean", "std"]).stack(level=-1, future_stack=True)
    stats = stats.swaplevel()
    stats.index.names = ["seed", "model"]
    return pd.concat([table, stats])

if __name__ == "__main__":
    main()
