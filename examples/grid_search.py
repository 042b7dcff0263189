"""Tune HTLNet inside a scikit-learn Pipeline with GridSearchCV and the funnel scorers.

HTLNet is an ordinary scikit-learn estimator, so the usual tools apply unchanged. On the Hillstrom
e-mail campaign (visit -> conversion -> spend, bundled with the package) this script

1. holds out a fixed-seed test tenth;
2. builds a Pipeline: a ColumnTransformer that standardises the numeric columns and passes the
   categorical ones through (pandas output, so their ``category`` dtype survives and HTLNetRegressor
   embeds them), then ``HTLNetRegressor(n_threads=1)``;
3. grid-searches the learning rate and HTLNet's relax factor gamma (§4) with 3-fold cross-validation
   in two parallel processes, scoring every target with :func:`sk_htlnet.metrics.funnel_scorers`
   (AUC and log loss for the stages; NRMSE, NMAE, normalised Gini and Spearman for spend) and
   refitting the candidate with the best spend Gini, the ranking quality of the core target;
4. prints the cross-validation table, the best parameters, and the refit pipeline's
   ``funnel_report`` on the test split.

Losses are scored negated (``neg_*``), so greater is better in every column. The default run takes
about four minutes on two CPU cores; ``--n-rows 4000 --max-iter 2`` is a quick check.
"""

import argparse
import time

import pandas as pd
from sklearn.compose import ColumnTransformer, make_column_selector
from sklearn.model_selection import GridSearchCV, KFold, ParameterGrid, train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from sk_htlnet import HTLNetRegressor
from sk_htlnet.datasets import load_hillstrom
from sk_htlnet.metrics import funnel_report, funnel_scorers

PARAM_GRID = {
    "htlnet__learning_rate": [1e-3, 3e-3],
    "htlnet__relax_factor": [0.1, 0.5],
}
REFIT = "spend_gini"
SHOWN = ["spend_gini", "spend_spearman", "spend_neg_nrmse", "spend_neg_nmae", "visit_auc",
         "conversion_auc", "conversion_neg_log_loss"]


def build_pipeline(max_iter, seed):
    """Scale the numeric columns, keep the categorical ones as they are, then HTLNet."""
    columns = ColumnTransformer(
        [
            ("numeric", StandardScaler(), make_column_selector(dtype_include="number")),
            ("categorical", "passthrough", make_column_selector(dtype_exclude="number")),
        ],
        verbose_feature_names_out=False,
    ).set_output(transform="pandas")
    model = HTLNetRegressor(max_iter=max_iter, n_threads=1, random_state=seed)
    return Pipeline([("columns", columns), ("htlnet", model)])


def results_table(search):
    """cv_results_ as a DataFrame: one row per candidate, mean (and spread) of the shown scores."""
    res = search.cv_results_
    table = pd.DataFrame({name.split("__")[-1]: res[f"param_{name}"] for name in PARAM_GRID})
    for key in SHOWN:
        table[key] = res[f"mean_test_{key}"]
    table[f"{REFIT}_std"] = res[f"std_test_{REFIT}"]
    table["rank"] = res[f"rank_test_{REFIT}"]
    table["fit_s"] = res["mean_fit_time"]
    return table.sort_values("rank")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-rows", type=int, default=None,
                        help="random subsample of the 64,000 customers, for a quick run (default: all)")
    parser.add_argument("--max-iter", type=int, default=8, help="epochs per fit (default: 8)")
    parser.add_argument("--n-jobs", type=int, default=2, help="parallel fits (default: 2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split, folds and models")
    args = parser.parse_args(argv)

    X, Y = load_hillstrom()
    if args.n_rows is not None and args.n_rows < len(X):
        X = X.sample(n=args.n_rows, random_state=args.seed)
        Y = Y.loc[X.index]
    X_fit, X_test, Y_fit, Y_test = train_test_split(X, Y, test_size=0.1, random_state=args.seed)

    search = GridSearchCV(
        build_pipeline(args.max_iter, args.seed),
        PARAM_GRID,
        scoring=funnel_scorers(Y),  # {"visit_auc", ..., "spend_gini", "spend_spearman"}
        refit=REFIT,
        cv=KFold(3, shuffle=True, random_state=args.seed),
        n_jobs=args.n_jobs,
        error_score="raise",
    )
    n_fits = len(ParameterGrid(PARAM_GRID)) * search.cv.get_n_splits()
    print(f"Hillstrom: {len(X_fit):,} rows to search on, {len(X_test):,} held out; "
          f"{n_fits} fits of up to {args.max_iter} epochs on {args.n_jobs} process(es), then the refit.")
    t0 = time.perf_counter()
    search.fit(X_fit, Y_fit)
    elapsed = time.perf_counter() - t0

    with pd.option_context("display.width", 160, "display.max_columns", 20, "display.precision", 4):
        print(f"\nCross-validation (3 folds, mean over folds; refit on {REFIT}; greater is better):")
        print(results_table(search).to_string(index=False))
        print(f"\nBest parameters: {search.best_params_}  (CV {REFIT} = {search.best_score_:.4f})")
        print(f"Search and refit took {elapsed:.0f} s "
              f"(refit: {search.refit_time_:.0f} s, {search.best_estimator_[-1].n_iter_} epochs).")
        print("\nRefit pipeline on the held-out test split:")
        print(funnel_report(Y_test, search.predict(X_test)).to_string())
    return search


if __name__ == "__main__":
    main()
