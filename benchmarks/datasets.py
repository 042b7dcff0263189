"""Real funnels from ../shared/data (and the bundled Hillstrom) as (X, Y) for the benchmarks.

Each loader returns X (DataFrame: numeric columns and category columns) and Y (DataFrame: the binary
stages in funnel order, then the continuous core target), or raises FileNotFoundError when the
shared data folder is absent.  Sources and licences: the SOURCE.txt beside each file.
"""

from pathlib import Path

import numpy as np
import pandas as pd

from sk_htlnet.datasets import load_hillstrom, make_funnel

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _categorical(frame):
    for c in frame.columns:
        if frame[c].dtype == object or pd.api.types.is_string_dtype(frame[c]) or frame[c].dtype == bool:
            frame[c] = frame[c].astype("category")
    return frame


def hillstrom():
    """64,000 e-mail customers: visit -> conversion -> spend (USD)."""
    return load_hillstrom()


def autoclaim():
    """10,296 US car policies: CLM_FLAG (claim filed) -> CLM_AMT (USD); dated by PLCYDATE."""
    df = pd.read_csv(SHARED / "cplm_autoclaim" / "AutoClaim.csv.gz", dtype={"POLICYNO": str})
    Y = pd.DataFrame({"claim": (df["CLM_FLAG"] == "Yes").astype(int), "amount": df["CLM_AMT"].astype(float)})
    X = df.drop(columns=["POLICYNO", "PLCYDATE", "CLM_AMT", "CLM_FLAG", "IN_YY"])
    X.attrs["dates"] = pd.to_datetime(df["PLCYDATE"], format="%Y-%m-%d").to_numpy()
    return _categorical(X), Y


def ausprivauto():
    """67,856 Australian motor policies 2004-05 (de Jong & Heller): ClaimOcc -> ClaimAmount (AUD).

    ClaimNb is dropped (it is > 0 exactly when ClaimOcc is 1); Exposure (the policy-year share) stays
    a feature."""
    df = pd.read_csv(SHARED / "casdatasets_insurance" / "ausprivauto0405.csv.gz")
    Y = pd.DataFrame({"claim": df["ClaimOcc"].astype(int), "amount": df["ClaimAmount"].astype(float)})
    return _categorical(df.drop(columns=["ClaimOcc", "ClaimNb", "ClaimAmount"])), Y


def creditcard():
    """1,319 applicants (Greene): card accepted -> spends (> 0) -> average monthly expenditure."""
    df = pd.read_csv(SHARED / "econometrics_hurdle" / "AER__CreditCard.csv")
    card = (df["card"] == "yes").astype(int)
    Y = pd.DataFrame({"card": card, "spends": (df["expenditure"] > 0).astype(int),
                      "expenditure": df["expenditure"].astype(float)})
    X = df.drop(columns=["card", "expenditure", "share"])  # 'share' = expenditure / income: a leak
    return _categorical(X), Y


def charity():
    """4,268 Dutch direct-mail donors (Wooldridge): respond -> gift (guilders)."""
    df = pd.read_csv(SHARED / "econometrics_hurdle" / "wooldridge__charity.csv")
    Y = pd.DataFrame({"respond": df["respond"].astype(int), "gift": df["gift"].astype(float)})
    return df.drop(columns=["respond", "gift"]), Y


def funnel(n_samples=200_000):
    """A large synthetic funnel (make_funnel: 2 stages, 8 categorical and 6 numeric fields)."""
    return make_funnel(n_samples, n_stages=2, n_categorical=8, n_numeric=6,
                       cardinality=[10, 100, 1000, 10_000, 50, 5, 20, 200], random_state=0)


def transfer_funnel(n_samples=1_000_000):
    """The paper's regime (issue 17): make_funnel's transfer process, where the core depends on the
    realised stages and on stage-specific signals (beta = 1.5 per stage), with a Pareto-tailed core
    (tail index 3) on a raw scale of about 1e6 (watch time in milliseconds, spend in cents)."""
    return make_funnel(n_samples, n_stages=2, n_categorical=8, n_numeric=6,
                       cardinality=[10, 100, 1000, 10_000, 50, 5, 20, 200], transfer=1.5, core_tail_index=3.0,
                       core_scale=1e6, random_state=0)


LOADERS = {"hillstrom": hillstrom, "autoclaim": autoclaim, "ausprivauto": ausprivauto, "creditcard": creditcard,
           "charity": charity, "funnel": funnel, "transfer_funnel": transfer_funnel}


def load(name, n_rows=None, seed=0):
    """(X, Y, dates) of a benchmark data set, optionally a random subset of ``n_rows`` rows; dates is
    the rows' datetime64 array where the data set has one (a chronological split uses it), else None."""
    X, Y = LOADERS[name]()
    dates = X.attrs.pop("dates", None)
    if n_rows is not None and n_rows < len(X):
        rows = np.sort(np.random.default_rng(seed).choice(len(X), n_rows, replace=False))
        X, Y = X.iloc[rows].reset_index(drop=True), Y.iloc[rows].reset_index(drop=True)
        dates = None if dates is None else dates[rows]
    return X, Y, dates
