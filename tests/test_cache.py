"""The persistent compilation cache: where it lives, that a compilation is saved and
loaded through it, that JAX's settings come back, and that two commands share it; the
stored executables: loaded without tracing, one per program and shapes, and compiled
again where an entry does not load."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from bptt_ref.oracle import cache

TESTS = Path(__file__).parent
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS.parent), str(TESTS)])}


@pytest.mark.parametrize(
    ("platform", "variables", "expected"),
    [
        ("linux", {"XDG_CACHE_HOME": "/xdg"}, "/xdg/bptt-ref/jax"),
        # The XDG specification: a relative path is invalid and is ignored.
        ("linux", {"XDG_CACHE_HOME": "relative"}, "/home/u/.cache/bptt-ref/jax"),
        ("linux", {}, "/home/u/.cache/bptt-ref/jax"),
        ("darwin", {"XDG_CACHE_HOME": "/xdg"}, "/home/u/Library/Caches/bptt-ref/jax"),
        ("win32", {"LOCALAPPDATA": "/appdata"}, "/appdata/bptt-ref/jax"),
        ("linux", {cache.ENV: "/mine", "XDG_CACHE_HOME": "/xdg"}, "/mine"),
    ],
)
def test_the_cache_is_in_the_platforms_user_cache_directory(
    monkeypatch: pytest.MonkeyPatch, platform: str, variables: dict[str, str], expected: str
) -> None:
    for name in (cache.ENV, "XDG_CACHE_HOME", "LOCALAPPDATA"):
        monkeypatch.delenv(name, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(sys, "platform", platform)
    monkeypatch.setattr(Path, "home", lambda: Path("/home/u"))
    assert cache.cache_dir() == Path(expected)


@pytest.fixture
def hits() -> Iterator[list[str]]:
    """The persistent cache's hits recorded while the test runs."""
    seen: list[str] = []

    def listen(event: str, **_: object) -> None:
        if event == "/jax/compilation_cache/cache_hits":
            seen.append(event)

    jax.monitoring.register_event_listener(listen)
    yield seen
    jax.monitoring.unregister_event_listener(listen)


def _compile_fresh() -> None:
    # A new function object each time: JAX's in-memory cache cannot serve it, so the
    # executable comes from XLA or from the persistent cache.
    jax.jit(lambda x: jnp.sin(x) * 3.0 + 1.0)(jnp.arange(7.0)).block_until_ready()


def test_a_compilation_is_saved_and_loaded_and_the_settings_come_back(
    tmp_path: Path, hits: list[str]
) -> None:
    before = {name: getattr(jax.config, name) for name in cache._SETTINGS}
    # JAX opens its cache at a process's first compilation: this one, under the suite's.
    jax.jit(jnp.cos)(1.0)
    hits.clear()
    with cache.compilation_cache(tmp_path / "c") as where:
        assert where == tmp_path / "c"
        _compile_fresh()
        saved = sorted(p.name for p in where.iterdir())
        assert any(name.endswith("-cache") for name in saved), saved
        assert not hits
        _compile_fresh()
        assert len(hits) == 1
        # Only its owner may write code that this process will run.
        assert where.stat().st_mode & 0o777 == 0o700
    assert {name: getattr(jax.config, name) for name in cache._SETTINGS} == before


def test_without_a_directory_nothing_is_saved(tmp_path: Path, hits: list[str]) -> None:
    with cache.compilation_cache(None) as where:
        assert where is None
        _compile_fresh()
        _compile_fresh()
    assert not hits


def command(cache_args: list[str], cwd: Path, env: dict[str, str] = ENV) -> subprocess.Popen[str]:
    argv = ["check", "planted.batched:grad", "--examples", "5", "--sizes", "small"]
    argv += ["--save-dir", str(cwd)]
    return subprocess.Popen(
        [sys.executable, "-m", "bptt_ref.cli", *argv, *cache_args],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_two_commands_share_one_cache_at_once(tmp_path: Path) -> None:
    """Both start on an empty cache, so both compile and write the same entries while the
    other may read them; JAX's lock makes each see whole entries or none."""
    shared = tmp_path / "shared"
    runs = [command(["--cache-dir", str(shared)], tmp_path) for _ in range(2)]
    for run in runs:
        out, err = run.communicate(timeout=600)
        assert run.returncode == 0, out + err
        assert "persistent compilation cache" not in err, err
    assert len(stored_entries(shared)) == 1


def stored_entries(directory: Path) -> list[Path]:
    return [p for p in (directory / "executables").glob("*/*") if p.is_file()]


def test_the_variable_moves_the_cache_and_no_cache_writes_nothing(tmp_path: Path) -> None:
    used, unused = tmp_path / "used", tmp_path / "unused"
    runs = [
        command([], tmp_path, {**ENV, cache.ENV: str(used)}),
        command(["--no-cache"], tmp_path, {**ENV, cache.ENV: str(unused)}),
    ]
    for run in runs:
        out, err = run.communicate(timeout=600)
        assert run.returncode == 0, out + err
    assert len(stored_entries(used)) == 1
    assert not unused.exists()


def test_without_filelock_the_cache_is_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hits: list[str]
) -> None:
    """Without JAX's lock a reader can see a half-written entry: no cache then."""
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "filelock" else find_spec(name, *a),
    )
    with cache.compilation_cache(tmp_path / "c") as where:
        assert where is None
        _compile_fresh()
        _compile_fresh()
    assert not hits
    assert not (tmp_path / "c").exists()


def _recurrence(w: jax.Array, xs: jax.Array) -> jax.Array:
    """A small scan with a gradient: the kind of program the oracle is."""

    def body(h: jax.Array, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        h = jnp.tanh(x @ w + h)
        return h, jnp.sum(h**2)

    return jnp.sum(lax.scan(body, jnp.zeros(w.shape[1]), xs)[1])


def _args(steps: int = 4) -> tuple[jax.Array, jax.Array]:
    return jnp.linspace(-0.3, 0.3, 15).reshape(3, 5), jnp.linspace(-1.0, 1.0, 3 * steps).reshape(
        steps, 3
    )


def _untraceable(*_: object) -> jax.Array:
    raise AssertionError("traced: the stored executable was not used")


def test_a_stored_executable_is_loaded_without_tracing(tmp_path: Path) -> None:
    expected = jax.value_and_grad(_recurrence)(*_args())
    name = f"test/{tmp_path.name}"
    with cache.compilation_cache(tmp_path / "c") as where:
        assert where is not None
        got = cache.stored(name, jax.jit(jax.value_and_grad(_recurrence)))(*_args())
        (entry,) = stored_entries(where)
        assert entry.stat().st_mode & 0o777 == 0o600
        cache._LOADED.clear()  # as a new process starts
        loaded = cache.stored(name, jax.jit(_untraceable))(*_args())
        # Other shapes are another program: traced, compiled and stored beside it.
        cache.stored(name, jax.jit(jax.value_and_grad(_recurrence)))(*_args(steps=6))
        assert len(stored_entries(where)) == 2
    for result in (got, loaded):
        np.testing.assert_array_equal(result[0], expected[0])
        np.testing.assert_array_equal(result[1], expected[1])
    # Without a cache, nothing is stored and the function is traced.
    with cache.compilation_cache(None), pytest.raises(AssertionError, match="traced"):
        cache.stored(f"{name}/off", jax.jit(_untraceable))(*_args())


def test_an_executable_that_jax_read_from_its_cache_is_stored_whole(tmp_path: Path) -> None:
    """jaxlib 0.10.2 serializes an executable it loaded from its own cache without some of
    its code: loading that fails with "Function ... not found". ``stored`` compiles afresh."""
    program = jax.value_and_grad(_recurrence)
    name = f"test/{tmp_path.name}"
    with cache.compilation_cache(tmp_path / "c") as where:
        assert where is not None
        jax.jit(program).lower(*_args()).compile()  # now in JAX's own cache
        jax.clear_caches()  # type: ignore[no-untyped-call]  # as a new process starts: the next compilation reads it back
        cache.stored(name, jax.jit(program))(*_args())
        cache._LOADED.clear()
        loaded = cache.stored(name, jax.jit(_untraceable))(*_args())
    np.testing.assert_array_equal(loaded[1], program(*_args())[1])


def test_an_entry_that_does_not_load_is_compiled_again(tmp_path: Path) -> None:
    name = f"test/{tmp_path.name}"
    with cache.compilation_cache(tmp_path / "c") as where:
        assert where is not None
        cache.stored(name, jax.jit(jax.value_and_grad(_recurrence)))(*_args())
        (entry,) = stored_entries(where)
        entry.write_bytes(entry.read_bytes()[:1000])  # cut short, as by a full disk
        cache._LOADED.clear()
        with pytest.raises(AssertionError, match="traced"):
            cache.stored(name, jax.jit(_untraceable))(*_args())
        again = cache.stored(name, jax.jit(jax.value_and_grad(_recurrence)))(*_args())
        np.testing.assert_array_equal(again[0], _recurrence(*_args()))
        cache._LOADED.clear()
        cache.stored(name, jax.jit(_untraceable))(*_args())  # rewritten whole


def test_an_edited_source_traces_anew_and_the_least_recently_used_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"test/{tmp_path.name}"
    with cache.compilation_cache(tmp_path / "c") as where:
        assert where is not None
        cache.stored(name, jax.jit(jax.value_and_grad(_recurrence)))(*_args())
        (old,) = stored_entries(where)
        os.utime(old, (1.0, 1.0))
        monkeypatch.setattr(cache, "_source_digest", lambda: "edited")
        cache._LOADED.clear()
        # The key covers the source: an edited bptt_ref traces anew.
        with pytest.raises(AssertionError, match="traced"):
            cache.stored(name, jax.jit(_untraceable))(*_args())
        cache.stored(name, jax.jit(jax.value_and_grad(_recurrence)))(*_args())
        assert len(stored_entries(where)) == 2
        # Past the size, the least recently used entry goes: the older source's.
        held = sum(p.stat().st_size for p in stored_entries(where))
        monkeypatch.setattr(cache, "MAX_BYTES", 2 * held + old.stat().st_size)
        cache._LOADED.clear()
        cache.stored(f"{name}/another", jax.jit(jax.value_and_grad(_recurrence)))(*_args())
        assert not old.exists()
        assert len(stored_entries(where)) == 2
