"""Sphinx configuration of the sk_htlnet documentation.

Build (warnings are errors, as in CI)::

    SK_HTLNET_DOCS_QUICK=1 sphinx-build -W --keep-going -b html docs docs/_build/html

``make docs`` does exactly this.  The markdown pages (``docs/*.md``) are read as they are by
myst-parser; the API reference is generated from the numpydoc docstrings by autosummary; the
examples in ``docs/gallery/`` are executed by sphinx-gallery at every build, in a quick mode
(a subsample and one or two epochs) when the environment variable ``SK_HTLNET_DOCS_QUICK=1`` is
set.  No page needs the network at build time (no intersphinx).
"""

import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent))  # the checkout's sk_htlnet, installed or not

# The examples run in this process. One torch thread: with two, a fit slows down by an order of
# magnitude as soon as anything else wants a core (OpenMP threads spin), and the printed numbers
# would depend on the machine's core count. OMP_NUM_THREADS, if set, wins.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

import sk_htlnet  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

# Read by every gallery example: a small subsample and one or two epochs (the CI build).
QUICK = os.environ.get("SK_HTLNET_DOCS_QUICK", "0") == "1"

# -- Project ---------------------------------------------------------------------------------------
project = "sk_htlnet"
author = "sk_htlnet developers"
copyright = "sk_htlnet developers, BSD-3-Clause"
release = sk_htlnet.__version__
version = release

# -- General ---------------------------------------------------------------------------------------
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
templates_path = ["_templates"]
exclude_patterns = ["_build", "_scripts", "gallery"]  # gallery/: sphinx-gallery's sources
default_role = "obj"

# -- myst-parser: docs/*.md as they are ------------------------------------------------------------
myst_enable_extensions = ["colon_fence", "dollarmath"]
myst_heading_anchors = 3  # [text](method.md#retransformation) links to a section

# -- autodoc / autosummary / numpydoc -------------------------------------------------------------
autosummary_generate = True
autosummary_imported_members = False
autosummary_ignore_module_all = False  # a module's __all__ is its list of public names
autodoc_default_options = {"members": True, "member-order": "bysource"}
autodoc_typehints = "none"  # the numpydoc docstrings state the types
numpydoc_show_class_members = False  # members are listed by the autosummary templates
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

# -- sphinx-gallery --------------------------------------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": ["gallery"],
    "gallery_dirs": ["auto_examples"],
    "filename_pattern": r"/plot_",  # execute every plot_*.py
    "ignore_pattern": r"__init__\.py",
    "abort_on_example_error": True,
    "plot_gallery": "True",
    "within_subsection_order": "FileNameSortKey",
    "backreferences_dir": "gen_modules/backreferences",
    "doc_module": ("sk_htlnet",),
    "remove_config_comments": True,
    "download_all_examples": False,
    "show_memory": False,
    "min_reported_time": 0,
    "reset_modules": ("matplotlib",),
}

# -- HTML ------------------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"sk_htlnet {release}"
html_static_path = ["_static"]
html_css_files = ["custom.css"]
html_theme_options = {
    "navigation_with_keys": False,
    "show_prev_next": True,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
html_show_sourcelink = False
html_context = {"default_mode": "light"}

if QUICK:
    print("sk_htlnet docs: quick mode (SK_HTLNET_DOCS_QUICK=1): gallery examples run on subsamples")
