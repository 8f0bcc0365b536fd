"""Imports on first use, to keep ``train.py --help`` and a run's start-up off what a command does not need.

``timm`` imports torchvision, whose model zoo imports ``torch._dynamo`` and sympy, and timm's utilities import W&B:
seconds of start-up that a text-only run, ``--help`` or a config error never use. ``timm = LazyModule("timm")``
imports timm at the first attribute access (``timm.create_model``, ``timm.data...``) and is the module from then on.
Importing this module also imports torchmetrics without the integrations the project never uses
(``lean_torchmetrics``): train.py imports it before Lightning.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import os
import sys
from typing import Any


class LazyModule:
    """A stand-in for ``import <name>`` that imports the module when an attribute is first read."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        return getattr(importlib.import_module(self._name), attr)

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}>"


# torchmetrics' optional integrations that this project never uses. ``import lightning`` imports torchmetrics, whose
# ``functional`` package imports torchvision's model zoo (torch._dynamo, sympy and triton with it) for image-quality
# metrics, transformers for BERTScore, matplotlib for plots and scipy.signal: ~40 % of train.py's import time.
# With these flags off torchmetrics skips them; its classification/aggregation metrics (the ones the study's
# metrics build on) do not read them.
TORCHMETRICS_OFF = (
    "_TORCHVISION_AVAILABLE",
    "_TRANSFORMERS_AVAILABLE",
    "_TRANSFORMERS_GREATER_EQUAL_4_4",
    "_TRANSFORMERS_GREATER_EQUAL_4_10",
    "_MATPLOTLIB_AVAILABLE",
    "_SCIPY_AVAILABLE",
    "_SCIPY_GREATER_EQUAL_1_8",
    "_SCIPI_AVAILABLE",
)


class _TorchmetricsFlags(importlib.abc.MetaPathFinder):
    """Sets ``TORCHMETRICS_OFF`` unavailable right after ``torchmetrics.utilities.imports`` runs, before the modules
    that read them are imported (a ``RequirementCache`` keeps the ``available`` it has)."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != "torchmetrics.utilities.imports":
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module

        def exec_module(module: Any) -> None:
            run(module)
            for name in TORCHMETRICS_OFF:
                if hasattr(module, name):
                    getattr(module, name).available = False

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def lean_torchmetrics() -> bool:
    """Import torchmetrics without its unused heavy integrations (``TORCHMETRICS_OFF``; its ``__init__``'s
    ``import scipy.signal`` too). Call before anything imports ``lightning``; a no-op once torchmetrics is imported
    (then it returns False). ``MMSTILTS_LEAN_IMPORTS=0`` turns it off."""
    if "torchmetrics" in sys.modules or os.environ.get("MMSTILTS_LEAN_IMPORTS", "1") == "0":
        return False
    import lightning_utilities.core.imports as lu

    available = lu.package_available
    lu.package_available = lambda name: False if name == "scipy" else available(name)  # read by torchmetrics' init
    finder = _TorchmetricsFlags()
    sys.meta_path.insert(0, finder)
    try:
        import torchmetrics  # noqa: F401
    finally:
        lu.package_available = available
        sys.meta_path.remove(finder)
    return True


lean_torchmetrics()  # train.py imports this module first
