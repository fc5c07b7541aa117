"""Run a script with only what a nox session installs importable, without building its venv.

A nox session installs the package with some extras and some dependency groups; code it
runs must import nothing else. The tests session installs more, so a test that runs the
same code there cannot see a missing dependency. :func:`session_requirements` reads what
a session installs from ``noxfile.py`` and ``pyproject.toml``; :func:`distributions`
closes it over the installed distributions' metadata; :func:`run_with_only` runs a
script in a subprocess whose import system reports every other installed distribution's
top-level modules as absent, exactly as a missing module is (``ModuleNotFoundError``,
``importlib.util.find_spec`` returning None). The standard library, this tree's
``bptt_ref`` and the script's own folder stay importable.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement

import bptt_ref

if sys.version_info >= (3, 11):
    import tomllib
else:  # pytest's own TOML reader before 3.11
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PROJECT = "bptt-ref"

# Runs in the subprocess: argv[1] is the JSON list of top-level modules to hide, then the
# script and its arguments. Replacing PathFinder (rather than adding a finder that
# raises) keeps the semantics of an absent module for find_spec too, which optional
# imports such as the benchmark's torch row rely on.
_WRAPPER = """
import importlib.machinery, json, os, runpy, sys
hidden = frozenset(json.loads(sys.argv[1]))
class OnlySession(importlib.machinery.PathFinder):
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if path is None and name in hidden:
            return None
        return super().find_spec(name, path, target)
sys.meta_path[:] = [
    OnlySession if f is importlib.machinery.PathFinder else f for f in sys.meta_path
]
script = sys.argv[2]
sys.argv = sys.argv[2:]
sys.path[0] = os.path.dirname(os.path.abspath(script))
runpy.run_path(script, run_name="__main__")
"""


def _name(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", requirement).lower()


def session_requirements(session: str) -> tuple[set[str], list[str]]:
    """The project extras and dependency groups nox session ``session`` installs.

    Read from its ``session.install(".[extra,...]", *nox.project.dependency_groups(
    PYPROJECT, "group", ...))`` call in ``noxfile.py``.
    """
    tree = ast.parse((ROOT / "noxfile.py").read_text())
    (function,) = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == session]
    extras: set[str] = set()
    groups: list[str] = []
    for call in ast.walk(function):
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)):
            continue
        if call.func.attr == "install":
            for arg in call.args:
                if isinstance(arg, ast.Constant) and str(arg.value).startswith(".["):
                    extras |= set(str(arg.value)[2:-1].split(","))
        elif call.func.attr == "dependency_groups":
            groups += [str(a.value) for a in call.args[1:] if isinstance(a, ast.Constant)]
    assert extras or groups, f"found no session.install of the project in nox session {session}"
    return extras, groups


def _group(pyproject: dict[str, Any], name: str) -> list[str]:
    out: list[str] = []
    for entry in pyproject["dependency-groups"][name]:
        out += _group(pyproject, entry["include-group"]) if isinstance(entry, dict) else [entry]
    return out


def distributions(extras: Iterable[str], groups: Sequence[str]) -> set[str]:
    """Normalised names of every distribution the project with ``extras`` and ``groups``
    brings in, following the installed distributions' own requirements and extras."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    optional = pyproject["project"]["optional-dependencies"]
    found: dict[str, set[str]] = {}  # distribution -> the extras requested of it
    direct = [f"{PROJECT}[{','.join(extras)}]"]
    direct += [r for group in groups for r in _group(pyproject, group)]
    todo: list[tuple[Requirement, set[str]]] = [(Requirement(r), set()) for r in direct]
    while todo:
        requirement, wanted_by = todo.pop()
        context = wanted_by | {""}
        marker = requirement.marker
        if marker is not None and not any(marker.evaluate({"extra": e}) for e in context):
            continue
        name = _name(requirement.name)
        new = requirement.extras - found.get(name, set())
        if name in found and not new:
            continue
        found.setdefault(name, set()).update(requirement.extras)
        if name == PROJECT:
            todo += [(Requirement(r), set()) for r in pyproject["project"]["dependencies"]]
            todo += [(Requirement(r), set()) for e in new for r in optional[e]]
            continue
        try:
            requires = importlib.metadata.requires(requirement.name) or []
        except importlib.metadata.PackageNotFoundError:
            continue  # not installed here: nothing of it can be imported anyway
        todo += [(Requirement(r), found[name]) for r in requires]
    return set(found)


def hidden_modules(allowed: set[str]) -> list[str]:
    """Top-level modules of every installed distribution outside ``allowed``."""
    return sorted(
        module
        for module, owners in importlib.metadata.packages_distributions().items()
        if module != "bptt_ref" and not any(_name(d) in allowed for d in owners)
    )


def run_with_only(
    allowed: set[str], script: Path, *args: str, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    """``python script *args`` where only ``allowed`` distributions can be imported.

    ``bptt_ref`` is the one this suite imports (installed, or this tree).
    """
    package_parent = str(Path(bptt_ref.__file__).resolve().parents[1])
    return subprocess.run(
        [sys.executable, "-c", _WRAPPER, json.dumps(hidden_modules(allowed)), str(script), *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": package_parent},
    )
