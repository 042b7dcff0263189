"""
Reading the predictions: expected spend, ranking, gain curve
============================================================

What :meth:`HTLNetRegressor.predict <sk_htlnet.HTLNetRegressor.predict>` returns, and how to use
it to decide whom to target. For the Hillstrom funnel (visit -> conversion -> spend) each row of
the prediction holds

- ``P(visit = 1 | x)`` and ``P(conversion = 1 | x)``: probabilities over *all* customers (entire
  space), not conditional on the previous stage;
- the expected spend ``E[spend | x]`` in USD, over all customers too: a customer who does not buy
  counts as 0, so this is the amount to expect from sending them the e-mail campaign.
"""

# %%
# Fit
# ---
import os

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from sk_htlnet import HTLNetRegressor
from sk_htlnet.datasets import load_hillstrom
from sk_htlnet.metrics import gain_curve, normalized_gini

# SK_HTLNET_DOCS_QUICK=1 (the docs' CI build): a small subsample, two epochs
QUICK = os.environ.get("SK_HTLNET_DOCS_QUICK") == "1"
N_ROWS, MAX_ITER = (8_000, 2) if QUICK else (None, 30)

X, Y = load_hillstrom()
if N_ROWS is not None:
    X = X.sample(n=N_ROWS, random_state=0)
    Y = Y.loc[X.index]
X_train, X_test, Y_train, Y_test = train_test_split(
    X, Y, test_size=0.2, random_state=0
)
est = HTLNetRegressor(max_iter=MAX_ITER, early_stopping=True, random_state=0)
est.fit(X_train, Y_train)

# %%
# One row per customer
# --------------------
# :meth:`~sk_htlnet.HTLNetRegressor.predict_frame` returns the prediction as a DataFrame named
# after ``Y``'s columns, indexed like ``X``. ``predict`` returns the same numbers as a float64
# array of shape ``(n_samples, 3)``.
pred = est.predict_frame(X_test)
pred.head()

# %%
# The expected spend is in USD and calibrated on the training rows, so its average over the test
# rows should be close to the average spend actually observed (up to sampling noise: a few
# buyers with large baskets move the observed mean). (By default the network fits a zero-inflated lognormal
# likelihood of spend; ``predict`` returns its mean, recalibrated on the training rows, see
# :doc:`/user_guide/target_transform`.)
pd.DataFrame({
    "predicted (mean over rows)": pred.mean(),
    "observed (mean over rows)": Y_test.mean(),
})

# %%
# Rank customers by expected spend
# --------------------------------
# Ranking by ``E[spend | x]`` puts first the customers expected to bring the most money, which
# combines how likely they are to buy and how much they would spend. Here are the top of the
# ranking and the average of each decile of it: with a good ranking the observed spend falls from
# the first decile to the last along with the predicted one (noisily: a decile of the test rows
# holds only a handful of buyers).
ranked = pd.concat(
    [X_test[["recency", "history", "segment"]], pred.add_prefix("pred_"),
     Y_test["spend"].rename("observed_spend")],
    axis=1,
)
ranked = ranked.sort_values("pred_spend", ascending=False)
ranked.head(10)

# %%
decile = pd.Series(np.arange(len(ranked)) * 10 // len(ranked) + 1, index=ranked.index,
                   name="decile")
columns = ["pred_visit", "pred_conversion", "pred_spend", "observed_spend"]
ranked.groupby(decile)[columns].mean()

# %%
# The gain curve
# --------------
# :func:`~sk_htlnet.metrics.gain_curve` answers "if I contact the top x % of the ranking, what
# share of the total spend do I reach?". The perfect ordering (by the observed spend) reaches all
# of it with the buyers alone; a random ordering reaches x % with x % of the customers. The
# normalised Gini (:func:`~sk_htlnet.metrics.normalized_gini`) summarises the curve: the area
# between the model's curve and the diagonal, over the perfect ordering's.
spend = Y_test["spend"].to_numpy()
share, captured = gain_curve(spend, pred["spend"])
_, perfect = gain_curve(spend, spend)
gini = normalized_gini(spend, pred["spend"])

fig, ax = plt.subplots(figsize=(6, 4.5), layout="constrained")
ax.plot(share, captured, color="#1f78b4", label=f"HTLNet (normalised Gini {gini:.3f})")
ax.plot(share, perfect, color="grey", ls="--", label="perfect ordering")
ax.plot([0, 1], [0, 1], color="grey", ls=":", label="random ordering")
top = int(0.2 * len(spend))
orange = "#d95f02"
ax.axvline(0.2, color=orange, lw=0.8)
ax.annotate(f"top 20 %: {captured[top]:.0%} of the spend", (0.2, captured[top]),
            (0.3, 0.2), color=orange, arrowprops=dict(arrowstyle="->", color=orange))
ax.set_xlabel("share of customers contacted, by predicted spend")
ax.set_ylabel("share of total spend reached")
ax.legend(loc="lower right")
plt.show()

# %%
# Stage probabilities are entire-space
# ------------------------------------
# ``P(conversion = 1 | x)`` is the probability of buying among all customers, the product of
# the chance to visit and the chance to buy after a visit. Their ratio estimates the conversion
# rate among visitors, and the ratio of expected spend to the conversion probability the
# expected basket of a buyer. The heads are trained separately and not forced to be consistent,
# so read these ratios as rough estimates, not as model outputs.
derived = pd.DataFrame({
    "P(buy | visit)": pred["conversion"] / pred["visit"],
    "E[spend | buy]": pred["spend"] / pred["conversion"],
})
derived.describe().loc[["mean", "25%", "50%", "75%"]]
