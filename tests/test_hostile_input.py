"""Malformed input, drawn by Hypothesis, always gets the documented error.

Every public entry point that takes the model's arrays is fed a valid case with up to
two corruptions applied. With none the call must succeed; with any it must raise
``ValueError`` or ``TypeError`` whose message names an offending array (or name) and
says what was expected: never an ``IndexError``, a broadcast surprise or a silent answer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bptt_ref
from bptt_ref import finite_difference, jax_reference
from bptt_ref.strategies import Config, cases

ARRAYS = (*bptt_ref.PARAM_NAMES, "xs", "targets")


@dataclass
class Call:
    params: Any
    xs: Any
    targets: Any
    config: Config
    blame: set[str]  # names an error message may point at
    errors: set[type[Exception]]
    touched: set[str]  # the inputs a corruption changed


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
    return [name for name in ARRAYS if name in ("xs", "targets") or name in call.params]


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
    call.blame |= set(ARRAYS)
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
        call.params.pop(draw(st.sampled_from(bptt_ref.PARAM_NAMES)), None)
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


CORRUPTIONS: list[Callable[[st.DrawFn, Call], None]] = [_reshape, _retype, _poison, _keys, _names]


@st.composite
def calls(draw: st.DrawFn) -> Call:
    case = draw(cases(max_T=4, max_B=3, max_D=3, max_H=4, max_O=3))
    call = Call(
        dict(case.params), case.xs, case.targets, Config(**case.config), set(), set(), set()
    )
    for corrupt in draw(st.lists(st.sampled_from(CORRUPTIONS), max_size=2)):
        corrupt(draw, call)
    return call


ENTRY_POINTS: dict[str, Callable[[Call], object]] = {
    "loss_and_grad": lambda c: bptt_ref.loss_and_grad(c.params, c.xs, c.targets, **c.config),
    "forward": lambda c: bptt_ref.forward(
        c.params, c.xs, hidden=c.config["hidden"], output=c.config["output"]
    ),
    "jax_reference.loss_and_grad": lambda c: jax_reference.loss_and_grad(
        c.params, c.xs, c.targets, **c.config
    ),
    "directional_derivative": lambda c: finite_difference.directional_derivative(
        c.params,
        c.xs,
        c.targets,
        _direction(c),
        **c.config,
    ),
}


def _direction(c: Call) -> dict[str, Any]:
    shapes = {k: np.shape(c.params[k]) for k in bptt_ref.PARAM_NAMES if k in c.params}
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
        bptt_ref.loss_and_grad(call.params, call.xs, targets, **config)
    except (ValueError, TypeError, KeyError):
        return False
    return True
