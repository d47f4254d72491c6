"""bench/queue.py (issue 14's name) would shadow the standard library's ``queue`` for every ``python bench/X.py``:
each script must import bench/_stdlib_first before anything else."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
SCRIPTS = sorted(p for p in BENCH.glob("*.py") if not p.name.startswith("_"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_first_import_keeps_the_standard_library_first(script):
    imports = [n for n in ast.parse(script.read_text()).body if isinstance(n, (ast.Import, ast.ImportFrom))]
    imports = [n for n in imports if not (isinstance(n, ast.ImportFrom) and n.module == "__future__")]
    assert isinstance(imports[0], ast.Import) and imports[0].names[0].name == "_stdlib_first", script.name


def test_a_bench_script_imports_grpc_beside_bench_queue():
    done = subprocess.run([sys.executable, str(BENCH / "serving.py"), "--help"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
