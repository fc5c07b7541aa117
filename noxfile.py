"""Sessions for bptt-ref; ``nox -l`` lists them with these docstrings."""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["lint", "typecheck", "tests"]

PYPROJECT = nox.project.load_toml("pyproject.toml")


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite against the installed package (pass pytest options after --).

    HYPOTHESIS_PROFILE picks the Hypothesis profile: dev (default), ci or thorough. The
    suite is CPU-bound, so it runs on every core through pytest-xdist (``-- -n 0`` for
    one process); each worker limits BLAS and XLA to one thread (tests/conftest.py).
    """
    session.install(".[cli,plot]", *nox.project.dependency_groups(PYPROJECT, "test"))
    session.run("pytest", "-n", "auto", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Check style and formatting with ruff."""
    session.install(*nox.project.dependency_groups(PYPROJECT, "lint"))
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """Type-check the package, the tests and this file with mypy (strict)."""
    session.install(".[cli,plot]", *nox.project.dependency_groups(PYPROJECT, "typecheck"))
    session.run("mypy", *session.posargs)


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """Time the gradient against JAX and the BLAS floor (options after --; see --help).

    ``nox -s bench -- --smoke`` runs one tiny size in seconds. A full run writes its
    table, JSON and plots to benchmarks/results/. PyTorch gets a row when it is
    installed in the session (``session.install`` it by hand; it is not a dependency).
    """
    session.install(".[jax,plot]", *nox.project.dependency_groups(PYPROJECT, "bench"))
    session.run("python", "benchmarks/bench_bptt.py", *session.posargs)


@nox.session(default=False)
def mutation(session: nox.Session) -> None:
    """Mutation-test the gradient code (forward, BPTT, note's form, truncation) with mutmut.

    Runs without JAX (why: [tool.mutmut] in pyproject.toml) and lists the survivors.
    """
    session.install("numpy", *nox.project.dependency_groups(PYPROJECT, "mutation"))
    # One BLAS thread: mutmut forks a process per mutant.
    env = {"OPENBLAS_NUM_THREADS": "1"}
    session.run("mutmut", "run", *session.posargs, env=env, success_codes=[0, 1])
    session.run("mutmut", "results", env=env)


@nox.session(default=False)
def build(session: nox.Session) -> None:
    """Build the sdist and wheel into dist/ and try them as a user and a packager would.

    twine checks the metadata (and that the README renders on the package index). The
    wheel goes into a fresh virtual environment with the ``cli`` extra, where
    ``bptt-ref --version`` and a short ``bptt-ref check`` of a correct gradient
    (tests/planted/batched.py) run. Then, with the test tools added there, pytest
    collects the sdist's whole suite and runs its tests that read files beyond the
    package (noxfile.py, pyproject.toml, benchmarks/, README.md, .ci/run) against the
    installed wheel.
    """
    session.install("build", "twine")
    dist = Path("dist").resolve()
    shutil.rmtree(dist, ignore_errors=True)
    session.run("python", "-m", "build", "--outdir", str(dist))
    (sdist,) = dist.glob("*.tar.gz")
    (wheel,) = dist.glob("*.whl")
    session.run("twine", "check", "--strict", str(sdist), str(wheel))

    tmp = Path(session.create_tmp()).resolve()
    clean = tmp / "clean-venv"
    shutil.rmtree(clean, ignore_errors=True)
    session.run("python", "-m", "venv", str(clean))
    python = str(clean / "bin" / "python")
    session.run(python, "-m", "pip", "install", f"{wheel}[cli]", external=True)
    version = session.run(str(clean / "bin" / "bptt-ref"), "--version", silent=True, external=True)
    if str(version).split() != ["bptt-ref", wheel.name.split("-")[1]]:
        session.error(f"bptt-ref --version printed {version!r} for {wheel.name}")

    unpacked = tmp / "sdist"
    shutil.rmtree(unpacked, ignore_errors=True)
    with tarfile.open(sdist) as archive:
        archive.extractall(unpacked, filter="data")
    (root,) = unpacked.iterdir()
    # Run from outside the unpacked tree, so the installed wheel is what is imported.
    session.chdir(tmp)
    session.run(
        str(clean / "bin" / "bptt-ref"),
        "check",
        f"{root / 'tests' / 'planted' / 'batched.py'}:grad",
        "--examples",
        "20",
        external=True,
    )
    session.run(
        python,
        "-m",
        "pip",
        "install",
        f"{wheel}[cli,plot]",
        *nox.project.dependency_groups(PYPROJECT, "test"),
        external=True,
    )
    session.chdir(root)
    pytest = str(clean / "bin" / "pytest")
    session.run(pytest, "--collect-only", "-q", external=True)
    session.run(
        pytest,
        "tests/test_bench_smoke.py",
        "tests/test_packaging.py",
        "tests/test_readme_commands.py",
        "-p",
        "no:cacheprovider",
        external=True,
    )
