"""The optional C accelerator of the masking engine (``proxy_worker/masking/_accel``).

The extension is built by ``pip install`` when a C compiler and the Python headers are
present (``setup.py``, ``optional=True``); without it everything runs in pure Python
with the same results. The Python detectors are the reference: the C finders reproduce
them exactly on ASCII text, which ``tests/proxy_worker/test_masking_accel*.py`` check.

Environment:

* ``GATEHOUSE_MASKING_ACCEL=0`` turns the accelerator off (pure Python);
* ``GATEHOUSE_ACCEL_SO=/path/to/_accel.so`` loads a build from another path (for
  testing a private build).

``MODULE`` is the loaded extension module or ``None``; ``AVAILABLE`` says which.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
from types import ModuleType

__all__ = ["AVAILABLE", "MODULE"]


def _load() -> ModuleType | None:
    if os.environ.get("GATEHOUSE_MASKING_ACCEL", "1").strip().lower() in (
        "0",
        "false",
        "no",
        "off",
    ):
        return None
    path = os.environ.get("GATEHOUSE_ACCEL_SO")
    if path:
        loader = importlib.machinery.ExtensionFileLoader("proxy_worker.masking._accel", path)
        spec = importlib.util.spec_from_file_location(
            "proxy_worker.masking._accel", path, loader=loader
        )
        if spec is None:
            raise ImportError(f"cannot load the masking accelerator from {path}")
        module = importlib.util.module_from_spec(spec)
        loader.exec_module(module)
        return module
    try:
        from . import _accel
    except ImportError:
        return None
    return _accel


MODULE: ModuleType | None = _load()
AVAILABLE: bool = MODULE is not None
