"""
Pipeline and grid search
========================

:class:`~sk_htlnet.HTLNetRegressor` is an ordinary scikit-learn estimator: it goes into a
:class:`~sklearn.pipeline.Pipeline` after a :class:`~sklearn.compose.ColumnTransformer`, and a
:class:`~sklearn.model_selection.GridSearchCV` tunes it with one scorer per metric and target from
:func:`sk_htlnet.metrics.funnel_scorers`.

The script ``examples/grid_search.py`` in the repository runs the same search on all rows.
"""

# %%
# Data: a held-out test tenth
# ---------------------------
# ``X`` holds numeric and ``category`` columns; ``Y`` holds the funnel in order: two binary
# stages (``visit``, ``conversion``), then the continuous core target (``spend``, USD).
import os

import matplotlib.pyplot as plt
import pandas as pd
from sklearn.compose import ColumnTransformer, make_column_selector
from sklearn.model_selection import GridSearchCV, KFold, train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from sk_htlnet import HTLNetRegressor
from sk_htlnet.datasets import load_hillstrom
from sk_htlnet.metrics import funnel_report, funnel_scorers

# SK_HTLNET_DOCS_QUICK=1 (the docs' CI build): a small subsample, two epochs
QUICK = os.environ.get("SK_HTLNET_DOCS_QUICK") == "1"
N_ROWS, MAX_ITER = (4_000, 2) if QUICK else (None, 8)

X, Y = load_hillstrom()
if N_ROWS is not None:
    X = X.sample(n=N_ROWS, random_state=0)
    Y = Y.loc[X.index]
X_train, X_test, Y_train, Y_test = train_test_split(
    X, Y, test_size=0.1, random_state=0
)
print(X_train.dtypes.to_string())
Y_train.head()

# %%
# The pipeline
# ------------
# The numeric columns are standardised; the categorical ones pass through untouched. With
# ``set_output(transform="pandas")`` the ColumnTransformer hands a DataFrame to HTLNet, so the
# ``category`` columns keep their dtype and are embedded natively
# (``categorical_features="from_dtype"``). ``n_threads=1`` gives each of the search's parallel
# fits one core, so that they do not oversubscribe the machine.
columns = ColumnTransformer(
    [
        ("numeric", StandardScaler(), make_column_selector(dtype_include="number")),
        ("categorical", "passthrough", make_column_selector(dtype_exclude="number")),
    ],
    verbose_feature_names_out=False,
).set_output(transform="pandas")
pipe = Pipeline([
    ("columns", columns),
    ("htlnet", HTLNetRegressor(max_iter=MAX_ITER, n_threads=1, random_state=0)),
])
pipe

# %%
# The search
# ----------
# :func:`~sk_htlnet.metrics.funnel_scorers` makes a scorer for every metric of every target
# (``visit_auc``, ``conversion_neg_log_loss``, ``spend_gini``, ...), named after ``Y``'s
# columns. Losses are negated, so greater is better in every column of ``cv_results_``. The
# candidate with the best spend Gini, the ranking quality of the business target, is refitted on
# all the training rows.
search = GridSearchCV(
    pipe,
    {"htlnet__learning_rate": [1e-3, 3e-3], "htlnet__relax_factor": [0.1, 0.5]},
    scoring=funnel_scorers(Y_train),
    refit="spend_gini",
    cv=KFold(2 if QUICK else 3, shuffle=True, random_state=0),
    n_jobs=2,
    error_score="raise",
)
search.fit(X_train, Y_train)
print("best parameters:", search.best_params_)

# %%
# The cross-validation table, one row per candidate (mean over the folds):
shown = ["spend_gini", "spend_neg_nrmse", "visit_auc", "conversion_auc"]
results = pd.DataFrame(search.cv_results_)
table = results[["param_htlnet__learning_rate", "param_htlnet__relax_factor"]
                + [f"mean_test_{name}" for name in shown] + ["rank_test_spend_gini"]]
table.sort_values("rank_test_spend_gini")

# %%
# Every score of every candidate at a glance:
fig, axes = plt.subplots(1, len(shown), figsize=(12, 3), layout="constrained")
labels = [
    f"lr={lr:g}\ngamma={gamma:g}"
    for lr, gamma in zip(results["param_htlnet__learning_rate"],
                         results["param_htlnet__relax_factor"])
]
for ax, name in zip(axes, shown):
    ax.bar(range(len(labels)), results[f"mean_test_{name}"],
           yerr=results[f"std_test_{name}"], color="#1f78b4", capsize=3)
    ax.set_xticks(range(len(labels)), labels, fontsize=7)
    ax.set_title(name, fontsize=10)
fig.suptitle("cross-validated scores per candidate (greater is better)")
plt.show()

# %%
# The refitted pipeline on the test split
# ---------------------------------------
# ``search`` predicts with the best pipeline: stage probabilities, then expected spend in USD.
funnel_report(Y_test, search.predict(X_test))
