"""`bptt-ref check` as a user runs it: a subprocess on the planted implementations.

Right implementations in several styles must pass; each planted bug must be caught,
shrunk to the smallest case that shows it, and named by its wrong keys; protocol and
usage errors must exit 2 with a message that says what to fix.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bptt_ref import GRAD_NAMES
from bptt_ref.cli import main

TESTS = Path(__file__).parent
ROOT = TESTS.parent
DELTA_KEYS = ["V", "W", "b_h", "h0", "xs"]
SIGMOID_BCE = ["--hidden", "sigmoid", "--output", "sigmoid", "--loss", "binary_cross_entropy"]


@pytest.fixture(scope="session")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """This tree's package and ``planted`` on the path; one JAX compilation cache for all runs."""
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS)]),
        "JAX_COMPILATION_CACHE_DIR": str(tmp_path_factory.mktemp("jax-cache")),
    }


def check(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "bptt_ref.cli", "check", *args, "--save-dir", str(cwd)]
    return subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    ("target", "args"),
    [
        pytest.param("planted.batched:grad", [], id="batched-float64"),
        pytest.param("planted.batched:grad", ["--dtype", "float32"], id="batched-float32"),
        pytest.param(str(TESTS / "planted" / "column_loop.py") + ":grad", [], id="loop-by-path"),
        pytest.param("planted.column_loop:grad", ["--dtype", "float32"], id="loop-float64-out"),
        pytest.param(
            "planted.batched:grad_softmax_ce",
            ["--output", "softmax", "--loss", "cross_entropy"],
            id="softmax-ce",
        ),
        pytest.param("planted.batched:grad_sigmoid_bce", SIGMOID_BCE, id="sigmoid-bce"),
        pytest.param("planted.protocol:only_W_and_b_h", [], id="subset-of-keys"),
    ],
)
def test_right_implementations_pass(
    env: dict[str, str], tmp_path: Path, target: str, args: list[str]
) -> None:
    done = check(env, tmp_path, target, "--examples", "200", *args)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "agree with the reference on 200 cases" in done.stdout
    assert not list(tmp_path.glob("*.npz"))


# (function, extra arguments, wrong keys, smallest failing (T, B, H), words of the hint)
BUGS = [
    ("mean_over_time", [], GRAD_NAMES, (2, 1, 1), "= 1/T (T=2, B=1): the loss is a mean over time"),
    (
        "mean_over_batch",
        [],
        GRAD_NAMES,
        (1, 2, 1),
        "= 1/B (T=1, B=2): the loss is a mean over batch",
    ),
    ("mse_without_half", [], GRAD_NAMES, (1, 1, 1), "is 2 × the reference: a factor 2"),
    ("no_tanh_prime", [], DELTA_KEYS, (1, 1, 1), "f_h' of tanh"),
    ("h_t_in_dW", [], ["W"], (1, 1, 1), "only W is wrong"),
    ("first_step_skipped", [], GRAD_NAMES, (1, 1, 1), "a time step (t = 0?) is skipped"),
    ("truncated_after_3", [], DELTA_KEYS, (4, 1, 1), "truncated after 3 steps"),
    ("transposed_W_backward", [], ["h0"], (1, 1, 2), "∂L/∂h_0 = δ_0 W"),
    ("b_y_mean_over_batch", [], ["b_y"], (1, 2, 1), "b_y averaged over batch rows"),
    ("dh0_without_W", [], ["h0"], (1, 1, 1), "∂L/∂h_0 = δ_0 W"),
    ("sigmoid_prime_sign", ["--hidden", "sigmoid"], DELTA_KEYS, (1, 1, 1), "a sign error"),
    ("bce_on_logits", SIGMOID_BCE, GRAD_NAMES, (1, 1, 1), "binary_cross_entropy after sigmoid"),
]


@pytest.mark.parametrize(
    ("function", "args", "wrong", "smallest", "hint"), BUGS, ids=[b[0] for b in BUGS]
)
def test_planted_bug_is_caught_and_shrunk(
    env: dict[str, str],
    tmp_path: Path,
    function: str,
    args: list[str],
    wrong: list[str],
    smallest: tuple[int, int, int],
    hint: str,
) -> None:
    done = check(env, tmp_path, f"planted.batched:{function}", "--examples", "40", *args)
    out = done.stdout
    assert done.returncode == 1, out + done.stderr
    assert f"wrong keys: {', '.join(wrong)}   (right:" in out, out
    T, B, H = smallest
    assert f"    T={T} B={B} H={H} (D=1 O=1)" in out, out
    assert hint in out, out
    # The reproducer reloads the case and shows fn's error on it.
    (npz,) = tmp_path.glob("bptt-ref-failure-*.npz")
    snippet = "\n".join(line[4:] for line in out.split(f"reproducer: {npz}\n")[1].splitlines())
    rerun = subprocess.run(
        [sys.executable, "-c", snippet], env=env, capture_output=True, text=True, check=True
    )
    errors = dict(line.split() for line in rerun.stdout.splitlines())
    assert all(float(errors[k]) > 0 for k in wrong)


def test_exception_in_fn_exits_1_with_its_smallest_case(
    env: dict[str, str], tmp_path: Path
) -> None:
    done = check(env, tmp_path, "planted.protocol:raises_beyond_T3", "--examples", "40")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "raised an exception" in done.stdout
    assert "T=4 B=1 H=1" in done.stdout
    assert "IndexError: buffer of 3 steps" in done.stdout


def test_import_failure_exits_2(env: dict[str, str], tmp_path: Path) -> None:
    done = check(env, tmp_path, "planted.broken_import:grad")
    assert done.returncode == 2
    assert "importing planted.broken_import raised ModuleNotFoundError" in done.stderr
    assert "PYTHONPATH" in done.stderr


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["planted.protocol:unknown_key"], "returned unknown keys ['dW']"),
        (["planted.protocol:not_a_mapping"], "returned a list"),
        (["planted.protocol:b_h_as_row"], "expected (H,) = "),
        (["planted.protocol:float32_result"], "with dtype float32"),
        (["planted.protocol:h0_only_for_short"], "(missing ['h0']); return"),
        (["planted.protocol:two_arguments"], "cannot be called as fn(params, xs, targets)"),
        (["planted.batched"], "expected PATH.py:FUNC or package.module:FUNC"),
        (["planted.batched:no_such_function"], "defines no 'no_such_function'"),
        (["no/such/file.py:grad"], "no file no/such/file.py"),
        (["planted.batched:grad", "--output", "tanh", "--loss", "cross_entropy"], "cannot follow"),
        (["planted.batched:grad", "--examples", "0"], "max_examples is 0"),
    ],
    ids=lambda value: value if isinstance(value, str) else value[0],
)
def test_usage_and_protocol_errors_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str], message: str
) -> None:
    code = main(["check", "--examples", "10", "--save-dir", str(tmp_path), *argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in re.sub(r"\s+", " ", err), err
