"""The runtime package stands on NumPy alone, exposes one explicit namespace, and each extra
installs what its modules need."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

from session_env import ROOT, distributions, run_with_only

import bptt_ref


def test_import_does_not_pull_in_optional_dependencies() -> None:
    code = (
        "import sys, bptt_ref, bptt_ref.cases, bptt_ref.compare, bptt_ref.finite_difference\n"
        "optional = ('jax', 'jaxlib', 'hypothesis', 'rich', 'matplotlib')\n"
        "heavy = [m for m in optional if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_public_names() -> None:
    # Submodules (compare, strategies, ...) are public modules, not re-exported names.
    exported = [
        name
        for name in dir(bptt_ref)
        if (not name.startswith("_") or name == "__version__")
        and not isinstance(getattr(bptt_ref, name), types.ModuleType)
    ]
    assert sorted(bptt_ref.__all__) == sorted(exported)
    assert bptt_ref.PARAM_NAMES == ("U", "V", "W", "b_h", "b_y", "h0")
    assert (*bptt_ref.PARAM_NAMES, "xs") == bptt_ref.GRAD_NAMES
    assert bptt_ref.HIDDEN_ACTIVATIONS == (
        "identity",
        "tanh",
        "sigmoid",
        "relu",
        "leaky_relu",
        "elu",
        "softplus",
        "silu",
        "gelu",
    )
    assert bptt_ref.OUTPUT_ACTIVATIONS == ("identity", "tanh", "sigmoid", "softmax")
    assert set(bptt_ref.VALID_HEADS) == {
        ("identity", "mse"),
        ("tanh", "mse"),
        ("sigmoid", "mse"),
        ("softmax", "mse"),
        ("softmax", "cross_entropy"),
        ("sigmoid", "binary_cross_entropy"),
    }


def test_the_testing_extra_installs_what_assert_bptt_gradients_needs(tmp_path: Path) -> None:
    # A user's test module, run where only bptt-ref[testing] is installed; the same module
    # where only bptt-ref[cli] is (no pytest) is the control that the check can fail.
    user_test = tmp_path / "test_my_rnn.py"
    user_test.write_text(
        "import sys\n"
        "import pytest\n"
        "from bptt_ref.testing import assert_bptt_gradients\n"
        f"sys.path.insert(0, {str(ROOT / 'tests' / 'planted')!r})\n"
        "from batched import grad\n"
        "assert_bptt_gradients(grad, max_examples=5, save_dir=sys.argv[1])\n"
        "print('agree')\n"
    )
    testing = run_with_only(distributions({"testing"}, []), user_test, str(tmp_path))
    assert testing.returncode == 0, testing.stderr
    assert testing.stdout.strip() == "agree"
    cli = run_with_only(distributions({"cli"}, []), user_test, str(tmp_path))
    assert cli.returncode == 1
    assert "ModuleNotFoundError: No module named 'pytest'" in cli.stderr
