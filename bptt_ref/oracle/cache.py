"""The oracle compiled once per machine: JAX's persistent compilation cache, in a place of ours.

Compiling the oracle for a bucket of shapes takes seconds; running it takes milliseconds.
JAX can keep each compiled executable on disk, keyed by the program, the JAX and XLA
versions, the flags and the device, and load it instead of compiling it again
(https://docs.jax.dev/en/latest/persistent_compilation_cache.html). ``bptt-ref check``,
``verify``, ``vectors`` and the test suite turn it on in :func:`cache_dir`; tracing and
lowering still run in every process (they make the key), only XLA's compilation is saved.

Two processes may share the directory. JAX writes an entry with a plain ``write_bytes``,
not a write-then-rename, so without a lock a process could read an entry another is
still writing; with ``jax_compilation_cache_max_size`` set, JAX takes a file lock
(``filelock``) around every read and every write of the cache and evicts the least
recently used entries beyond the size (``jax/_src/lru_cache.py``).
:func:`compilation_cache` always sets a size for that reason.

The cache is trusted: an entry is executable code, so the directory is created readable
and writable by its owner only.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["ENV", "MAX_BYTES", "cache_dir", "compilation_cache"]

ENV = "BPTT_REF_CACHE_DIR"
"""The environment variable naming the cache directory (empty: the default)."""

MAX_BYTES = 1 << 30
"""The cache's size: beyond it JAX evicts the least recently used entries, so a cache
that gains entries with every version of bptt-ref, JAX and the oracle stays bounded."""


def cache_dir() -> Path:
    """Where the compiled oracle is kept: ``$BPTT_REF_CACHE_DIR`` if set, else the
    platform's per-user cache directory, ``bptt-ref/jax`` inside it.

    That is ``$XDG_CACHE_HOME`` (when absolute, as the XDG base directory specification
    requires) or ``~/.cache`` on Linux and other Unix systems, ``~/Library/Caches`` on
    macOS and ``%LOCALAPPDATA%`` on Windows.
    """
    configured = os.environ.get(ENV)
    if configured:
        return Path(configured).expanduser()
    home = Path.home()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or home / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = home / "Library" / "Caches"
    else:
        xdg = Path(os.environ.get("XDG_CACHE_HOME", ""))
        base = xdg if xdg.is_absolute() else home / ".cache"
    return base / "bptt-ref" / "jax"


_SETTINGS = (
    "jax_enable_compilation_cache",
    "jax_compilation_cache_dir",
    "jax_compilation_cache_max_size",
    "jax_persistent_cache_min_compile_time_secs",
)


def _apply(values: dict[str, object]) -> None:
    import jax
    from jax.experimental.compilation_cache import compilation_cache as jax_cache

    for name, value in values.items():
        jax.config.update(name, value)  # type: ignore[no-untyped-call]
    # JAX opens its cache at the first compilation and decides then, once, whether a
    # cache is used; resetting makes a change take effect after earlier compilations.
    jax_cache.reset_cache()


@contextmanager
def compilation_cache(directory: str | Path | None) -> Iterator[Path | None]:
    """Inside the block, JAX compilations go through the persistent cache in ``directory``
    (``None``: no persistent cache); JAX's previous cache settings come back on leaving.

    Every compilation is kept, however fast (``jax_persistent_cache_min_compile_time_secs``
    0): on a faster machine the oracle compiles in under JAX's default threshold of 1 s
    and would otherwise never be saved. Yields the directory in use: ``None`` also where
    ``filelock`` is not installed (the ``jax`` extra installs it), since without JAX's lock
    a process can read another's half-written entry.
    """
    import jax

    saved = {name: getattr(jax.config, name) for name in _SETTINGS}
    if importlib.util.find_spec("filelock") is None:
        directory = None
    if directory is None:
        _apply({"jax_enable_compilation_cache": False})
    else:
        path = Path(directory).expanduser()
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        _apply(
            {
                "jax_enable_compilation_cache": True,
                "jax_compilation_cache_dir": str(path),
                "jax_compilation_cache_max_size": MAX_BYTES,
                "jax_persistent_cache_min_compile_time_secs": 0.0,
            }
        )
    try:
        yield None if directory is None else Path(directory).expanduser()
    finally:
        _apply(saved)
