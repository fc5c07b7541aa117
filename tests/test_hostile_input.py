"""Malformed input, drawn by Hypothesis, always gets the documented error.

Every public entry point that takes the model's arrays is fed a valid case with up to
two corruptions applied. With none the call must succeed; with any it must raise
``ValueError`` or ``TypeError`` whose message names an offending array (or name) and
says what was expected: never an ``IndexError``, a broadcast surprise or a silent answer.

For ``bptt-ref check`` (``bptt_ref.testing.check_gradients``) the hostile input is the
user's gradient function, drawn to return the wrong thing: it must get a
``ProtocolError`` (exit 2) naming the key, what came and what was expected, or, for NaN,
inf and exceptions raised, a failure report (exit 1).
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray
from planted import batched

import bptt_ref
from bptt_ref import GRAD_NAMES, finite_difference, jax_reference
from bptt_ref.cases import Config
from bptt_ref.cells import CELLS
from bptt_ref.cli import main
from bptt_ref.strategies import cases, configurations
from bptt_ref.testing import CheckResult, ProtocolError, check_gradients


@dataclass
class Call:
    params: Any
    xs: Any
    targets: Any
    config: Config
    blame: set[str]  # names an error message may point at
    errors: set[type[Exception]]
    touched: set[str]  # the inputs a corruption changed
    cell: str = "rnn"


def _arrays(call: Call) -> tuple[str, ...]:
    return (*CELLS[call.cell].names, "xs", "targets")


def _array(call: Call, name: str) -> Any:
    return call.xs if name == "xs" else call.targets if name == "targets" else call.params[name]


def _set(call: Call, name: str, value: Any) -> None:
    if name == "xs":
        call.xs = value
    elif name == "targets":
        call.targets = value
    else:
        call.params[name] = value


def _present(call: Call) -> list[str]:
    # An earlier corruption may have dropped a key.
    return [name for name in _arrays(call) if name in ("xs", "targets") or name in call.params]


def _reshape(draw: st.DrawFn, call: Call) -> None:
    name = draw(st.sampled_from(_present(call)))
    arr = np.asarray(_array(call, name))
    shape = list(arr.shape)
    how = draw(st.sampled_from(["grow", "add_dim", "drop_dim"]))
    if how == "grow" and shape:
        i = draw(st.integers(0, len(shape) - 1))
        shape[i] += draw(st.integers(1, 3))
    elif how == "add_dim" or not shape:
        shape.append(1)
    else:
        shape.pop()
    _set(call, name, np.zeros(shape, dtype=arr.dtype))
    call.touched.add(name)
    # A changed dim is reported on whichever array first disagrees with it.
    call.blame |= set(_arrays(call))
    call.errors.add(ValueError)


def _retype(draw: st.DrawFn, call: Call) -> None:
    name = draw(st.sampled_from(_present(call)))
    arr = np.real(np.asarray(_array(call, name)))
    dtype = draw(
        st.sampled_from([np.int32, np.bool_, np.complex64, np.float16, np.float32, np.float64])
    )
    if dtype == arr.dtype:
        return
    with np.errstate(invalid="ignore", over="ignore"):  # NaN or 1e30 into int or float16
        _set(call, name, arr.astype(dtype))
    call.touched.add(name)
    call.blame |= {name, "xs"}  # a float mismatch is reported against xs's dtype
    call.errors.add(TypeError)


def _poison(draw: st.DrawFn, call: Call) -> None:
    name = draw(st.sampled_from(_present(call)))
    arr = np.array(_array(call, name), copy=True)
    if arr.size == 0 or not np.issubdtype(arr.dtype, np.inexact):
        return
    arr.flat[draw(st.integers(0, arr.size - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    _set(call, name, arr)
    call.touched.add(name)
    call.blame.add(name)
    call.errors.add(ValueError)


def _keys(draw: st.DrawFn, call: Call) -> None:
    if draw(st.booleans()):
        call.params.pop(draw(st.sampled_from(CELLS[call.cell].names)), None)
    else:
        call.params[draw(st.sampled_from(["w", "bias", "h_0", "U "]))] = np.zeros(1)
    call.touched.add("params")
    call.blame.add("params")
    call.errors.add(ValueError)


def _names(draw: st.DrawFn, call: Call) -> None:
    field: Literal["hidden", "output", "loss"] = draw(st.sampled_from(["hidden", "output", "loss"]))
    call.config[field] = draw(
        st.sampled_from(["Tanh", "", "softmax ", "mse2", "relu6", "cross_entropy"])
    )
    call.touched.add(field)
    # A new loss can make valid targets invalid for it (probability rows, [0, 1]).
    call.blame |= {"hidden", "output", "loss", "targets"}
    call.errors.add(ValueError)


def _other_cell(draw: st.DrawFn, call: Call) -> None:
    # Parameters of one cell called as another: named as the other cell's, or (the two
    # GRUs share their keys and shapes) accepted as the GRU they fit.
    mine = call.cell
    call.cell = draw(st.sampled_from([name for name in CELLS if name != mine]))
    call.touched.add("cell")
    call.blame |= {"params", *_arrays(call), f"cell {call.cell!r}", "hidden"}
    call.errors.add(ValueError)


CORRUPTIONS: list[Callable[[st.DrawFn, Call], None]] = [
    _reshape,
    _retype,
    _poison,
    _keys,
    _names,
    _other_cell,
]


@st.composite
def calls(draw: st.DrawFn) -> Call:
    case = draw(cases(max_T=4, max_B=3, max_D=3, max_H=4, max_O=3, cells=tuple(CELLS)))
    call = Call(
        dict(case.params),
        case.xs,
        case.targets,
        Config(**case.config),
        set(),
        set(),
        set(),
        case.cell,
    )
    for corrupt in draw(st.lists(st.sampled_from(CORRUPTIONS), max_size=2)):
        corrupt(draw, call)
    return call


ENTRY_POINTS: dict[str, Callable[[Call], object]] = {
    "loss_and_grad": lambda c: bptt_ref.loss_and_grad(
        c.params, c.xs, c.targets, cell=c.cell, **c.config
    ),
    "forward": lambda c: bptt_ref.forward(
        c.params, c.xs, cell=c.cell, hidden=c.config["hidden"], output=c.config["output"]
    ),
    "jax_reference.loss_and_grad": lambda c: jax_reference.loss_and_grad(
        c.params, c.xs, c.targets, cell=c.cell, **c.config
    ),
    "directional_derivative": lambda c: finite_difference.directional_derivative(
        c.params,
        c.xs,
        c.targets,
        _direction(c),
        cell=c.cell,
        **c.config,
    ),
}


def _direction(c: Call) -> dict[str, Any]:
    shapes = {k: np.shape(c.params[k]) for k in CELLS[c.cell].names if k in c.params}
    return {k: np.ones(s) for k, s in {**shapes, "xs": np.shape(c.xs)}.items()}


def _documented_error(entry: str, call: Call) -> ValueError | TypeError | None:
    # Anything but ValueError or TypeError propagates and fails the test by itself.
    try:
        ENTRY_POINTS[entry](call)
    except (ValueError, TypeError) as error:
        return error
    return None


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
@settings(max_examples=1000)
@given(call=calls())
def test_malformed_input_gets_a_named_error(entry: str, call: Call) -> None:
    error = _documented_error(entry, call)
    if error is None:
        assert not call.errors or _only_harmless(call, entry), (
            f"{entry} accepted corrupted input {call.touched}"
        )
        return
    message = str(error)
    assert call.errors, f"{entry} rejected a valid case: {message}"
    assert any(name in message for name in call.blame), message
    assert "expected" in message or "cannot follow" in message, message


def _only_harmless(call: Call, entry: str) -> bool:
    # A drawn "corruption" can leave the input valid: a name replaced by a valid one, a
    # loss that happens to fit the output, or (for forward, which takes no targets and no
    # loss) a new T or an invalid loss that only the targets or the loss would contradict.
    targets, config = call.targets, call.config
    try:
        if entry == "forward":
            T, B = np.shape(call.xs)[:2]
            targets = np.zeros(
                (T, B, np.shape(call.params["U"])[0]), dtype=np.asarray(call.xs).dtype
            )
            config = {**config, "loss": "mse"}
        bptt_ref.loss_and_grad(call.params, call.xs, targets, cell=call.cell, **config)
    except (ValueError, TypeError, KeyError):
        return False
    return True


# `bptt-ref check`: here the hostile input is the user's gradient function and what it
# returns. A return that breaks the protocol (not a mapping, no keys, unknown keys, keys
# that change between cases, an array of the wrong shape or dtype, something NumPy cannot
# read as an array) and a signature fn(params, xs, targets) cannot call must raise
# ProtocolError, exit 2, with a message naming the key, what it got and what was
# expected. NaN or inf in a well-formed return is a wrong gradient: exit 1, the key
# named. An exception fn raises is fn's failure: exit 1 with its traceback. The functions
# answer zeros, or planted.batched.grad where the oracle must judge them, never the
# bptt_ref code under test.

Returned = Any  # what fn returns: a dict of gradients until a break makes it anything
Inputs = dict[str, NDArray[Any]]  # fn's inputs by gradient key: the params and xs
# (fn's return so far, its inputs, the dtypes the check allows) -> (the new return, the
# fragments the error must contain, computed on the very case fn was called on)
Apply = Callable[[Returned, Inputs, list[np.dtype[Any]]], tuple[Returned, list[str]]]


@dataclass(frozen=True)
class Break:
    """One protocol violation in what fn returns."""

    label: str
    apply: Apply

    def __repr__(self) -> str:
        return self.label


def _need(allowed: list[np.dtype[Any]]) -> str:
    return " or ".join(str(d) for d in allowed)


SHAPE_BREAKS = ["leading", "drop_leading", "trailing", "transposed", "ones", "grown", "random"]


@st.composite
def shape_breaks(draw: st.DrawFn, key: str) -> Break:
    how = draw(st.sampled_from(SHAPE_BREAKS))
    axis, grow = draw(st.integers(0, 2)), draw(st.integers(1, 3))
    drawn = tuple(draw(st.lists(st.integers(0, 5), max_size=4)))

    def apply(out: Returned, inputs: Inputs, allowed: list[np.dtype[Any]]) -> tuple[Any, list[str]]:
        right = inputs[key].shape
        i = axis % len(right)
        shape = {
            "leading": (1, *right),
            "drop_leading": right[1:],
            "trailing": (*right, 1),
            "transposed": right[::-1],
            "ones": (*right[:i], 1, *right[i + 1 :]),  # broadcastable to the right shape
            "grown": (*right[:i], right[i] + grow, *right[i + 1 :]),
            "random": drawn,
        }[how]
        if shape == right:  # a square W transposed, a 1 put where the dim is 1
            shape = (*right, 1)
        out[key] = np.zeros(shape, dtype=out[key].dtype)
        return out, [f"returned {key} of shape {shape}", f"= {right}"]

    return Break(f"{key} with a {how} shape", apply)


WRONG_DTYPES = [
    np.int8, np.int32, np.int64, np.uint8, np.bool_, np.float16, np.float32, np.longdouble,
    np.complex64, np.complex128, np.object_, np.str_,
]  # fmt: skip


@st.composite
def dtype_breaks(draw: st.DrawFn, key: str, allowed: list[np.dtype[Any]]) -> Break:
    # float32 is allowed for float32 inputs, and longdouble is float64 on some platforms.
    dtype = draw(st.sampled_from([d for d in WRONG_DTYPES if np.dtype(d) not in allowed]))
    fill = draw(st.sampled_from([0.0, np.nan, np.inf]))
    if not (np.issubdtype(dtype, np.inexact) or dtype is np.object_):
        fill = 0.0  # NaN has no int or bool

    def apply(out: Returned, inputs: Inputs, allowed: list[np.dtype[Any]]) -> tuple[Any, list[str]]:
        out[key] = np.full(inputs[key].shape, fill).astype(dtype)
        got = out[key].dtype
        return out, [f"returned {key} with dtype {got}", f"expected {_need(allowed)}"]

    return Break(f"{key} as {np.dtype(dtype)} full of {fill}", apply)


class _Tensor:
    """Refuses NumPy, like a torch tensor that requires grad or lives on a GPU."""

    def __array__(self, dtype: Any = None, copy: Any = None) -> NDArray[Any]:
        raise RuntimeError("Can't call numpy() on Tensor that requires grad")


NON_ARRAYS = ["float", "nan", "int", "bool", "complex", "None", "str", "nested", "ragged", "tensor"]


def _non_array_break(key: str, kind: str) -> Break:
    def apply(out: Returned, inputs: Inputs, allowed: list[np.dtype[Any]]) -> tuple[Any, list[str]]:
        right = inputs[key].shape
        rows = np.zeros(right).tolist()
        value = {
            "float": 0.0,
            "nan": float("nan"),
            "int": 0,
            "bool": True,
            "complex": 0j,
            "None": None,
            "str": "nan",
            "nested": [rows],
            "ragged": [rows, 0.0],
            "tensor": _Tensor(),
        }[kind]
        out[key] = value
        if kind in ("ragged", "tensor"):
            return out, [f"returned {key} that NumPy cannot read as an array", f"= {right}"]
        got = np.asarray(value)
        if got.dtype not in allowed:
            return out, [f"returned {key} with dtype {got.dtype}", f"expected {_need(allowed)}"]
        return out, [f"returned {key} of shape {got.shape}", f"= {right}"]

    return Break(f"{key} as a {kind}", apply)


class _Impostor:
    """A key that prints as a gradient name without being one."""

    def __str__(self) -> str:
        return "W"

    def __repr__(self) -> str:
        return "_Impostor('W')"


EXTRA_KEYS: list[Any] = ["loss", "dW", "grad_W", "w", "b", "h_0", "x", "xs ", "W\n", 0, None]
EXTRA_VALUES: list[Any] = [float("nan"), float("inf"), "nan", None, np.zeros(1)]


@st.composite
def extra_key_breaks(draw: st.DrawFn) -> Break:
    name = draw(st.sampled_from([*EXTRA_KEYS, _Impostor()]))
    value = draw(st.sampled_from(EXTRA_VALUES))
    shown = name if isinstance(name, str) else repr(name)

    def apply(out: Returned, inputs: Inputs, allowed: list[np.dtype[Any]]) -> tuple[Any, list[str]]:
        out[name] = value
        return out, ["returned unknown keys", repr(shown), f"the keys are {', '.join(GRAD_NAMES)}"]

    return Break(f"extra key {name!r}: {value!r}", apply)


NOT_A_MAPPING: dict[str, Callable[[dict[str, Any]], Any]] = {
    "None": lambda g: None,
    "a loss": lambda g: 0.5,
    "a NaN loss": lambda g: float("nan"),
    "a string": lambda g: "nan",
    "a list": lambda g: list(g.values()),
    "(loss, grads)": lambda g: (float("nan"), g),
    "an array": lambda g: np.zeros((len(g), 2)),
    "a set of keys": lambda g: set(g),
    "dict items": lambda g: g.items(),
    "a generator": lambda g: (v for v in g.values()),
}


def _whole_break(kind: str) -> Break:
    def apply(out: Returned, inputs: Inputs, allowed: list[np.dtype[Any]]) -> tuple[Any, list[str]]:
        if kind == "{}":
            return {}, ["returned no gradients", f"return at least one of {', '.join(GRAD_NAMES)}"]
        new = NOT_A_MAPPING[kind](out)
        return new, [f"returned a {type(new).__name__}", "return a mapping from gradient names"]

    return Break(f"returns {kind}", apply)


def _keys_change(key: str, drop: bool) -> Break:
    """Drop or add ``key``: a change of keys once fn has answered honestly."""

    def apply(out: Returned, inputs: Inputs, allowed: list[np.dtype[Any]]) -> tuple[Any, list[str]]:
        if drop:
            del out[key]
        else:
            out[key] = np.zeros_like(inputs[key], dtype=next(iter(out.values())).dtype)
        change = f"({'missing' if drop else 'new'} {[key]})"
        return out, [change, "return the same keys every time"]

    return Break(f"{'drops' if drop else 'adds'} {key}", apply)


def key_breaks(key: str, allowed: list[np.dtype[Any]]) -> st.SearchStrategy[Break]:
    non_array = st.sampled_from(NON_ARRAYS).map(lambda kind: _non_array_break(key, kind))
    return st.one_of(shape_breaks(key), dtype_breaks(key, allowed), non_array, extra_key_breaks())


def whole_breaks() -> st.SearchStrategy[Break]:
    return st.sampled_from(["{}", *NOT_A_MAPPING]).map(_whole_break)


SIGNATURES: dict[str, Callable[..., Any]] = {
    "(params, xs)": lambda params, xs: {},
    "(params, xs, targets, lr)": lambda params, xs, targets, lr: {},
    "(*, params, xs, targets)": lambda *, params, xs, targets: {},
    "()": lambda: {},
}
RIGHT: Config = {"hidden": "tanh", "output": "identity", "loss": "mse"}  # planted.batched.grad's
RAISED: list[type[Exception]] = [
    ValueError, TypeError, IndexError, KeyError, ZeroDivisionError, FloatingPointError,
    RuntimeError, NotImplementedError, AssertionError, np.linalg.LinAlgError, ProtocolError,
]  # fmt: skip


@dataclass
class Hostile:
    """A gradient function that breaks the protocol, and the check it is run under."""

    dtype: str
    config: Config
    keys: tuple[str, ...]  # the keys fn returns before any break
    out_dtype: str  # of its arrays; float64 is allowed for float32 inputs
    right: bool = False  # planted.batched.grad's gradients (for RIGHT) instead of zeros
    honest_calls: int = 0  # calls answered before fn turns hostile
    breaks: list[Break] = field(default_factory=list)
    signature: str | None = None  # fn(params, xs, targets) cannot call it
    poison: tuple[str, float, float] | None = None  # (key, where in it, NaN or ±inf)
    raises: tuple[type[Exception], str] | None = None

    def build(self) -> tuple[Callable[..., Any], list[list[str]]]:
        """A fresh fn (it counts its calls), and what its latest error must say."""
        said: list[list[str]] = []
        if self.signature is not None:
            said.append(["cannot be called as fn(params, xs, targets)"])
            return SIGNATURES[self.signature], said
        calls = [0]

        def fn(params: Inputs, xs: NDArray[Any], targets: NDArray[Any]) -> Returned:
            calls[0] += 1
            inputs = {**params, "xs": xs}
            if self.right:
                grads = batched.grad(params, xs, targets)
            else:
                grads = {k: np.zeros_like(v) for k, v in inputs.items()}
            out = {k: grads[k].astype(self.out_dtype) for k in self.keys}
            if calls[0] <= self.honest_calls:
                return out
            if self.raises is not None:
                kind, message = self.raises
                raise kind(message)
            if self.poison is not None:
                key, where, value = self.poison
                out[key].flat[int(where * out[key].size)] = value
            allowed = [xs.dtype, *([np.dtype(np.float64)] if xs.dtype == np.float32 else [])]
            said.clear()
            for b in self.breaks:
                out, fragments = b.apply(out, inputs, allowed)
                said.append(fragments)
            return out

        return fn, said


def _allowed(dtype: str) -> list[np.dtype[Any]]:
    return [np.dtype(dtype), *([np.dtype(np.float64)] if dtype == "float32" else [])]


@st.composite
def _hostile(draw: st.DrawFn, config: Config) -> Hostile:
    dtype = draw(st.sampled_from(["float64", "float32"]))
    out_dtype = draw(st.sampled_from([d.name for d in _allowed(dtype)]))
    keys = draw(st.lists(st.sampled_from(GRAD_NAMES), min_size=1, unique=True))
    return Hostile(dtype, config, tuple(keys), out_dtype)


@st.composite
def protocol_breakers(draw: st.DrawFn) -> Hostile:
    """Any configuration; zeros broken from the first call on, in one to three ways."""
    hidden, output, loss = draw(configurations())
    hostile = draw(_hostile({"hidden": hidden, "output": output, "loss": loss}))
    how = draw(st.sampled_from(["values", "values", "values", "whole", "signature"]))
    if how == "signature":
        hostile.signature = draw(st.sampled_from(sorted(SIGNATURES)))
    elif how == "whole":
        hostile.breaks = [draw(whole_breaks())]
    else:
        allowed = _allowed(hostile.dtype)
        broken = draw(st.lists(st.sampled_from(hostile.keys), min_size=1, max_size=2, unique=True))
        hostile.breaks = [draw(key_breaks(k, allowed)) for k in broken]
        if draw(st.booleans()):
            hostile.breaks.append(draw(extra_key_breaks()))
    return hostile


@st.composite
def turncoats(draw: st.DrawFn) -> Hostile:
    """Right gradients for a few calls, then NaN or inf, an exception, or a protocol break."""
    hostile = draw(_hostile(RIGHT))
    hostile.right = True
    what = draw(st.sampled_from(["poison", "raise", "break", "keys"]))
    # A change of keys needs a first answer to change from.
    hostile.honest_calls = draw(st.integers(1 if what == "keys" else 0, 2))
    if what == "poison":
        key = draw(st.sampled_from(hostile.keys))
        where = draw(st.floats(0, 1, exclude_max=True))
        hostile.poison = (key, where, draw(st.sampled_from([np.nan, np.inf, -np.inf])))
    elif what == "raise":
        hostile.raises = (draw(st.sampled_from(RAISED)), f"hostile {draw(st.integers(0, 99))}")
    elif what == "keys":
        # Dropping the only key would leave none, a different break.
        keys = [k for k in GRAD_NAMES if k not in hostile.keys or len(hostile.keys) > 1]
        key = draw(st.sampled_from(keys))
        hostile.breaks = [_keys_change(key, drop=key in hostile.keys)]
    else:
        key = draw(st.sampled_from(hostile.keys))
        hostile.breaks = [draw(key_breaks(key, _allowed(hostile.dtype)) | whole_breaks())]
    return hostile


PARKED = SimpleNamespace(fn=None)
"""`bptt-ref check` loads its target by name, so each drawn function is parked here."""
MAX_T = MAX_H = 3  # small cases: fn and the oracle stay fast
# A turncoat turns after a count of calls, so each case is called once (repeat 1) to keep
# that count the test's own: a second call of a case would meet the turn as
# nondeterminism, tests/test_kernel_checks.py's subject. No boundary sizes: small cases.


@pytest.fixture(scope="module")
def save_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where reproducers go: one directory for every example, not a new temporary one."""
    return tmp_path_factory.mktemp("check")


def _api(hostile: Hostile, save_dir: Path, examples: int) -> tuple[Any, list[list[str]]]:
    """check_gradients' result, or the ProtocolError it raised; and what the error must say."""
    fn, said = hostile.build()
    try:
        result = check_gradients(
            fn,
            **hostile.config,
            dtype=hostile.dtype,
            max_examples=examples,
            max_T=MAX_T,
            max_H=MAX_H,
            sizes="small",
            repeat=1,
            save_dir=save_dir,
        )
    except ProtocolError as error:
        return error, said
    return result, said


def _cli(hostile: Hostile, save_dir: Path, examples: int) -> tuple[int, str, str, list[list[str]]]:
    """``bptt-ref check``'s exit code, stdout and stderr (whitespace runs made one space)."""
    fn, said = hostile.build()
    PARKED.fn = fn
    config = [f"--{name}={value}" for name, value in hostile.config.items()]
    argv = [
        "check", f"{__name__}:PARKED.fn", *config, f"--dtype={hostile.dtype}",
        f"--examples={examples}", f"--max-T={MAX_T}", f"--max-H={MAX_H}",
        "--sizes=small", "--repeat=1", f"--save-dir={save_dir}",
    ]  # fmt: skip
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, " ".join(out.getvalue().split()), " ".join(err.getvalue().split()), said


def _says(message: str, said: list[list[str]]) -> bool:
    """Whether the message holds every fragment of one break (one break is reported)."""
    text = " ".join(message.split())
    return any(fragments and all(f in text for f in fragments) for fragments in said)


def _assert_protocol_error(hostile: Hostile, save_dir: Path, examples: int) -> None:
    outcome, said = _api(hostile, save_dir, examples)
    assert isinstance(outcome, ProtocolError), f"{hostile} was judged, not refused: {outcome}"
    message = str(outcome)
    assert _says(message, said), f"the error does not say {said}: {message}"
    if hostile.signature is None:
        assert "on Case(T=" in message, message  # the case it happened on
    code, out, err, said = _cli(hostile, save_dir, examples)
    assert code == 2, out + err
    assert err.startswith("bptt-ref check: protocol error: "), err
    assert _says(err, said), f"the error does not say {said}: {err}"


# Each example runs check_gradients' own Hypothesis search inside this one: a nested
# @given, kept linear because the inner search fails on fn's first call. Under pytest the
# inner search formats each failure it shrinks through as a pytest traceback with
# --showlocals, most of an example's ~0.1 s: hence a fixed 200 examples, in CI too.
@settings(max_examples=200, suppress_health_check=[HealthCheck.nested_given])
@given(hostile=protocol_breakers())
def test_check_refuses_every_protocol_break_by_name(hostile: Hostile, save_dir: Path) -> None:
    _assert_protocol_error(hostile, save_dir, examples=2)


# The oracle judges every honest and poisoned answer, and a report probes fn on cut
# cases for its hints: fewer examples.
@settings(max_examples=30, suppress_health_check=[HealthCheck.nested_given])
@given(hostile=turncoats())
def test_check_catches_fn_turning_hostile(hostile: Hostile, save_dir: Path) -> None:
    examples = hostile.honest_calls + 2
    if hostile.breaks:
        _assert_protocol_error(hostile, save_dir, examples)
        return
    result, _ = _api(hostile, save_dir, examples)
    assert isinstance(result, CheckResult), result
    report = result.report
    assert report is not None, f"{hostile} passed"
    code, out, err, _ = _cli(hostile, save_dir, examples)
    assert code == 1, out + err
    if hostile.poison is not None:
        key = hostile.poison[0]
        assert report.error is None, report.error
        assert report.wrong_keys == [key]
        assert any(f"{key} contains NaN or inf" in hint for hint in report.hints), report.hints
        assert f"wrong keys: {key} (right:" in out, out
    else:
        assert hostile.raises is not None
        kind, message = hostile.raises[0].__name__, hostile.raises[1]
        assert report.error is not None
        assert report.verdicts == []
        for text in (report.error, out):
            assert kind in text, text
            assert message in text, text
        assert "raised an exception" in out, out


HOSTILE_FILES = {
    "ragged": (
        "def grad(params, xs, targets):\n    return {'b_h': [[0.0] * len(params['b_h']), 0.0]}\n",
        "returned b_h that NumPy cannot read as an array",
    ),
    "loss-and-grads": (
        "def grad(params, xs, targets):\n    return float('nan'), {'W': params['W'] * 0}\n",
        "returned a tuple",
    ),
    "nan-loss-key": (
        "def grad(params, xs, targets):\n    return {'W': params['W'] * 0, 'loss': 'nan'}\n",
        "returned unknown keys ['loss']",
    ),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_FILES))
def test_check_command_exits_2_on_a_hostile_file(tmp_path: Path, name: str) -> None:
    source, message = HOSTILE_FILES[name]
    path = tmp_path / "hostile.py"
    path.write_text(source)
    command = [sys.executable, "-m", "bptt_ref.cli", "check", f"{path}:grad", "--examples=2"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    done = subprocess.run(
        command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert message in " ".join(done.stderr.split()), done.stderr
