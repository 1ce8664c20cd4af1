"""The layering rules (README "Architecture") hold: import-linter's contracts in pyproject.toml."""

import subprocess
import sys
from pathlib import Path

from tests.celery_worker import ROOT


def test_the_import_contracts_hold():
    exe = Path(sys.executable).parent / "lint-imports"
    out = subprocess.run([str(exe), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "5 kept, 0 broken" in out.stdout
