"""The oracle compiled once per machine: JAX's persistent compilation cache, in a place of ours.

Compiling the oracle for a bucket of shapes takes seconds; running it takes milliseconds.
JAX can keep each compiled executable on disk, keyed by the program, the JAX and XLA
versions, the flags and the device, and load it instead of compiling it again
(https://docs.jax.dev/en/latest/persistent_compilation_cache.html). ``bptt-ref check``,
``verify``, ``vectors`` and the test suite turn it on in :func:`cache_dir`; tracing and
lowering still run in every process (they make JAX's key), only XLA's compilation is saved.

Tracing and lowering the oracle cost a warm process more than the cases it judges (about
0.6 s a bucket here; see the README), so :func:`stored` also keeps each compiled oracle
as a serialized executable beside JAX's entries and loads it without tracing. Its key is
what tracing reads: the source of every bptt_ref module, the JAX and jaxlib versions,
the device, the host CPU's features, ``XLA_FLAGS``, the JAX settings that change a
program, and the shapes and dtypes of the arguments. They share the cache's size: past
half of :data:`MAX_BYTES`, the least recently used are deleted, so the entries of older
sources go first. An entry that does not load is compiled again.

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

import hashlib
import importlib.metadata
import importlib.util
import os
import pickle
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

__all__ = ["ENV", "LOAD_EVENT", "MAX_BYTES", "cache_dir", "compilation_cache", "stored"]

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


LOAD_EVENT = "/bptt_ref/oracle/load_executable_duration"
"""The ``jax.monitoring`` duration event of loading a stored executable: the part of a
warm process's time that stands where compiling would (see :mod:`compile_clock`)."""

_LOADED: dict[tuple[Any, ...], Any] = {}


def stored(name: str, jitted: Callable[..., Any]) -> Callable[..., Any]:
    """``jitted`` (a ``jax.jit`` function named ``name``, unique per program) that, while a
    :func:`compilation_cache` is on, loads its executable for the arguments' shapes from
    the cache directory instead of tracing it, and stores it there after compiling it.
    Without a cache it is ``jitted`` itself."""

    def call(*args: Any) -> Any:
        directory = _store()
        if directory is None:
            return jitted(*args)
        # Every case calls this: the digest of the program, hashed text, is taken only
        # when the process has not loaded the program yet.
        program = _program(name, args)
        compiled = _LOADED.get(program)
        if compiled is None:
            key = _key(program)
            compiled = _load(directory / key)
            if compiled is None:
                # An executable JAX read back from its own cache serializes without some
                # of its code (its load fails with "Function ... not found", jaxlib 0.10.2),
                # so the one stored is compiled afresh.
                with compilation_cache(None):
                    compiled = jitted.lower(*args).compile()  # type: ignore[attr-defined]
                _save(compiled, directory, key)
            _LOADED[program] = compiled
        return compiled(*args)

    return call


def _store() -> Path | None:
    import jax

    enabled, directory = (getattr(jax.config, name) for name in _SETTINGS[:2])
    if not enabled or not directory:
        return None
    return Path(directory) / "executables" / _source_digest()


@cache
def _source_digest() -> str:
    """A digest of every module of the installed bptt_ref: the code a trace runs."""
    digest = hashlib.sha256()
    root = Path(__file__).resolve().parent.parent
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:32]


@cache
def _machine() -> str:
    """The JAX, jaxlib and device the executables are built for, and the host CPU's
    features, which XLA's CPU code generation targets."""
    import jax

    flags = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        flags = next((ln for ln in cpuinfo.read_text().splitlines() if ln.startswith("flags")), "")
    device = jax.devices()[0]
    return repr(
        (
            jax.__version__,
            importlib.metadata.version("jaxlib"),
            device.platform,
            device.device_kind,
            device.client.platform_version,
            platform.machine(),
            hashlib.sha256(flags.encode()).hexdigest(),
        )
    )


def _program(name: str, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """What a trace of ``name`` on ``args`` depends on in this process: the JAX settings
    that change a program, the arguments' tree, and their types, shapes and dtypes."""
    import jax
    import numpy as np

    leaves, tree = jax.tree_util.tree_flatten(args)
    settings = tuple(
        getattr(jax.config, option)
        for option in (
            "jax_enable_x64",
            "jax_default_matmul_precision",
            "jax_numpy_dtype_promotion",
            "jax_numpy_rank_promotion",
            "jax_default_prng_impl",
        )
    )
    shapes = tuple((type(x).__name__, np.shape(x), str(getattr(x, "dtype", ""))) for x in leaves)
    return name, settings, tree, shapes


def _key(program: tuple[Any, ...]) -> str:
    """The file name of ``program``'s entry: it, the machine and ``XLA_FLAGS``, hashed."""
    name, settings, tree, shapes = program
    text = repr((name, _machine(), os.environ.get("XLA_FLAGS", ""), settings, str(tree), shapes))
    return hashlib.sha256(text.encode()).hexdigest()[:40]


def _load(path: Path) -> Any:
    import jax
    from jax.experimental import serialize_executable

    try:
        started = time.perf_counter()
        blob, in_tree, out_tree = pickle.loads(path.read_bytes())
        compiled = serialize_executable.deserialize_and_load(blob, in_tree, out_tree)
        os.utime(path)  # used now: the last to be evicted
    # No entry yet, one cut short by a full disk, or one another jaxlib wrote: compile anew.
    except Exception:
        return None
    jax.monitoring.record_event_duration_secs(LOAD_EVENT, time.perf_counter() - started)
    return compiled


def _save(compiled: Any, directory: Path, key: str) -> None:
    from jax.experimental import serialize_executable

    try:
        blob = pickle.dumps(serialize_executable.serialize(compiled))
    # A backend that cannot serialize its executables: keep JAX's cache alone.
    except (ValueError, NotImplementedError):
        return
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    # Written aside and renamed: a reader sees a whole entry or none. A write that fails
    # (a full disk, another process clearing an older source's entries) costs a later
    # process the tracing, nothing else.
    try:
        with tempfile.NamedTemporaryFile(dir=directory, delete=False) as out:
            out.write(blob)
        os.replace(out.name, directory / key)
        _evict(directory.parent, MAX_BYTES // 2)
    except OSError:
        return


def _evict(root: Path, limit: int) -> None:
    """Delete the least recently used entries under ``root`` until they hold ``limit`` bytes."""
    stats = [(p.stat(), p) for p in root.glob("*/*") if p.is_file()]
    total = sum(stat.st_size for stat, _ in stats)
    for stat, path in sorted(stats, key=lambda entry: entry[0].st_mtime):
        if total <= limit:
            break
        path.unlink(missing_ok=True)
        total -= stat.st_size
