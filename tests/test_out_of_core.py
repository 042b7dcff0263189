"""Training from data that never sits in memory at once: Parquet batches through ``partial_fit``."""

import pandas as pd
import pytest

from sk_htlnet import HTLNetRegressor
from sk_htlnet.datasets import make_funnel
from sk_htlnet.preprocessing import OOV_ID

from _sizes import SMALL_NET

pq = pytest.importorskip("pyarrow.parquet")

# name the categorical columns: a Parquet reader may hand integer categories back as plain ints
FAST = dict(SMALL_NET, random_state=0, n_threads=1, categorical_features=["cat_0", "cat_1", "cat_2"])
TARGETS = ["stage_1", "stage_2", "core"]


def _parquet(tmp_path, n=8000, cardinality=20):
    X, Y = make_funnel(n, n_stages=2, n_categorical=3, n_numeric=3, signal=1.5, stage_rates=0.5,
                       cardinality=cardinality, random_state=0)
    path = tmp_path / "funnel.parquet"
    pd.concat([X, Y], axis=1).to_parquet(path, row_group_size=1000)
    return path, X, Y


def test_partial_fit_over_parquet_batches_learns_like_an_in_memory_fit(tmp_path):
    path, X, Y = _parquet(tmp_path)
    file = pq.ParquetFile(path)
    # the first call fixes the vocabularies, scalers and bin edges: give it a sample of every row group
    sample = pd.concat([file.read_row_group(i).to_pandas().sample(frac=0.2, random_state=i)
                        for i in range(file.num_row_groups)])
    est = HTLNetRegressor(**FAST).partial_fit(sample.drop(columns=TARGETS), sample[TARGETS])
    scores = []
    for _ in range(6):  # epochs: one pass over the file, a batch of 1,000 rows at a time
        for batch in file.iter_batches(batch_size=1000):
            chunk = batch.to_pandas()
            est.partial_fit(chunk.drop(columns=TARGETS), chunk[TARGETS])
        scores.append(est.score(X, Y))
    assert est.feature_encoder_.categorical_mask_.sum() == 3
    assert scores[-1] > scores[0]
    in_memory = HTLNetRegressor(**FAST, max_iter=6, early_stopping=False).fit(X, Y).score(X, Y)
    assert scores[-1] > in_memory - 0.05


def test_categories_missing_from_the_first_call_go_to_the_out_of_vocabulary_row(tmp_path):
    path, X, Y = _parquet(tmp_path, n=3000, cardinality=[5000, 10, 5])
    file = pq.ParquetFile(path)
    first = file.read_row_group(0).to_pandas()
    est = HTLNetRegressor(**FAST).partial_fit(first.drop(columns=TARGETS), first[TARGETS])
    rest = pd.concat([file.read_row_group(i).to_pandas() for i in range(1, file.num_row_groups)])
    unseen = ~rest["cat_0"].isin(first["cat_0"])
    assert unseen.any()
    ids = est.feature_encoder_.transform(rest.drop(columns=TARGETS))["cat"][:, 0]
    assert (ids[unseen.to_numpy()] == OOV_ID).all()  # documented: the first call must cover the categories
