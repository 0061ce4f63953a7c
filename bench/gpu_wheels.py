"""The wheels the GPU machine's image lacks, for bench/gpu_device.sh to carry there.

    python bench/gpu_wheels.py              # download them into .whl/ (for the device's Python 3.12)
    python bench/gpu_wheels.py --list       # only name what would be carried
    python bench/gpu_wheels.py --check      # on the GPU machine: a missing package fails, a version conflict warns
    python bench/gpu_wheels.py --image-packages   # what of the image actsweep uses (.ci/gpu_rehearsal.sh)

What is carried: every package of actsweep's dependency closure (pyproject.toml's dependencies, read
through the installed packages' metadata) that `bench/gpu_image.txt` lacks, or holds at a version a
requirement refuses, pinned to the version installed here (the one this machine's tests ran with).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
IMAGE = ROOT / "bench" / "gpu_image.txt"
TARGET_PYTHON = "3.12"  # the image's python3 (3.12.3)
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64"]


def roots() -> list[Requirement]:
    return [Requirement(r) for r in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]]


def closure(requirements: list[Requirement], python: str | None = None) -> dict[str, SpecifierSet]:
    """Every package the requirements need, transitively through the installed packages' metadata,
    with the specifiers asked of it (markers evaluated for `python`, default this interpreter's)."""
    env = {"python_version": python, "python_full_version": f"{python}.0"} if python else {}
    needed: dict[str, SpecifierSet] = {}
    seen: set[tuple[str, frozenset[str]]] = set()
    todo: list[tuple[Requirement, list[str]]] = [(r, [""]) for r in requirements]  # with the extras asked of its parent
    while todo:
        req, parent_extras = todo.pop()
        if req.marker is not None and not any(req.marker.evaluate({**env, "extra": e}) for e in parent_extras):
            continue
        name = canonicalize_name(req.name)
        needed[name] = needed.get(name, SpecifierSet()) & req.specifier
        if (name, frozenset(req.extras)) in seen:
            continue
        seen.add((name, frozenset(req.extras)))
        try:
            requires = distribution(req.name).requires or []
        except PackageNotFoundError:
            continue  # reported by `unmet`
        todo += [(Requirement(text), ["", *sorted(req.extras)]) for text in requires]
    return needed


def image_packages(text: str) -> dict[str, str | None]:
    """`gpu_image.txt`'s packages: name -> version where known."""
    packages = {}
    for line in text.splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            packages[canonicalize_name(name)] = version or None
    return packages


def to_carry(needed: dict[str, SpecifierSet], image: dict[str, str | None]) -> list[str]:
    """The needed packages the image lacks or holds at a version refused (an unknown version passes)."""
    return sorted(name for name, spec in needed.items()
                  if name not in image or (image[name] is not None and not spec.contains(image[name], prereleases=True)))


def unmet(needed: dict[str, SpecifierSet]) -> list[str]:
    """What this interpreter lacks of `needed`, or holds at a refused version."""
    problems = []
    for name, spec in sorted(needed.items()):
        try:
            have = distribution(name).version
        except PackageNotFoundError:
            problems.append(f"{name} missing")
            continue
        if not spec.contains(have, prereleases=True):
            problems.append(f"{name} {have} does not satisfy {spec}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", default=str(ROOT / ".whl"))
    parser.add_argument("--python", default=TARGET_PYTHON, help=f"the target's Python (default {TARGET_PYTHON}, the image's)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--list", action="store_true")
    mode.add_argument("--check", action="store_true")
    mode.add_argument("--image-packages", action="store_true")
    args = parser.parse_args(argv)
    if args.check:
        problems = unmet(closure(roots()))
        print("\n".join(problems) or "every requirement is met")
        return 1 if any(p.endswith(" missing") for p in problems) else 0
    needed = closure(roots(), args.python)
    names = to_carry(needed, image_packages(IMAGE.read_text()))
    if args.image_packages:  # torch aside: the rehearsal installs its CPU build first
        print("\n".join(sorted(set(needed) - set(names) - {"torch"})))
        return 0
    if "torch" in names:  # a multi-GB CUDA build is not carried: the image's torch must do
        print(f"the image's torch does not satisfy {needed['torch']}", file=sys.stderr)
    try:
        pins = [f"{name}=={distribution(name).version}" for name in names if name != "torch"]
    except PackageNotFoundError as missing:  # needed under the target's markers only: it cannot be pinned from here
        print(f"{missing.name} is needed on Python {args.python} but not installed here: install it to carry it",
              file=sys.stderr)
        return 1
    print("\n".join(pins))
    if args.list:
        return 0
    platforms = [a for p in PLATFORMS for a in ("--platform", p)]
    for pin in pins:
        got = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                              "--python-version", args.python, "--implementation", "cp", *platforms, "-d", args.dest, pin],
                             capture_output=True, text=True)
        if got.returncode:  # no wheel on the index (future 0.18.3: an sdist only): build it, if pure Python
            built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", args.dest, pin],
                                   capture_output=True, text=True)
            name = canonicalize_name(pin.split("==")[0]).replace("-", "_")
            if built.returncode or not any(Path(args.dest).glob(f"{name}-*-py3-none-any.whl")):
                print(got.stderr + built.stderr + f"no wheel of {pin} for Python {args.python}", file=sys.stderr)
                return 1
    return 0

if __name__ == "__main__":
    sys.exit(main())
