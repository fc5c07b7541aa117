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
def env() -> dict[str, str]:
    """This tree's package and ``planted`` on the path (the runs share the suite's
    compilation cache, conftest.py's)."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS)])}


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
    # Small sizes only: the boundary sizes are tests/test_kernel_checks.py's, and each dim
    # of them costs this fresh process a compilation.
    done = check(env, tmp_path, target, "--examples", "200", "--sizes", "small", *args)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "agree with the reference on 200 cases" in done.stdout
    split = r"in [\d.]+ s \([\d.]+ s compiling the oracle, [\d.]+ s on the cases\)"
    assert re.search(split, done.stdout), done.stdout
    # Progress is for a terminal: a captured stderr holds none.
    assert "searching" not in done.stderr
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
    ("transposed_W_backward", [], ["h0"], (1, 1, 2), "∂L/∂h0 = δ_0 W"),
    ("b_y_mean_over_batch", [], ["b_y"], (1, 2, 1), "b_y averaged over batch rows"),
    ("dh0_without_W", [], ["h0"], (1, 1, 1), "∂L/∂h0 = δ_0 W"),
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


def test_exit_handlers_of_fn_s_module_run_and_the_report_is_whole(
    env: dict[str, str], tmp_path: Path
) -> None:
    # The command ends with os._exit (bptt_ref.cli.console): the handlers a user's module
    # registered must still run, and all that was printed, by it too, reach the pipe, with
    # the exit code.
    (tmp_path / "leaving.py").write_text(
        "import atexit\nfrom pathlib import Path\n\n"
        "from planted.batched import grad, mean_over_time\n\n"
        "atexit.register(Path('left.txt').write_text, 'bye')\n"
        "atexit.register(print, 'fn left')\n"
    )
    # Output to a pipe is block-buffered, as a user's CI has it.
    buffered = {k: v for k, v in env.items() if k != "PYTHONUNBUFFERED"}
    for name, code, said in [
        ("grad", 0, "agree with the reference"),
        ("mean_over_time", 1, "reproducer:"),
    ]:
        (tmp_path / "left.txt").unlink(missing_ok=True)
        done = check(
            buffered,
            tmp_path,
            f"{tmp_path / 'leaving.py'}:{name}",
            "--examples",
            "5",
            "--sizes",
            "small",
        )
        assert done.returncode == code, done.stdout + done.stderr
        assert said in done.stdout
        assert done.stdout.endswith("fn left\n")  # printed last, by the user's handler
        assert (tmp_path / "left.txt").read_text() == "bye"


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


# A user's folder: the gradient in rnn.py, and a file beside it that imports it (and,
# inside fn, a second neighbour, as code that imports lazily does).
NEIGHBOURS = {
    "rnn.py": "from planted.batched import grad as bptt, mean_over_time as mean_bptt\n",
    "rnn_scale.py": "FACTOR = 1.0\n",
    "client.py": (
        "from rnn import bptt, mean_bptt\n\n\n"
        "def grad(params, xs, targets):\n"
        "    from rnn_scale import FACTOR\n\n"
        "    return {k: FACTOR * g for k, g in bptt(params, xs, targets).items()}\n\n\n"
        "def grad_wrong(params, xs, targets):\n"
        "    return mean_bptt(params, xs, targets)\n"
    ),
}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """The user's folder, and an empty one beside it to run from."""
    (tmp_path / "elsewhere").mkdir()
    user = tmp_path / "user"
    user.mkdir()
    for name, text in NEIGHBOURS.items():
        (user / name).write_text(text)
    return user


def launched(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``bptt-ref ARGS`` as the installed script runs it: with its own folder, not the
    current directory, as sys.path[0] (``python -m`` would add the current directory)."""
    script = cwd.parent / "bin" / "bptt-ref.py"
    script.parent.mkdir(exist_ok=True)
    script.write_text("import sys\nfrom bptt_ref.cli import main\nsys.exit(main())\n")
    command = [sys.executable, str(script), *args]
    return subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)


def test_path_target_imports_the_files_beside_it(env: dict[str, str], folder: Path) -> None:
    elsewhere = folder.parent / "elsewhere"
    target = f"{folder / 'client.py'}:grad"
    done = launched(env, elsewhere, "check", target, "--examples", "5", "--sizes", "small")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "agree with the reference on 5 cases" in done.stdout


def test_module_target_imports_from_the_current_directory(
    env: dict[str, str], folder: Path
) -> None:
    done = launched(env, folder, "check", "client:grad", "--examples", "5")
    assert done.returncode == 0, done.stdout + done.stderr
    # The current directory, not the target's name, is what makes it importable.
    away = launched(env, folder.parent / "elsewhere", "check", "client:grad", "--examples", "5")
    assert away.returncode == 2
    assert "importing client raised ModuleNotFoundError: No module named 'client'" in away.stderr


def test_reproducer_of_a_path_target_runs_from_anywhere(env: dict[str, str], folder: Path) -> None:
    elsewhere = folder.parent / "elsewhere"
    done = check(env, elsewhere, f"{folder / 'client.py'}:grad_wrong", "--examples", "10")
    assert done.returncode == 1, done.stdout + done.stderr
    (npz,) = elsewhere.glob("bptt-ref-failure-*.npz")
    out = done.stdout
    snippet = "\n".join(line[4:] for line in out.split(f"reproducer: {npz}\n")[1].splitlines())
    rerun = subprocess.run(
        [sys.executable, "-c", snippet],
        env=env,
        cwd=elsewhere,
        capture_output=True,
        text=True,
        check=True,
    )
    errors = dict(line.split() for line in rerun.stdout.splitlines())
    assert all(float(err) > 0 for err in errors.values()), errors


def test_sys_path_is_restored_after_the_check(
    capsys: pytest.CaptureFixture[str], folder: Path
) -> None:
    before = list(sys.path)
    try:
        code = main(["check", f"{folder / 'client.py'}:grad", "--examples", "3"])
    finally:
        for name in ("rnn", "rnn_scale"):
            sys.modules.pop(name, None)
    assert code == 0, capsys.readouterr()
    assert sys.path == before


def test_progress_on_a_terminal_names_each_phase(env: dict[str, str], tmp_path: Path) -> None:
    terminal = {**env, "TTY_COMPATIBLE": "1", "COLUMNS": "120"}
    done = check(terminal, tmp_path, "planted.batched:mean_over_time", "--examples", "40")
    assert done.returncode == 1, done.stdout + done.stderr
    shown = done.stderr
    for phase in ("importing", "searching", "compiling the oracle", "shrinking", "explaining"):
        assert phase in shown, shown
    assert "1/40" in shown
    assert "calls of fn" in shown
    assert re.search(r"first failure after \d+ example\(s\) in [\d.]+ s \(", done.stdout)
