"""The benchmark scripts run end to end in their quick modes, so they cannot rot."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name):
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_compare_quick_mode(tmp_path):
    pytest.importorskip("matplotlib")
    compare = _load("compare")
    results = compare.main(["--quick", "--out", str(tmp_path)])
    expected = set(compare.MODELS)
    if importlib.util.find_spec("torch_rechub") is None:
        expected = {m for m in expected if not m.startswith("rechub")}
    assert set(results["model"]) == expected
    assert set(results["dataset"]) == {"hillstrom", "funnel"}
    for _, part in results.groupby("dataset"):  # each data set has its own target names
        auc = part.filter(like=":AUC").dropna(axis=1, how="all")
        assert auc.shape[1] == 2 and auc.notna().all().all() and ((auc > 0) & (auc < 1)).all().all()
    assert (results["params"] > 0).all() and (results["predict_rows_per_s"] > 0).all()
    summary = (tmp_path / "summary.md").read_text()
    assert "### hillstrom" in summary and "htlnet-no_stop_gradient" in summary
    assert (tmp_path / "gradient_norms.png").stat().st_size > 10_000
    assert len(pd.read_csv(tmp_path / "results.csv")) == len(results)


def test_speed_quick_mode(tmp_path):
    speed = _load("speed")
    table, ratios = speed.main(["--quick", "--out", str(tmp_path)])
    assert list(table.index) == [5000]
    measured = ratios.drop(columns=[c for c in ratios.columns if "rechub" in c and ratios[c].isna().all()])
    assert measured.notna().all().all()
    timings = table.filter(like="_s")  # torch-rechub's columns are NaN without it (make test-min)
    timings = timings.drop(columns=[c for c in timings.columns if "rechub" in c and timings[c].isna().all()])
    assert (timings > 0).all().all()
    assert (tmp_path / "speed_quick.csv").exists() and not (tmp_path / "speed_quick_partial.csv").exists()
    md = (tmp_path / "speed_quick.md").read_text()
    assert "| (b) htlnet rule / none | <= 1.5 | **" in md and "5,000 rows" in md
    assert md.count("\n") == len(speed.RATIOS) + 4  # header, rule, one line per ratio, two throughputs
    (tmp_path / "speed_quick.md").unlink()
    speed.main(["--quick", "--summarize", "--out", str(tmp_path)])  # rewrites the table from the csv
    assert (tmp_path / "speed_quick.md").read_text() == md


def test_chronological_split_tests_on_the_latest_rows():
    """HTLNET.md §5: where the data has dates the test tenth is the latest, whatever the seed."""
    compare = _load("compare")
    rng = np.random.default_rng(0)
    dates = np.datetime64("2000-01-01") + rng.permutation(200).astype("timedelta64[D]")
    X = pd.DataFrame({"x": np.arange(200.0)})
    Y = pd.DataFrame({"s": np.zeros(200, int), "c": np.zeros(200)})
    for seed in (0, 1):
        X_fit, X_test, _, _ = compare.split(X, Y, seed, dates)
        assert len(X_test) == 20 and len(X_fit) == 180
        assert dates[X_fit.index].max() < dates[X_test.index].min()
    assert not compare.split(X, Y, 0)[1].index.equals(compare.split(X, Y, 1)[1].index)  # no dates: random


def test_compare_paper_regime_quick_mode(tmp_path):
    """--regime paper: the core in its own units for every neural model, AutoClaim split by date, the
    claims table, and Figure 5 with the task gradients after the rule."""
    pytest.importorskip("matplotlib")
    compare = _load("compare")
    assert compare.in_regime(compare.MODELS["single_task"], "paper")["target_transform"] == "none"
    assert compare.in_regime(compare.MODELS[compare.DEFAULT], "paper") is compare.UNTUNED
    datasets = ["transfer_funnel"] + (["autoclaim"] if (compare.datasets.SHARED / "cplm_autoclaim").exists() else [])
    results = compare.main(["--regime", "paper", "--quick", "--datasets", *datasets,
                            "--models", "htlnet", "htlnet/none", "single_task", "--out", str(tmp_path)])
    assert set(results["dataset"]) == set(datasets)
    assert set(results["split"]) == ({"random", "chronological"} if len(datasets) == 2 else {"random"})
    summary = (tmp_path / "summary.md").read_text()
    assert "#### transfer_funnel: HTLNet minus each model" in summary and "| single_task | " in summary
    norms = pd.read_csv(tmp_path / "gradient_norms.csv")
    assert set(norms["panel"]) == {"with the rule, before adjustment", "with the rule, after adjustment",
                                   "without (plain sum)"}
    assert (norms["mean_norm"] > 0).all()


def test_distributed_speed_quick_mode(tmp_path):
    """One torchrun launch per process count, each rank fitting its shard; the ratios are relative
    to the 1-process launch."""
    bench = _load("distributed_speed")
    table = bench.main(["--quick", "--out", str(tmp_path)])
    assert list(table["processes"]) == [1, 2]
    assert (table[["epoch_rows_per_s", "fit_rows_per_s"]] > 0).all().all()
    assert table.loc[0, "epoch_speedup"] == 1.0 and table.loc[1, "epoch_speedup"] > 0
    md = (tmp_path / "distributed_speed_quick.md").read_text()
    assert "4,000 rows" in md and md.count("\n|") == 4  # header, rule and one line per process count
    assert not (tmp_path / "distributed_speed.md").exists()


def test_serving_quick_mode(tmp_path):
    pytest.importorskip("onnxruntime")
    serving = _load("serving")
    table = serving.main(["--quick", "--out", str(tmp_path)])
    assert len(table) == 3 and (table["calls"] == 200).all()
    assert (table[["p50_ms", "p99_ms", "batch_rows_per_s"]] > 0).all().all()
    assert (table["p99_ms"] >= table["p50_ms"]).all()
    md = (tmp_path / "serving_quick.md").read_text()
    assert "onnxruntime run (ready inputs)" in md and "largest relative difference" in md


def test_quantile_calibration_quick_mode(tmp_path):
    pytest.importorskip("matplotlib")
    bench = _load("quantile_calibration")
    results = bench.main(["--quick", "--out", str(tmp_path)])
    assert list(results["tau"]) == bench.LEVELS and set(results["dataset"]) == {"hillstrom"}
    assert results["coverage"].between(0, 1).all() and results["coverage"].is_monotonic_increasing
    # 3,000 rows is below 10 x MIN_TEST_ROWS: every row is held out once (10-fold, out of fold)
    assert (results["test_rows"] == 3000).all() and (results["split"] == "random, 10-fold out-of-fold").all()
    assert (results["sampling_half_width"] > 0).all()
    assert "| hillstrom (random, 10-fold out-of-fold) | 3,000 |" in (tmp_path / "quantile_calibration_quick.md").read_text()
    assert (tmp_path / "quantile_calibration_quick.png").stat().st_size > 10_000
