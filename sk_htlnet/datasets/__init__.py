"""Funnel data sets: the bundled Hillstrom e-mail campaign and a synthetic generator."""

from ._hillstrom import load_hillstrom
from ._synthetic import make_funnel

__all__ = ["load_hillstrom", "make_funnel"]
