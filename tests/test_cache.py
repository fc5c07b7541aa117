"""The persistent compilation cache: where it lives, that a compilation is saved and
loaded through it, that JAX's settings come back, and that two commands share it."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

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
    argv = ["check", "planted.batched:grad", "--examples", "5", "--save-dir", str(cwd)]
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
    assert any(p.name.startswith("jit__total_loss") for p in shared.iterdir())


def test_the_variable_moves_the_cache_and_no_cache_writes_nothing(tmp_path: Path) -> None:
    used, unused = tmp_path / "used", tmp_path / "unused"
    runs = [
        command([], tmp_path, {**ENV, cache.ENV: str(used)}),
        command(["--no-cache"], tmp_path, {**ENV, cache.ENV: str(unused)}),
    ]
    for run in runs:
        out, err = run.communicate(timeout=600)
        assert run.returncode == 0, out + err
    assert any(p.name.startswith("jit__total_loss") for p in used.iterdir())
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
