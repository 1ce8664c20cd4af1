"""The layering rules (docs/architecture.md) hold: import-linter's contracts in pyproject.toml."""

import ast
import subprocess
import sys
from pathlib import Path

from tests.celery_worker import ROOT


def test_the_import_contracts_hold():
    exe = Path(sys.executable).parent / "lint-imports"
    out = subprocess.run([str(exe), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "8 kept, 0 broken" in out.stdout


SERVICE_PACKAGES = ("eduranker", "producer", "worker", "console")
MAX_FUNCTION_LINES = 60


def test_no_service_function_is_longer_than_a_screen():
    """A function the next engineer can read at once; tests and benchmarks read as scripts and are exempt."""
    files = [ROOT / "celeryconfig.py"] + [p for name in SERVICE_PACKAGES for p in (ROOT / name).rglob("*.py")]
    assert len(files) > 40
    too_long = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    too_long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert not too_long, too_long


def test_the_architecture_module_table_names_every_module():
    page = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    table = page[page.index("| module | holds |") :].split("\n\n", 1)[0]
    modules = [p for name in SERVICE_PACKAGES for p in (ROOT / name).rglob("*.py") if p.name != "__init__.py"]
    unnamed = [
        str(p.relative_to(ROOT))
        for p in modules
        if f"`{p.relative_to(ROOT)}`" not in table and f"`{p.name}`" not in table and f"`{p.stem}`" not in table
    ]
    assert not unnamed, unnamed
    assert "`celeryconfig.py`" in table
