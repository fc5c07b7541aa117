"""Shared test configuration: Hypothesis profiles, strict JAX, one BLAS thread per xdist
worker, the persistent compilation cache."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from bptt_ref.oracle import cache

# Several xdist workers, each with a multi-threaded BLAS and XLA, oversubscribe two
# cores and make the small sequential matrix products orders of magnitude slower.
# XLA reads its flags when it starts, so they are set before anything imports jax.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault(
        "XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    )
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    threadpool_limits(limits=1)

try:
    import jax
except ImportError:
    # The mutation session (nox -s mutation) runs the JAX-free tests in an environment
    # without JAX: its mutants run in forked processes, which deadlock once XLA's
    # thread pool exists.
    pass
else:
    # The oracle turns x64 on for itself; strict promotion makes a silent broadcast or an
    # accidental float32 round-trip in it an error instead of a quiet wrong answer.
    jax.config.update("jax_numpy_rank_promotion", "raise")  # type: ignore[no-untyped-call]
    jax.config.update("jax_numpy_dtype_promotion", "strict")  # type: ignore[no-untyped-call]


@pytest.fixture(scope="session", autouse=True)
def compilation_cache() -> Iterator[None]:
    """Every worker compiles through the cache the commands use (``bptt_ref.oracle.cache``).

    In the user's cache directory rather than the clone: a fresh clone on a machine that
    ran the suite or ``bptt-ref`` before starts warm, and the commands the suite runs in
    subprocesses find it too. The xdist workers share it (JAX locks each read and write),
    so a bucket one worker compiled the other loads. ``BPTT_REF_CACHE_DIR`` moves it.
    """
    if importlib.util.find_spec("jax") is None:  # nox -s mutation: nothing compiles
        yield
        return
    with cache.compilation_cache(cache.cache_dir()):
        yield


settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    print_blob=True,
    max_examples=4000,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=200, deadline=None)
settings.register_profile(
    "thorough", max_examples=20_000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))
