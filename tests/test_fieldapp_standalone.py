"""``fieldapp-api`` stands on its own: its package and its generator import nothing from the
hub (``server``), the simulated city or the tools, so a phone team can take the folder alone.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
API_DIR = ROOT / "fieldapp-api"
PROJECT_PACKAGES = ("server", "simulations", "tools", "tests")

# Runs in a child: the checkout's root is taken off the path and importing a project package
# fails, then every module of dispatch_field is imported and the generator checks its files.
CHILD = f"""
import importlib, importlib.abc, pkgutil, runpy, sys
root = {str(ROOT)!r}
sys.path[:] = [p for p in sys.path if p.rstrip("/") not in (root, "")]

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {PROJECT_PACKAGES!r}:
            raise ImportError(f"fieldapp-api imported {{name}}")
        return None

sys.meta_path.insert(0, Refuse())
import dispatch_field
for module in pkgutil.iter_modules(dispatch_field.__path__):
    importlib.import_module(f"dispatch_field.{{module.name}}")
sys.argv = ["generate.py", "--check"]
runpy.run_path({str(API_DIR / "generate.py")!r}, run_name="__main__")
"""


def _imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            roots.add(node.module.split(".")[0])
    return roots


def test_no_source_file_of_fieldapp_api_imports_the_project() -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(_imported_roots(path) & set(PROJECT_PACKAGES))
        for path in API_DIR.rglob("*.py")
    }
    assert not {path: roots for path, roots in offenders.items() if roots}


def test_the_generator_runs_with_only_fieldapp_api_on_the_path() -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHILD], cwd=API_DIR, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
