"""Every third-party import of `actsweep/` is a declared dependency, and every module imports.

Run in a virtual environment that holds only what `pip install -e .` installed (CI does, before the
test extras arrive): a package that is used but arrives only through another package's
dependencies, or was installed by hand, fails here instead of on a user's machine.

    python .ci/check_deps.py            # both checks; exit 1 with one line per problem

An import at module level must be a core dependency (the package cannot import without it); one
inside a function may instead come from an extra (e.g. `transformer_lens`, extra `interp`).
"""

from __future__ import annotations

import ast
import importlib
import importlib.metadata as metadata
import pkgutil
import re
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "actsweep"


def normalized(name: str) -> str:
    """PEP 503's name: `Huggingface_Hub` and `huggingface-hub` are one distribution."""
    return re.sub(r"[-_.]+", "-", name).lower()


def declared(requirements: list[str]) -> tuple[set[str], set[str]]:
    """(core, extras) distribution names of `importlib.metadata.requires` lines."""
    core, extras = set(), set()
    for line in requirements:
        name = normalized(re.match(r"[A-Za-z0-9_.-]+", line).group())
        (extras if "extra ==" in line else core).add(name)
    return core, extras


def third_party_imports(path: Path) -> dict[str, bool]:
    """Top-level names of the file's non-stdlib, non-actsweep imports -> imported at module level."""
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    found: dict[str, bool] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in (n.split(".")[0] for n in names):
            if name != "actsweep" and name not in sys.stdlib_module_names and name != "__future__":
                found[name] = found.get(name, False) or id(node) in top
    return found


def undeclared_imports(package: Path, requirements: list[str]) -> list[str]:
    """One line per import whose distribution is not declared where it has to be."""
    core, extras = declared(requirements)
    owners = metadata.packages_distributions()
    problems = []
    for path in sorted(package.rglob("*.py")):
        for name, module_level in third_party_imports(path).items():
            # An extra's package may be absent here: then its import name stands for its distribution.
            installed = {normalized(d) for d in owners.get(name, [])}
            dists = installed or {normalized(name)}
            allowed = core if module_level else core | extras
            if not dists & allowed:
                where = "dependencies" if module_level else "dependencies or an extra"
                source = f"from {', '.join(sorted(installed))}" if installed else "not installed here"
                problems.append(f"{path.relative_to(package.parent)}: imports {name} ({source}), "
                                f"not declared in pyproject.toml's {where}")
    return problems


def unimportable_modules(package: Path) -> list[str]:
    """One line per module of the package that fails to import in this environment."""
    problems = []
    for info in pkgutil.walk_packages([str(package)], prefix=f"{package.name}."):
        try:
            importlib.import_module(info.name)
        except Exception as err:  # any failure is the finding
            problems.append(f"{info.name}: {type(err).__name__}: {err}")
    return problems


def main() -> int:
    problems = undeclared_imports(PACKAGE, metadata.requires("actsweep") or [])
    problems += unimportable_modules(PACKAGE)
    for line in problems:
        print(f"check_deps: {line}", file=sys.stderr)
    count = sum(1 for _ in PACKAGE.rglob("*.py"))
    print(f"check_deps: {count} files, {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
