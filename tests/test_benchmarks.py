"""The benchmark scripts run end to end in their quick modes, so they cannot rot."""

import importlib.util
import sys
from pathlib import Path

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
