"""Sessions for bptt-ref; ``nox -l`` lists them with these docstrings."""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["lint", "typecheck", "tests"]

PYPROJECT = nox.project.load_toml("pyproject.toml")


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite against the installed package (pass pytest options after --).

    HYPOTHESIS_PROFILE picks the Hypothesis profile: dev (default), ci or thorough.
    """
    session.install(".[cli,plot]", *nox.project.dependency_groups(PYPROJECT, "test"))
    session.run("pytest", *session.posargs)


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
