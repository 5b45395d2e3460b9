"""The demo and quality benchmark: F-CAM against the CAM it learns from and training-free rivals.

Staged pieces, each in its own module: :mod:`~fcam_plugin.demo.settings` (what a run does),
:mod:`~fcam_plugin.demo.data` (the synthetic splits), :mod:`~fcam_plugin.demo.classifier`,
:mod:`~fcam_plugin.demo.rivals`, :mod:`~fcam_plugin.demo.evaluation` (metrics, seed precision,
learning curves), :mod:`~fcam_plugin.demo.pipeline` (the run), :mod:`~fcam_plugin.demo.report`
and :mod:`~fcam_plugin.demo.figures`; :func:`run_demo` writes it all to a folder. Used by
``fcam demo`` and ``benchmarks/quality.py``.
"""

from __future__ import annotations

from .pipeline import ComparisonResult, run_comparison
from .run import run_demo
from .settings import PRESETS, RIVALS, SEED_METHODS, DemoSettings, preset

__all__ = ["PRESETS", "RIVALS", "SEED_METHODS", "ComparisonResult", "DemoSettings", "preset", "run_comparison", "run_demo"]
