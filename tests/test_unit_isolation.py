"""The fast tier stays fast: its modules (test_unit_*.py and test_parity_stats.py) import no TensorFlow or Keras.

Run it alone with `python -m pytest tests/test_unit_*.py tests/test_parity_stats.py`; none of its tests
uses a conftest fixture (check a new one with `--setup-plan`: no `trained_run`, no `fp32_exports`).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
FAST = [*sorted(p.stem for p in TESTS.glob("test_unit_*.py")), "test_parity_stats"]
HEAVY = ("tensorflow", "keras")


def test_fast_modules_import_no_tensorflow():
    """In a fresh interpreter, importing each fast module (and so the library code it tests) loads neither."""
    script = (
        f"import json, sys\nsys.path.insert(0, {str(TESTS)!r})\nheavy = {{}}\n"
        f"for name in {FAST!r}:\n    __import__(name)\n    heavy[name] = sorted(m for m in {HEAVY!r} if m in sys.modules)\n"
        "print(json.dumps(heavy))"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    heavy = json.loads(proc.stdout.splitlines()[-1])
    assert set(heavy) == set(FAST) and len(FAST) >= 4
    assert heavy == {name: [] for name in FAST}
