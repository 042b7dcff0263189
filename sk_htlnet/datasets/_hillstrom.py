"""The Hillstrom e-mail campaign data set, a real visit -> conversion -> spend funnel."""

import gzip
from importlib import resources

import pandas as pd
from sklearn.utils import Bunch

__all__ = ["load_hillstrom"]

_FILE = "hillstrom.csv.gz"

_CATEGORIES = {
    "history_segment": [
        "1) $0 - $100",
        "2) $100 - $200",
        "3) $200 - $350",
        "4) $350 - $500",
        "5) $500 - $750",
        "6) $750 - $1,000",
        "7) $1,000 +",
    ],
    "zip_code": ["Rural", "Surburban", "Urban"],
    "channel": ["Multichannel", "Phone", "Web"],
    "segment": ["Mens E-Mail", "No E-Mail", "Womens E-Mail"],
}
_DTYPES = {
    "recency": "int64",
    "history_segment": pd.CategoricalDtype(_CATEGORIES["history_segment"]),
    "history": "float64",
    "mens": "int64",
    "womens": "int64",
    "zip_code": pd.CategoricalDtype(_CATEGORIES["zip_code"]),
    "newbie": "int64",
    "channel": pd.CategoricalDtype(_CATEGORIES["channel"]),
    "segment": pd.CategoricalDtype(_CATEGORIES["segment"]),
    "visit": "int64",
    "conversion": "int64",
    "spend": "float64",
}
FEATURE_NAMES = [
    "recency", "history_segment", "history", "mens", "womens",
    "zip_code", "newbie", "channel", "segment",
]  # fmt: skip
TARGET_NAMES = ["visit", "conversion", "spend"]

DESCR = """\
Hillstrom e-mail analytics data set
-----------------------------------

Kevin Hillstrom, "MineThatData E-Mail Analytics and Data Mining Challenge",
2008-03-20. 64,000 customers who purchased within the last twelve months were
randomly sent a men's merchandise e-mail, a women's merchandise e-mail, or no
e-mail; their visits, conversions and spend in the following two weeks were
recorded. Licence: none stated; released publicly for the 2008 challenge and
widely redistributed. Cite: K. Hillstrom (2008), The MineThatData E-Mail
Analytics and Data Mining Challenge, MineThatData blog.

Features (9):
  recency          int64     months since last purchase (1-12)
  history_segment  category  bucket of `history` ("1) $0 - $100" ... "7) $1,000 +")
  history          float64   USD spent in the past year
  mens             int64     1 if the customer bought men's merchandise last year
  womens           int64     1 if the customer bought women's merchandise last year
  zip_code         category  Rural / Surburban / Urban (spelling as in the source)
  newbie           int64     1 if a new customer in the past twelve months
  channel          category  Phone / Web / Multichannel purchase channel last year
  segment          category  randomised treatment: Mens E-Mail / Womens E-Mail / No E-Mail

Targets (3, funnel order):
  visit       int64    1 if the customer visited the website within two weeks (14.68%)
  conversion  int64    1 if the customer purchased within two weeks (0.90%, implies visit)
  spend       float64  USD spent within two weeks; > 0 exactly when conversion = 1
                       (578 positives, mean 1.05 overall, 116 among buyers, max 499)
"""


def load_hillstrom(*, return_X_y=True):
    """Load the Hillstrom e-mail campaign funnel (visit -> conversion -> spend).

    Kevin Hillstrom's "MineThatData E-Mail Analytics and Data Mining
    Challenge" (2008): 64,000 customers who bought within the last twelve
    months were randomly assigned a men's e-mail, a women's e-mail or no
    e-mail, and their behaviour in the following two weeks was recorded.
    The targets form a hybrid funnel (HTLNet §1): two nested binary stages
    followed by a zero-inflated, heavy-tailed continuous core target.

    Licence: none stated; the data were released publicly for the 2008
    challenge and are widely redistributed. The bundled copy (gzipped, in
    ``sk_htlnet/datasets/data``) matches the published statistics exactly.

    Parameters
    ----------
    return_X_y : bool, default=True
        If True, return ``(X, Y)``. If False, return a
        :class:`~sklearn.utils.Bunch`.

    Returns
    -------
    X : pandas.DataFrame of shape (64000, 9)
        Features, in this order:

        - ``recency`` (int64): months since last purchase, 1 to 12.
        - ``history_segment`` (category, 7 levels): bucket of ``history``,
          ``"1) $0 - $100"`` to ``"7) $1,000 +"``.
        - ``history`` (float64): USD spent in the past year.
        - ``mens`` (int64, 0/1): bought men's merchandise in the past year.
        - ``womens`` (int64, 0/1): bought women's merchandise in the past year.
        - ``zip_code`` (category): ``"Rural"``, ``"Surburban"`` (sic, as in
          the source) or ``"Urban"``.
        - ``newbie`` (int64, 0/1): new customer in the past twelve months.
        - ``channel`` (category): ``"Multichannel"``, ``"Phone"`` or ``"Web"``,
          the channels the customer purchased from in the past year.
        - ``segment`` (category): the randomised treatment, ``"Mens E-Mail"``,
          ``"No E-Mail"`` or ``"Womens E-Mail"``.
    Y : pandas.DataFrame of shape (64000, 3)
        Targets in funnel order:

        - ``visit`` (int64, 0/1): visited the website within two weeks;
          rate 14.68% (9,394 rows).
        - ``conversion`` (int64, 0/1): purchased within two weeks; rate
          0.90% (578 rows). ``conversion = 1`` implies ``visit = 1``.
        - ``spend`` (float64, USD): amount spent within two weeks; ``> 0``
          exactly when ``conversion = 1`` (mean 1.05 overall, about 116 among
          the 578 buyers, maximum 499).
    data : :class:`~sklearn.utils.Bunch`
        Returned instead of ``(X, Y)`` when ``return_X_y=False``, with fields
        ``data`` (X), ``target`` (Y), ``frame`` (X and Y side by side, shape
        (64000, 12)), ``feature_names``, ``target_names`` (lists of str) and
        ``DESCR`` (str).

    References
    ----------
    .. [1] K. Hillstrom, "The MineThatData E-Mail Analytics and Data Mining
       Challenge", MineThatData blog, 2008.

    Examples
    --------
    >>> from sk_htlnet.datasets import load_hillstrom
    >>> X, Y = load_hillstrom()
    >>> X.shape, list(Y.columns)
    ((64000, 9), ['visit', 'conversion', 'spend'])
    """
    source = resources.files(__package__).joinpath("data", _FILE)
    with source.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as text:
        frame = pd.read_csv(text, dtype=_DTYPES)
    frame = frame[FEATURE_NAMES + TARGET_NAMES]
    X, Y = frame[FEATURE_NAMES].copy(), frame[TARGET_NAMES].copy()
    if return_X_y:
        return X, Y
    return Bunch(
        data=X,
        target=Y,
        frame=frame,
        feature_names=list(FEATURE_NAMES),
        target_names=list(TARGET_NAMES),
        DESCR=DESCR,
    )
