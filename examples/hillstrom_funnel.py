"""HTLNet on the Hillstrom e-mail campaign: visit -> conversion -> spend.

The main job of ``make demo``.  64,000 customers of Kevin Hillstrom's MineThatData challenge (bundled
with the package) are split 8:1:1 with a fixed seed (train / validation for early stopping / test).
HTLNet learns the three hybrid targets jointly; per-task HistGradientBoosting models are the baseline.
The script prints every metric of docs/method.md (Metrics) on the test split for both, and saves a figure with
HTLNet's per-task learning curves and the spend gain (Lorenz) curve.

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
from sk_htlnet.metrics import compare_reports, funnel_report, gain_curve


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


def plot(est, test, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    Y_test, pred_htl, pred_gbm = test
    names = est.target_names_
    fig, axes = plt.subplots(1, len(names) + 1, figsize=(4.2 * (len(names) + 1), 3.8))
    epochs = est.history_[:, "epoch"]
    for ax, name in zip(axes, names):
        ax.plot(epochs, est.history_[:, f"train_loss_{name}"], "o-", label="train")
        ax.plot(epochs, est.history_[:, f"valid_loss_{name}"], "s-", label="validation")
        best = int(np.argmin(est.history_[:, "valid_loss"]))
        ax.axvline(epochs[best], color="grey", ls=":", label="best epoch (restored)")
        core = {"mse": f"MSE ({est.target_transform_} scale)", "ziln": "ZILN negative log-likelihood",
                "tweedie": "Tweedie negative log-likelihood"}[est.core_loss_]
        kind = core if name == names[-1] else "log loss"
        ax.set(title=f"HTLNet learning curve: {name}", xlabel="epoch", ylabel=kind)
        ax.legend(fontsize=8)
    ax = axes[-1]
    core = Y_test.iloc[:, -1].to_numpy()
    for label, p in [("HTLNet", pred_htl[:, -1]), ("HistGB", pred_gbm[:, -1]), ("perfect", core)]:
        x, g = gain_curve(core, p)
        ax.plot(x, g, label=label, ls="--" if label == "perfect" else "-")
    ax.plot([0, 1], [0, 1], color="grey", ls=":", label="random")
    ax.set(title=f"{names[-1]} gain curve (test split)", xlabel="share of customers, ranked by prediction",
           ylabel=f"share of total {names[-1]}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
            plot(est, test, args.out)
            print(f"\nFigure (learning curves per task, spend gain curve): {args.out.resolve()}")
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
