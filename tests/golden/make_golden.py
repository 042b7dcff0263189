"""Record, or check, the golden predictions of the seeded fits of ``cases.py`` (issue 15).

    python tests/golden/make_golden.py           # (re)writes tests/golden/predictions.npz
    python tests/golden/make_golden.py --check   # recomputes; exit code 1 unless all bit-identical
    python tests/golden/make_golden.py --check --file /tmp/other.npz

``predictions.npz`` holds one float64 array per case (the ``predict`` output on the case's
:data:`cases.N_PREDICT` held-out rows) and, under ``__meta__``, a JSON string with the torch, numpy,
scikit-learn, skorch and Python versions, the CPU capability torch dispatched to, the platform, and
the case definitions as recorded.

``--check`` is the exact gate of the redesign: on the machine (and versions) that recorded the file,
every case must be bit-identical; where a change is deliberate, the issue's note says which cases
moved and why, and the file is re-recorded.  It prints, per case, the max absolute and the max
relative difference and whether the arrays are bit-identical (``np.array_equal`` and same shape),
and flags a case whose definition differs from the recorded one.  ``tests/test_golden.py`` compares
with a tolerance instead, because float32 kernels differ across CPUs (AVX2 vs AVX-512) and library
versions; see its docstring for the measured spread.

Everything runs single-threaded (``OMP_NUM_THREADS=1`` before torch is imported, and
``n_threads=1`` in every case), like the test suite.
"""

import argparse
import importlib.util
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
DEFAULT_FILE = HERE / "predictions.npz"
META_KEY = "__meta__"


def _load_cases_module():
    spec = importlib.util.spec_from_file_location("_sk_htlnet_golden_cases", HERE / "cases.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


cases_module = _load_cases_module()
CASES = cases_module.CASES


def _jsonable(case):
    """The case as JSON (tuples become lists), for the metadata and the definition check."""
    return json.loads(json.dumps(case))


def make_data(data_spec):
    """Training X, y, sample_weight and the predicted rows X_pred of a case's data spec."""
    from sk_htlnet.datasets import make_funnel

    spec = {**cases_module.BASE_DATA, **data_spec}
    n, k, seed = spec["n"], spec["k"], spec["seed"]
    X, Y = make_funnel(
        n + cases_module.N_PREDICT, n_stages=k, n_categorical=spec["n_categorical"],
        n_numeric=spec["n_numeric"], cardinality=spec["cardinality"],
        missing_rate=spec.get("missing_rate", 0.0), random_state=seed,
    )
    X_train, X_pred = X.iloc[:n], X.iloc[n:]
    Y = Y.iloc[:n].copy()
    if spec.get("core_shift"):
        Y["core"] = Y["core"] + spec["core_shift"]
    if spec.get("missing_labels"):
        Y = Y.astype(float)
        rng = np.random.default_rng(seed + 1)
        for col in dict.fromkeys([Y.columns[max(k - 1, 0)], "core"]):  # ordered: the draws are seeded
            Y.loc[rng.random(n) < spec["missing_labels"], col] = np.nan
    if spec.get("skipped_stages"):  # rows that pass stage 2 without stage 1 (a funnel out of order)
        rows = np.random.default_rng(seed + 3).choice(n, spec["skipped_stages"], replace=False)
        Y.iloc[rows, 0], Y.iloc[rows, 1] = 0, 1
    sample_weight = None
    if spec.get("sample_weight"):
        sample_weight = np.random.default_rng(seed + 2).uniform(0.5, 2.0, n)
    y = Y["core"] if spec.get("y_1d") else Y
    return X_train, y, sample_weight, X_pred


def run_case(case):
    """Fit the case's estimator and return its float64 predictions on the predicted rows."""
    import torch

    from sk_htlnet import HTLNetRegressor

    X, y, w, X_pred = make_data(case["data"])
    est = HTLNetRegressor(**{**cases_module.BASE_PARAMS, **case["params"]})
    # a guard: no fit should read torch's global generator (dropout has the net's own state); seed
    # it per case anyway, and leave the caller's generator as it was
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return _fit_predict(case, est, X, y, w, X_pred)


def _fit_predict(case, est, X, y, w, X_pred):
    from sk_htlnet.io import load_model, save_model

    mode = case["mode"]
    if mode == "fit":
        est.fit(X, y, sample_weight=w)
    elif mode == "partial_fit":
        half = len(X) // 2
        for part in (slice(0, half), slice(half, len(X))):
            est.partial_fit(X.iloc[part], y.iloc[part], sample_weight=None if w is None else w[part])
    elif mode == "save_load":
        est.fit(X, y, sample_weight=w)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.htlnet"
            save_model(est, path)
            est = load_model(path)
    else:
        raise ValueError(f"unknown mode {mode!r} in case {case['name']!r}")
    return np.asarray(est.predict(X_pred), dtype=np.float64)


def metadata():
    import sklearn
    import skorch
    import torch

    return dict(
        torch=torch.__version__, numpy=np.__version__, sklearn=sklearn.__version__,
        skorch=skorch.__version__, python=platform.python_version(), platform=platform.platform(),
        machine=platform.machine(), torch_cpu_capability=torch.backends.cpu.get_cpu_capability(),
        omp_num_threads=os.environ.get("OMP_NUM_THREADS"),
        cases=[_jsonable(c) for c in CASES],
    )


def load_golden(path=DEFAULT_FILE):
    """``(arrays by case name, metadata dict)`` of a recorded file."""
    with np.load(path, allow_pickle=False) as f:
        arrays = {key: f[key] for key in f.files if key != META_KEY}
        meta = json.loads(str(f[META_KEY])) if META_KEY in f.files else {}
    return arrays, meta


def differences(got, want):
    """``(bit_identical, max_abs, max_rel)``; the relative difference is over ``max(|want|, tiny)``."""
    if got.shape != want.shape:
        return False, np.inf, np.inf
    identical = bool(np.array_equal(got, want, equal_nan=True))
    diff = np.abs(got - want)
    diff[np.isnan(got) & np.isnan(want)] = 0.0
    rel = diff / np.maximum(np.abs(want), np.finfo(np.float64).tiny)
    return identical, float(diff.max(initial=0.0)), float(rel.max(initial=0.0))


def record(path):
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    arrays, start = {}, time.perf_counter()
    for case in CASES:
        t = time.perf_counter()
        arrays[case["name"]] = run_case(case)
        print(f"{case['name']:45s} {str(arrays[case['name']].shape):10s} {time.perf_counter() - t:6.2f} s")
    arrays[META_KEY] = np.array(json.dumps(metadata()))
    np.savez_compressed(path, **arrays)
    print(f"wrote {path} ({Path(path).stat().st_size:,} bytes, {len(CASES)} cases, "
          f"{time.perf_counter() - start:.1f} s)")
    return 0


def check(path):
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    arrays, meta = load_golden(path)
    recorded_cases = {c["name"]: c for c in meta.get("cases", [])}
    now = metadata()
    for key in ("torch", "numpy", "sklearn", "skorch", "python", "torch_cpu_capability"):
        if meta.get(key) != now[key]:
            print(f"note: {key} is {now[key]}, the file was recorded with {meta.get(key)}")
    failed, start = [], time.perf_counter()
    print(f"{'case':45s} {'max abs diff':>12s} {'max rel diff':>12s}  bit-identical")
    for case in CASES:
        name = case["name"]
        if name not in arrays:
            print(f"{name:45s} {'-':>12s} {'-':>12s}  MISSING from {path}")
            failed.append(name)
            continue
        identical, max_abs, max_rel = differences(run_case(case), arrays[name])
        changed = name in recorded_cases and recorded_cases[name] != _jsonable(case)
        flag = "yes" if identical else "NO"
        print(f"{name:45s} {max_abs:12.3e} {max_rel:12.3e}  {flag}"
              + ("  (case definition changed since recording)" if changed else ""))
        if not identical:
            failed.append(name)
    extra = sorted(set(arrays) - {c["name"] for c in CASES})
    if extra:
        print(f"note: recorded cases no longer defined: {extra}")
    print(f"{len(CASES) - len(failed)}/{len(CASES)} cases bit-identical "
          f"({time.perf_counter() - start:.1f} s)")
    if failed:
        print("not bit-identical: " + ", ".join(failed))
    return 1 if failed else 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="recompute and compare instead of writing")
    parser.add_argument("--file", default=str(DEFAULT_FILE), help="the golden file (default: %(default)s)")
    args = parser.parse_args(argv)
    return check(args.file) if args.check else record(args.file)


if __name__ == "__main__":
    sys.exit(main())
