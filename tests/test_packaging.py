"""The runtime package stands on NumPy alone and exposes one explicit namespace."""

from __future__ import annotations

import subprocess
import sys
import types

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
