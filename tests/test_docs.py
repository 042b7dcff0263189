"""The documentation: every public name in the API reference, and the site builds with zero warnings.

The build test runs ``sphinx-build -W --keep-going`` (warnings are errors) on a copy of ``docs/`` in
a temporary folder, with the gallery in its quick mode (``SK_HTLNET_DOCS_QUICK=1``), so nothing is
written into the checkout. It needs the ``docs`` extra and is skipped without it; ``make docs``
builds the same site into ``docs/_build/html``.
"""

import importlib
import importlib.util
import inspect
import os
import pkgutil
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import sk_htlnet

DOCS = Path(__file__).resolve().parents[1] / "docs"
GENERATED = ("_build", "generated", "auto_examples", "gen_modules", "sg_execution_times.rst")
DOCS_EXTRA = ("sphinx", "numpydoc", "sphinx_gallery", "myst_parser", "pydata_sphinx_theme")


def _public_modules():
    """sk_htlnet and every submodule or subpackage whose dotted path has no private part."""
    names = ["sk_htlnet"]
    for info in pkgutil.walk_packages(sk_htlnet.__path__, prefix="sk_htlnet."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            names.append(info.name)
    return names


def _api_modules():
    """Modules listed in docs/api.rst (the autosummary entries)."""
    text = (DOCS / "api.rst").read_text()
    return set(re.findall(r"^\s+(sk_htlnet(?:\.\w+)*)\s*$", text, flags=re.M))


def _public_names(module_name):
    """A module's ``__all__``; without one, the classes and functions it defines, less private ones."""
    try:
        module = importlib.import_module(module_name)
    except ImportError:  # an optional extra is missing (sk_htlnet.tuning without optuna)
        return None
    if hasattr(module, "__all__"):
        return list(module.__all__)
    return list(_defined_names(module))


def _defined_names(module):
    """Classes and functions a module defines (not imports), less private ones."""
    return {
        name: obj for name, obj in vars(module).items()
        if not name.startswith("_") and (inspect.isclass(obj) or inspect.isfunction(obj))
        and obj.__module__ == module.__name__
    }


def test_api_reference_covers_every_public_module():
    """Every module of sk_htlnet is in docs/api.rst, or every class and function it defines is
    exported by a module that is (HTLNetRegressor, from sk_htlnet.estimator, through sk_htlnet).
    The files inside a listed package with ``__all__`` (sk_htlnet.modules.tower) are its
    implementation: the package's ``__all__`` is their public part."""
    listed = _api_modules()
    documented = set()
    for module_name in listed:
        names = _public_names(module_name)
        if names is not None:
            module = importlib.import_module(module_name)
            documented |= {id(getattr(module, name)) for name in names}
    missing = []
    for module_name in _public_modules():
        parent = module_name.rpartition(".")[0]
        if module_name in listed or (
            parent in listed and parent != "sk_htlnet" and hasattr(importlib.import_module(parent), "__all__")
        ):
            continue
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        missing += [f"{module_name}.{name}" for name, obj in _defined_names(module).items()
                    if id(obj) not in documented]
    assert not missing, (
        f"public but in no module listed in docs/api.rst: {missing}; export them from a listed "
        "module's __all__, list their module in docs/api.rst, or make them private"
    )


@pytest.mark.skipif(
    any(importlib.util.find_spec(name) is None for name in DOCS_EXTRA),
    reason="needs the docs extra: pip install -e '.[docs]'",
)
def test_docs_build_without_warnings(tmp_path):
    source = tmp_path / "docs"
    shutil.copytree(DOCS, source, ignore=shutil.ignore_patterns(*GENERATED))
    out = tmp_path / "html"
    env = {**os.environ, "SK_HTLNET_DOCS_QUICK": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(source), str(out)],
        capture_output=True, text=True, env=env, timeout=900,
    )
    assert proc.returncode == 0, f"sphinx-build failed:\n{proc.stdout[-5000:]}\n{proc.stderr[-10000:]}"

    # every public name has its page in the API reference
    missing = []
    for module_name in _api_modules():
        names = _public_names(module_name)
        if names is None:
            continue
        for name in names:
            if not (out / "generated" / f"{module_name}.{name}.html").exists():
                missing.append(f"{module_name}.{name}")
    assert not missing, f"public names without a page in the API reference: {missing}"

    # the diagrams are on their pages, and every gallery example drew at least one figure
    assert "htlnet_model.svg" in (out / "index.html").read_text()
    assert "htlnet_model.svg" in (out / "user_guide" / "model.html").read_text()
    assert "gradient_rule.svg" in (out / "user_guide" / "gradient_rule.html").read_text()
    assert (out / "_images" / "htlnet_model.svg").exists()
    examples = sorted((DOCS / "gallery").glob("plot_*.py"))
    assert examples
    for example in examples:
        page = (out / "auto_examples" / f"{example.stem}.html").read_text()
        assert f"sphx_glr_{example.stem}_001.png" in page, f"{example.name} drew no figure"


def test_serving_page_snippets_run(tmp_path, monkeypatch):
    """The Python blocks of docs/user_guide/serving.md run as written, in order, in one namespace
    (the second uses the first's model), in a temporary folder (the first writes funnel.onnx)."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    blocks = re.findall(r"^```python\n(.*?)^```", (DOCS / "user_guide" / "serving.md").read_text(),
                        flags=re.M | re.S)
    assert len(blocks) == 2
    monkeypatch.chdir(tmp_path)
    namespace = {}
    for block in blocks:
        exec(compile(block, "serving.md", "exec"), namespace)
    assert (tmp_path / "funnel.onnx").stat().st_size > 0
    assert namespace["q"].shape == (3, 3) and namespace["coverage"].shape == (3,)
