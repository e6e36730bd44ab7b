"""ruff over the code, with the rules in pyproject.toml ([tool.ruff]): CI runs the tests, so CI runs the linter.

To see and fix findings locally: ``.venv/bin/ruff check python tests bench jobs setup.py`` (``--fix`` for the ones
ruff can fix itself).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PATHS = ["python", "tests", "bench", "jobs", "setup.py"]


def test_ruff_finds_nothing():
    assert importlib.util.find_spec("ruff") is not None, "ruff is missing: pip install -e '.[test]'"
    r = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", *PATHS],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"ruff check {' '.join(PATHS)}:\n{r.stdout}{r.stderr}"
