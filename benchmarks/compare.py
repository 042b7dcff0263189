"""Reproduce the paper's comparison on real funnels: HTLNet, its baselines, gradient strategies and
ablations, per-task gradient boosting and torch-rechub's SharedBottom / MMoE / PLE.

Every model sees the same 8:1:1 split per seed (train / validation for early stopping / test), the
same embedding and tower sizes, the same maximum number of epochs, batch size, learning rate and
patience.  Reported per (data set, model): mean and standard deviation over seeds of every metric of
docs/method.md (Metrics) on the test split, fit seconds per epoch, predict rows per second, parameter count.

    python benchmarks/compare.py                       # the full run behind docs/benchmarks.md
    python benchmarks/compare.py --quick               # a minute-long smoke run (used by the tests)
    python benchmarks/compare.py --datasets hillstrom --models htlnet mmoe --seeds 0 1

Results go to ``--out`` (default benchmarks/results): results.csv (one row per data set, model,
seed), summary.md (the tables), gradient_norms.png (the paper's Figure 5).

``--regime paper`` (issue 17) trains every neural model on the core in its own units
(``target_transform="none"``, the squared error, the rule's "auto" settings), on the real sets and on
1e6 rows of make_funnel's transfer process with a core on a scale of 1e6; data with dates (AutoClaim)
are split chronologically there.  Its results go to benchmarks/results/paper_regime:

    python benchmarks/compare.py --regime paper                    # everything (a day on 2 cores)
    python benchmarks/compare.py --regime paper --datasets transfer_funnel --seeds 0 1 --resume
    python benchmarks/compare.py --regime paper --curves-only      # the Figure 5 of that regime
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.model_selection import train_test_split

sys.path.insert(0, str(Path(__file__).resolve().parent))
import datasets  # noqa: E402

from sk_htlnet import HTLNetRegressor, TrainingDivergedError  # noqa: E402
from sk_htlnet.metrics import funnel_report  # noqa: E402

SIZES = dict(embedding_dim=16, tower_units=(128, 64, 32), batch_size=1024, learning_rate=1e-3,
             n_iter_no_change=5)
# The paper's model: numerics embedded linearly, MSE on log1p(core), dense Adam on the embedding
# tables.  Pinned, so the comparison of architectures, gradient rules and ablations does not move
# when the estimator's defaults do.
PAPER = dict(numeric_encoding="linear", core_loss="mse", sparse_updates=False)
BASELINE = dict(gradient_adjustment="none", **PAPER)  # the literature's baselines train with the plain sum
DEFAULT = "default"  # HTLNetRegressor(random_state=seed): every other parameter at its default
UNTUNED = {}  # its spec: fit_htlnet_family recognises this very dict and sets nothing but the seed
MODELS = {
    "htlnet": dict(PAPER),
    "single_task": dict(architecture="single_task", **BASELINE),
    "shared_bottom": dict(architecture="shared_bottom", **BASELINE),
    "mmoe": dict(architecture="mmoe", **BASELINE),
    "ple": dict(architecture="ple", **BASELINE),
    "esmm": dict(architecture="esmm", **BASELINE),
    "aitm": dict(architecture="aitm", **BASELINE),
    "htlnet/none": dict(gradient_adjustment="none", **PAPER),
    "htlnet/pcgrad": dict(gradient_adjustment="pcgrad", **PAPER),
    "htlnet/metabalance": dict(gradient_adjustment="metabalance", **PAPER),
    "htlnet/uncertainty": dict(gradient_adjustment="uncertainty", **PAPER),
    "htlnet-no_label_embedding": dict(label_embedding=False, **PAPER),
    "htlnet-no_representation": dict(representation_transfer=False, **PAPER),
    "htlnet-concat": dict(fusion="concat", **PAPER),
    "htlnet-no_stop_gradient": dict(stop_gradient=False, **PAPER),
    "htlnet-no_projection": dict(gradient_projection=False, **PAPER),
    "htlnet-no_magnitude": dict(gradient_rescaling=False, **PAPER),
    # HTLNET.md §5's "w/o Architecture": Shared-Bottom trained with the HTLNet rule (issue 17)
    "htlnet-no_architecture": dict(architecture="shared_bottom", **PAPER),
    "histgb": None,
    "rechub_shared_bottom": "SharedBottom",
    "rechub_mmoe": "MMOE",
    "rechub_ple": "PLE",
    # issue 9: numeric encodings and core losses on top of the paper's model, and the defaults
    "htlnet+quantile": dict(PAPER, numeric_encoding="quantile", core_loss="mse"),
    "htlnet+piecewise_linear": dict(PAPER, numeric_encoding="piecewise_linear", core_loss="mse"),
    "htlnet+periodic": dict(PAPER, numeric_encoding="periodic", core_loss="mse"),
    "htlnet+ziln": dict(PAPER, numeric_encoding="linear", core_loss="ziln"),
    "htlnet+tweedie": dict(PAPER, numeric_encoding="linear", core_loss="tweedie"),
    "htlnet+piecewise_linear+ziln": dict(PAPER, numeric_encoding="piecewise_linear", core_loss="ziln"),
    DEFAULT: UNTUNED,
}
# the models of the paper's comparison (issue 6); the others are run with --models
PAPER_MODELS = [m for m in MODELS if "+" not in m and m != DEFAULT]


# the paper's regime: HTLNet, its baselines and every ablation of HTLNET.md §5 (not rechub's models,
# which train on log1p(core), nor the issue-9 encodings and losses)
PAPER_REGIME_MODELS = [m for m in PAPER_MODELS if not isinstance(MODELS[m], str)]
PAPER_REGIME_DATASETS = ["transfer_funnel", "hillstrom", "ausprivauto", "autoclaim", "creditcard", "charity"]


def in_regime(spec, regime):
    """A model's parameters in a regime: "paper" puts the core of every neural model in its own units."""
    if regime == "paper" and isinstance(spec, dict) and spec is not UNTUNED:
        return dict(spec, target_transform="none")
    return spec


def split(X, Y, seed, dates=None):
    """8:1:1: the test tenth here; the estimators hold out the validation tenth (1/9 of the rest).

    With ``dates`` (HTLNET.md §5, chronological splits) the test tenth is the latest tenth of the rows
    (the seed then varies the initialisation and the validation rows, drawn from the earlier ones)."""
    if dates is None:
        return train_test_split(X, Y, test_size=0.1, random_state=seed)
    order = np.argsort(dates, kind="stable")
    cut = len(order) - int(np.ceil(0.1 * len(order)))
    fit, test = np.sort(order[:cut]), np.sort(order[cut:])
    return X.iloc[fit], X.iloc[test], Y.iloc[fit], Y.iloc[test]


def n_params(module):
    return int(sum(p.numel() for p in module.parameters()))


def fit_htlnet_family(params, X, Y, seed, max_iter, patience=SIZES["n_iter_no_change"]):
    if params is UNTUNED:  # what an untuned user gets: the estimator's own defaults, early stopping included
        est = HTLNetRegressor(random_state=seed)
    else:
        est = HTLNetRegressor(**dict(SIZES, n_iter_no_change=patience), **params, max_iter=max_iter,
                              early_stopping=True, validation_fraction=1 / 9, random_state=seed)
    t0 = time.perf_counter()
    try:
        est.fit(X, Y)
        est.diverged_epoch_ = np.nan
    except TrainingDivergedError as exc:
        # reported, not hidden: the estimator is left fitted on its best weights before the divergence
        if exc.best_epoch is None:
            raise
        print(f"  diverged at epoch {exc.epoch} ({exc.reason}); scored on the weights of epoch {exc.best_epoch}")
        est.diverged_epoch_ = exc.epoch
    seconds = time.perf_counter() - t0
    return est.predict, seconds / est.n_iter_, n_params(est.net_.module_), est


def _for_histgb(X):
    """HistGradientBoosting embeds at most 255 categories: larger fields go in as ordinal codes."""
    big = [c for c in X.columns if isinstance(X[c].dtype, pd.CategoricalDtype) and len(X[c].cat.categories) > 255]
    return X.assign(**{c: X[c].cat.codes.astype(float) for c in big}) if big else X


def fit_histgb(X, Y, seed):
    models = []
    X = _for_histgb(X)
    for j, name in enumerate(Y.columns):
        cls = HistGradientBoostingRegressor if j == Y.shape[1] - 1 else HistGradientBoostingClassifier
        models.append(cls(categorical_features="from_dtype", early_stopping=True, validation_fraction=1 / 9,
                          random_state=seed).fit(X, Y[name]))

    def predict(Xt):
        Xt = _for_histgb(Xt)
        return np.column_stack([m.predict_proba(Xt)[:, 1] for m in models[:-1]] + [models[-1].predict(Xt)])

    return predict, float("nan"), int(sum(m.n_iter_ for m in models)), None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--regime", choices=["transformed", "paper"], default="transformed",
                        help="paper: every neural model on the core's own units (issue 17)")
    parser.add_argument("--datasets", nargs="+", default=None,
                        help="default: hillstrom autoclaim creditcard charity funnel; with --regime paper "
                             + " ".join(PAPER_REGIME_DATASETS))
    parser.add_argument("--models", nargs="+", default=None,
                        help="default: all; with --regime paper " + " ".join(PAPER_REGIME_MODELS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--max-iter", type=int, default=30)
    parser.add_argument("--patience", type=int, default=SIZES["n_iter_no_change"],
                        help="early stopping patience in epochs")
    parser.add_argument("--transfer-rows", type=int, default=1_000_000,
                        help="rows of the transfer_funnel set (the paper's regime)")
    parser.add_argument("--n-rows", type=int, default=None, help="subsample every data set (quick runs)")
    parser.add_argument("--funnel-rows", type=int, default=50_000,
                        help="rows of the make_funnel set (50,000 keeps the full run within hours on 2 cores)")
    parser.add_argument("--quick", action="store_true", help="2 data sets, 2,000 rows, 1 seed, 2 epochs")
    parser.add_argument("--out", type=Path, default=None,
                        help="default benchmarks/results, with --regime paper benchmarks/results/paper_regime")
    parser.add_argument("--resume", action="store_true", help="keep the rows already in --out/results.csv")
    parser.add_argument("--no-curves", action="store_true", help="skip the gradient-norm figure")
    parser.add_argument("--summarize", nargs="*", type=Path, default=None, metavar="RESULTS_CSV",
                        help="only rewrite --out/summary.md from --out/results.csv (or from the given files, "
                             "one per part of a run split over processes)")
    parser.add_argument("--curves-only", action="store_true",
                        help="only draw --out/gradient_norms.png (first data set, first seed)")
    args = parser.parse_args(argv)
    paper = args.regime == "paper"
    results_dir = Path(__file__).resolve().parent / "results"
    args.out = args.out or (results_dir / "paper_regime" if paper else results_dir)
    chosen = args.datasets
    args.datasets = args.datasets or (PAPER_REGIME_DATASETS if paper else
                                      ["hillstrom", "autoclaim", "creditcard", "charity", "funnel"])
    args.models = args.models or (PAPER_REGIME_MODELS if paper else list(MODELS))
    unknown = sorted(set(args.models) - set(MODELS))
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {list(MODELS)}")
    if args.summarize is not None:
        files = args.summarize or [args.out / "results.csv"]
        results = pd.concat([pd.read_csv(f) for f in files], ignore_index=True)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "summary.md").write_text(summary(results, paper=paper))
        return results
    if args.curves_only:
        torch.set_num_threads(1)
        args.out.mkdir(parents=True, exist_ok=True)
        name = args.datasets[0]
        X, Y = load(name, args)[:2]
        plot_gradient_norms({name: gradient_norm_curves(X, Y, args)}, args.out / "gradient_norms.png")
        return None
    if args.quick:
        args.datasets = chosen or ["hillstrom", "transfer_funnel" if paper else "funnel"]
        args.seeds, args.max_iter, args.n_rows = [0], 2, 2000
        args.funnel_rows = args.transfer_rows = 2000
    torch.set_num_threads(1)  # one thread, so timings compare like for like on a shared machine
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        import torch_rechub  # noqa: F401
    except ImportError:
        print("torch-rechub is not installed (pip install torch-rechub==0.9.0): skipping its models")
        args.models = [m for m in args.models if not isinstance(MODELS[m], str)]
    warm = datasets.load("hillstrom", 300)[:2]  # first torch calls are slow: keep them out of the timings
    HTLNetRegressor(max_iter=1, random_state=0).fit(*warm)
    done_path = args.out / "results.csv"
    rows = pd.read_csv(done_path).to_dict("records") if args.resume and done_path.exists() else []
    done = {(r["dataset"], r["model"], int(r["seed"])) for r in rows}
    curves = {}
    for name in args.datasets:
        try:
            X, Y, dates = load(name, args)
        except FileNotFoundError as exc:
            print(f"skipping {name}: {exc}")
            continue
        for seed in args.seeds:
            X_fit, X_test, Y_fit, Y_test = split(X, Y, seed, dates)
            for model in args.models:
                if (name, model, seed) in done:
                    continue
                spec = in_regime(MODELS[model], args.regime)
                if spec is None:
                    predict, per_epoch, size, est = fit_histgb(X_fit, Y_fit, seed)
                elif isinstance(spec, str):
                    import rechub_peer

                    predict, per_epoch, size, est = rechub_peer.fit(spec, X_fit, Y_fit, seed, args.max_iter, SIZES)
                else:
                    predict, per_epoch, size, est = fit_htlnet_family(spec, X_fit, Y_fit, seed, args.max_iter,
                                                                      args.patience)
                t0 = time.perf_counter()
                pred = predict(X_test)
                rows_per_s = len(X_test) / (time.perf_counter() - t0)
                report = funnel_report(Y_test, pred).drop(columns="task")
                metrics = {f"{t}:{m}": v for (t, m), v in report.stack().dropna().items()}
                rows.append(dict(dataset=name, model=model, seed=seed, split="chronological" if dates is not None
                                 else "random", n_epochs=getattr(est, "n_iter_", np.nan),
                                 diverged_epoch=getattr(est, "diverged_epoch_", np.nan), fit_s_per_epoch=per_epoch,
                                 predict_rows_per_s=rows_per_s, params=size, **metrics))
                print(f"{name} seed {seed} {model}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()
                                                                 if "AUC" in k or "Gini" in k), flush=True)
                pd.DataFrame(rows).to_csv(done_path, index=False)  # after every fit: a long run can resume
        figure = "transfer_funnel" if paper else "hillstrom"
        if name == figure and not args.no_curves and {"htlnet", "htlnet/none"} <= set(args.models):
            curves[name] = gradient_norm_curves(X, Y, args)
    results = pd.DataFrame(rows)
    results.to_csv(done_path, index=False)
    (args.out / "summary.md").write_text(summary(results, paper=paper))
    if curves:
        plot_gradient_norms(curves, args.out / "gradient_norms.png")
    print(f"\nwrote {args.out / 'results.csv'}, {args.out / 'summary.md'}")
    return results


def load(name, args):
    """(X, Y, dates) of a data set at the run's size."""
    if name == "funnel":
        return (*datasets.funnel(args.funnel_rows), None)
    if name == "transfer_funnel":
        return (*datasets.transfer_funnel(args.transfer_rows), None)
    return datasets.load(name, args.n_rows)


def defaults_against_trees(results, tolerance=0.01):
    """Markdown table of issue 9's test: the untuned ``HTLNetRegressor()`` ("default") against
    per-task HistGradientBoosting ("histgb"), per data set, on the seeds both ran: mean ± std of each
    stage AUC (held if within ``tolerance`` of the trees' or better), the core's normalised Gini
    (held if at least the trees') and NRMSE (held if at most the trees')."""
    lines = ["| data set | seeds | metric | default | histgb | held |", "|---|---|---|---|---|---|"]
    for name, part in results.groupby("dataset", sort=False):
        both = part[part["model"].isin([DEFAULT, "histgb"])]
        seeds = both.groupby("seed")["model"].nunique()
        both = both[both["seed"].isin(seeds.index[seeds == 2])]
        if both.empty:
            continue
        metrics = [c for c in both.columns if c.endswith((":AUC", ":Gini", ":NRMSE")) and both[c].notna().any()]
        for metric in metrics:
            stats = both.groupby("model")[metric].agg(["mean", "std"])
            ours, trees = stats.loc[DEFAULT, "mean"], stats.loc["histgb", "mean"]
            held = (ours >= trees - tolerance if metric.endswith("AUC") else
                    ours >= trees if metric.endswith("Gini") else ours <= trees)
            cell = lambda m: f"{stats.loc[m, 'mean']:.4f} ± {stats.loc[m, 'std']:.4f}"  # noqa: E731
            lines.append(f"| {name} | {both['seed'].nunique()} | {metric} | {cell(DEFAULT)} | {cell('histgb')} | "
                         f"{'yes' if held else '**no**'} |")
    return "\n".join(lines) + "\n" if len(lines) > 2 else ""


def encoding_and_loss_tables(results):
    """Markdown tables of the issue-9 models beside the paper's HTLNet and gradient boosting: per
    data set, mean ± std over seeds of the core target's Gini and NRMSE and the first stage's AUC."""
    models = ["histgb", "htlnet"] + [m for m in MODELS if "+" in m] + [DEFAULT]
    part = results[results["model"].isin(models)]
    if part["model"].nunique() < 3:
        return ""
    out = []
    for label, pick in [("core target: normalised Gini", lambda cols: [c for c in cols if c.endswith(":Gini")]),
                        ("core target: NRMSE", lambda cols: [c for c in cols if c.endswith(":NRMSE")]),
                        ("first stage: AUC", lambda cols: [c for c in cols if c.endswith(":AUC")][:1])]:
        table = pd.DataFrame(index=[m for m in models if m in set(part["model"])])
        for name, ds in part.groupby("dataset", sort=False):
            cols = [c for c in ds.columns if ":" in c and ds[c].notna().any()]
            for col in pick(cols):
                stats = ds.groupby("model")[col].agg(["mean", "std", "count"])
                table[f"{name} {col}"] = [
                    f"{stats.loc[m, 'mean']:.3f} ± {stats.loc[m, 'std']:.3f} ({int(stats.loc[m, 'count'])})"
                    if m in stats.index else "" for m in table.index]
        out.append(f"#### {label} (mean ± std over seeds, number of seeds)\n\n{table.to_markdown()}\n")
    return "\n".join(out)


BASELINES = ["single_task", "shared_bottom", "mmoe", "ple", "esmm", "aitm", "histgb"]


def against_htlnet(results):
    """Markdown table of the paper's claims 1 and 2: per data set and metric (each stage's AUC, the
    core's normalised Gini), for every other model, the mean over seeds of (HTLNet - model) on the
    same seed, its standard deviation, and on how many seeds HTLNet was ahead.  Positive means HTLNet
    is better (every metric here is higher-better)."""
    lines = []
    for name, part in results.groupby("dataset", sort=False):
        metrics = [c for c in part.columns if c.endswith((":AUC", ":Gini")) and part[c].notna().any()]
        wide = part.pivot_table(index="seed", columns="model", values=metrics)
        if "htlnet" not in wide.columns.get_level_values(1):
            continue
        header = "| model | " + " | ".join(metrics) + " |"
        lines += [f"#### {name}: HTLNet minus each model (mean ± std over seeds, seeds HTLNet ahead)\n",
                  header, "|---" * (len(metrics) + 1) + "|"]
        others = [m for m in part["model"].unique() if m != "htlnet"]
        for model in others:
            cells = []
            for metric in metrics:
                diff = (wide[(metric, "htlnet")] - wide[(metric, model)]).dropna() \
                    if (metric, model) in wide.columns else pd.Series(dtype=float)
                cells.append("" if diff.empty else
                             f"{diff.mean():+.4f} ± {diff.std():.4f} ({int((diff > 0).sum())}/{len(diff)})")
            lines.append(f"| {model} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def summary(results, paper=False):
    """Markdown tables: per data set, mean and std over seeds of each metric per model, then
    :func:`defaults_against_trees` when both models ran; with ``paper``, :func:`against_htlnet` first.

    Only seeds on which every model of the data set has run are used (a resumed run may have
    finished some models of a seed and not others)."""
    out = []
    if paper:
        out.append(f"### The paper's claims 1 and 2: HTLNet against each baseline and ablation\n\n"
                   f"{against_htlnet(results)}")
    versus = defaults_against_trees(results)
    if versus:
        out.append(f"### The defaults against gradient boosting\n\n{versus}")
    focus = encoding_and_loss_tables(results)
    if focus:
        out.append(f"### Numeric encodings and core losses\n\n{focus}")
    for name, part in results.groupby("dataset", sort=False):
        n_models = part["model"].nunique()
        complete = part.groupby("seed")["model"].nunique()
        part = part[part["seed"].isin(complete.index[complete == n_models])]
        cols = [c for c in part.columns if ":" in c and part[c].notna().any()]
        cols += ["fit_s_per_epoch", "predict_rows_per_s", "params"]
        stats = part.groupby("model", sort=False)[cols].agg(["mean", "std"])
        table = pd.DataFrame(index=stats.index)
        for c in cols:
            mean, std = stats[(c, "mean")], stats[(c, "std")]
            fmt = "{:.0f}" if c in ("predict_rows_per_s", "params") else "{:.4f}"
            table[c] = [fmt.format(m) + ("" if np.isnan(s) else f" ± {fmt.format(s)}") for m, s in zip(mean, std)]
        out.append(f"### {name} ({part['seed'].nunique()} seeds)\n\n{table.to_markdown()}\n")
    return "\n".join(out)


def gradient_norm_curves(X, Y, args):
    """Per-task gradient norms on the shared embedding during training (mean over each epoch's
    batches), before the rule and after it (each task's row of the adjusted gradient), for the plain
    sum and the HTLNet rule, in the run's regime."""
    X_fit, _, Y_fit, _ = split(X, Y, args.seeds[0])
    spec = in_regime(MODELS["htlnet"], args.regime)
    curves = {}
    for label, rule in [("with the rule", "htlnet"), ("without (plain sum)", "none")]:
        est = HTLNetRegressor(**dict(SIZES, n_iter_no_change=args.patience), **dict(spec, gradient_adjustment=rule),
                              max_iter=args.max_iter, early_stopping=False, random_state=args.seeds[0],
                              net_kwargs={"record_gradient_norms": True}).fit(X_fit, Y_fit)
        for key, when in [("grad_norm_", "before"), ("grad_norm_adjusted_", "after")]:
            if rule == "none" and when == "after":
                continue  # the plain sum adjusts nothing
            curves[f"{label}, {when} adjustment" if rule != "none" else label] = {
                name: [float(np.mean([b[key + name] for b in epoch["batches"]])) for epoch in est.history_]
                for name in est.target_names_}
    return curves


def plot_gradient_norms(curves, path):
    """The paper's Figure 5: one panel per curve set of :func:`gradient_norm_curves`, log scale; the
    numbers go to a CSV beside the figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    name, data = next(iter(curves.items()))
    pd.DataFrame([dict(dataset=name, panel=label, task=task, epoch=e + 1, mean_norm=v)
                  for label, norms in data.items() for task, values in norms.items()
                  for e, v in enumerate(values)]).to_csv(Path(path).with_suffix(".csv"), index=False)
    fig, axes = plt.subplots(1, len(data), figsize=(5 * len(data), 3.8), sharey=True)
    for ax, (label, norms) in zip(np.atleast_1d(axes), data.items()):
        for task, values in norms.items():
            ax.plot(range(1, len(values) + 1), values, marker="o", label=task)
        ax.set(title=f"{name}: {label}", xlabel="epoch", yscale="log")
        ax.title.set_fontsize(9)
        ax.legend(fontsize=8)
    np.atleast_1d(axes)[0].set_ylabel("mean gradient norm on the shared embedding")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
