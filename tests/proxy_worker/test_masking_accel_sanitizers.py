"""The accelerator's tests once more, against a build with AddressSanitizer and
UndefinedBehaviorSanitizer (``scripts/accel-sanitizers``): an out-of-bounds read, a
use after free or undefined behaviour anywhere in the C code fails the run, even where
the normal build happens to give the right answer."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_the_accelerator_tests_pass_under_sanitizers():
    if os.environ.get("GATEHOUSE_REQUIRE_ACCEL") != "1":
        pytest.skip("runs in CI (GATEHOUSE_REQUIRE_ACCEL=1) or as scripts/accel-sanitizers")
    if shutil.which("gcc") is None:
        pytest.skip("needs gcc and its sanitizer runtimes")
    run = subprocess.run(
        [str(ROOT / "scripts" / "accel-sanitizers")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert " passed" in run.stdout
