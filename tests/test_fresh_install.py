"""The fresh-machine contract: every third-party import of the package is a declared dependency
(.ci/check_deps.py, which CI runs in a venv holding only those), and CI runs the README's own
commands (.ci/readme_command.py)."""

from __future__ import annotations

import importlib.metadata as metadata
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def ci_module(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / ".ci" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


check_deps = ci_module("check_deps")
readme_command = ci_module("readme_command")
REQUIRES = metadata.requires("actsweep") or []


def test_every_import_of_the_package_is_declared():
    assert check_deps.undeclared_imports(ROOT / "actsweep", REQUIRES) == []


def planted(tmp_path: Path, source: str) -> Path:
    package = tmp_path / "actsweep"
    package.mkdir()
    (package / "m.py").write_text(source)
    return package


@pytest.mark.parametrize("source, problem", [
    ("import scipy.stats\n", "imports scipy (from scipy), not declared in pyproject.toml's dependencies"),
    # a function-level import may come from an extra, but not from nowhere
    ("def f():\n    import requests.adapters\n", "imports requests (from requests), not declared in pyproject.toml's "
     "dependencies or an extra"),  # installed only as a dependency of datasets
    ("import no_such_package_xyz\n", "imports no_such_package_xyz (not installed here), not declared"),
])
def test_the_checker_finds_an_undeclared_import(tmp_path, source, problem):
    without_scipy = [r for r in REQUIRES if not r.startswith("scipy")]
    (line,) = check_deps.undeclared_imports(planted(tmp_path, source), without_scipy)
    assert problem in line


def test_an_extra_covers_a_function_level_import_only(tmp_path):
    lazy = planted(tmp_path, "def f():\n    import transformer_lens\n")
    assert check_deps.undeclared_imports(lazy, REQUIRES) == []
    (tmp_path / "actsweep" / "m.py").write_text("import transformer_lens\n")
    assert "not declared in pyproject.toml's dependencies" in check_deps.undeclared_imports(lazy, REQUIRES)[0]


def test_stdlib_and_own_imports_are_not_dependencies(tmp_path):
    package = planted(tmp_path, "import json, os.path\nfrom actsweep.errors import ConfigError\nfrom . import x\n")
    assert check_deps.undeclared_imports(package, []) == []


def test_the_ci_runs_the_readme_commands():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    main_job = readme_command.marked_command(text, "main-job")
    tests = readme_command.marked_command(text, "tests")
    assert main_job.startswith("pip install -e . && actsweep sweep configs/sweeps/quickstart.yaml")
    assert tests.startswith('pip install -e ".[test]"') and "pytest" in tests
    ci = (ROOT / ".ci" / "run").read_text()
    assert 'bash -euo pipefail -c "$(readme main-job)"' in ci and 'bash -euo pipefail -c "$(readme tests)"' in ci
    venv = (ROOT / ".ci" / "venv.sh").read_text()  # each venv of .ci/ is made by its cpu_venv
    assert "source .ci/venv.sh" in ci and 'cpu_venv "$venv"' in ci and "python3 -m venv" in venv
    assert "--system-site-packages" not in ci + venv and "python3 -m venv" not in ci


def test_a_missing_or_doubled_marker_is_an_error():
    block = "<!-- ci: x -->\n```bash\necho hi\n```\n"
    assert readme_command.marked_command(block, "x") == "echo hi"
    for text in ("no marker", block + block):
        with pytest.raises(SystemExit, match="blocks marked"):
            readme_command.marked_command(text, "x")


def test_every_module_imports_here():
    out = subprocess.run([sys.executable, str(ROOT / ".ci" / "check_deps.py")], capture_output=True, text=True)
    assert out.returncode == 0 and "0 problem(s)" in out.stdout, out.stderr
