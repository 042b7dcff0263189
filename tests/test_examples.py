"""The demo script runs end to end in a quick mode, prints its table and writes its figure."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_hillstrom_demo_quick_mode(tmp_path, capsys, monkeypatch):
    pytest.importorskip("matplotlib")
    demo = _load("hillstrom_funnel")
    figures = []
    plot = demo.plot
    monkeypatch.setattr(demo, "plot", lambda *args, **kwargs: figures.append(plot(*args, **kwargs)))
    out = tmp_path / "fig.png"
    reports = demo.main(["--n-rows", "8000", "--max-iter", "3", "--quiet", "--seeds", "0", "1",
                         "--out", str(out)])
    printed = capsys.readouterr().out
    assert out.exists() and out.stat().st_size > 10_000
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert str(out.resolve()) in printed
    # one figure, of the first seed: the funnel, a calibration panel per target, the gain curve
    # with the printed Ginis in its legend, the learning curve
    (fig,) = figures
    titles = [ax.get_title() for ax in fig.axes]
    assert len(titles) == 6 and "funnel" in titles[0] and "learning curve" in titles[5]
    for title, name in zip(titles[1:4], ["visit", "conversion", "spend"]):
        assert title.startswith(f"{name}: calibration by decile")
    legend = [t.get_text() for t in fig.axes[4].get_legend().get_texts()]
    for model in ("HTLNet", "HistGB"):
        gini = reports[0].loc[(model, "spend"), "Gini"]
        assert f"{model} (normalised Gini {gini:.4f})" in legend
        auc = reports[0].loc[(model, "visit"), "AUC"]
        assert f"{model} (AUC {auc:.4f})" in [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert "every split seed" in printed and "HistGB" in printed
    htl = reports[0].loc["HTLNet"].drop(columns=["task", "seed"])
    assert list(htl.index) == ["visit", "conversion", "spend"]
    values = htl.to_numpy()
    assert np.isfinite(values[~np.isnan(values)]).all()
    assert htl.loc["visit", "AUC"] > 0.55  # visit is learnable even from 7,200 rows and 3 epochs


def test_grid_search_quick_mode(capsys):
    example = _load("grid_search")
    search = example.main(["--n-rows", "4000", "--max-iter", "2"])
    printed = capsys.readouterr().out
    assert search.refit == "spend_gini"
    results = search.cv_results_
    assert len(results["params"]) == 4
    assert {"mean_test_visit_auc", "mean_test_conversion_neg_log_loss", "mean_test_spend_neg_nrmse",
            "mean_test_spend_spearman"} <= set(results)
    assert search.best_index_ == int(np.nanargmax(results["mean_test_spend_gini"]))
    assert search.best_estimator_[-1].n_threads == 1
    assert list(search.best_estimator_[-1].target_names_) == ["visit", "conversion", "spend"]
    # the categorical columns reached the estimator as categories, not as scaled numbers
    assert (search.best_estimator_[0].transform(example.load_hillstrom()[0].head())
            .select_dtypes("category").shape[1] == 4)
    assert "Cross-validation" in printed and "relax_factor" in printed and "spend_gini" in printed
    assert f"Best parameters: {search.best_params_}" in printed
    assert "held-out test split" in printed
    for name in ("visit", "conversion", "spend"):
        assert any(line.startswith(name) for line in printed.splitlines())


def test_tune_with_optuna_quick_mode(tmp_path, capsys):
    optuna = pytest.importorskip("optuna")
    pytest.importorskip("optuna_integration")
    pytest.importorskip("matplotlib")
    example = _load("tune_with_optuna")
    result = example.main(["--n-rows", "4000", "--n-trials", "5", "--max-iter", "2",
                           "--out-dir", str(tmp_path / "plots")])
    printed = capsys.readouterr().out
    study = result["study"]
    assert len(study.trials) == 5 and study.direction == optuna.study.StudyDirection.MAXIMIZE
    states = {t.state for t in study.trials}
    assert states <= {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}
    assert all(t.intermediate_values for t in study.trials)  # the pruning callback reported
    assert f"Best trial #{study.best_trial.number}" in printed and "Best parameters:" in printed
    assert "held-out test split" in printed
    report = result["report"]
    assert list(report.index) == ["visit", "conversion", "spend"]
    assert np.isfinite(report.loc["spend", ["NRMSE", "NMAE", "Gini", "Spearman"]].astype(float)).all()
    assert [p.name for p in result["plots"]] == ["optuna_history.png", "optuna_importances.png"]
    for path in result["plots"]:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
        assert f"Saved {path}" in printed
