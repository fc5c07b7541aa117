"""`check` against the faults of real kernels: boundary sizes, hangs, scribbled inputs,
nondeterminism, arrays of other frameworks (issue 15).

Each fault is planted (tests/planted/kernels.py) and must fail the check; a control
shows it passes where the check is blind to it (small sizes only, one call per case),
so the catching is the new check's doing. The bounds keep each run to the dims under
test: every dim with boundary sizes costs the oracle a compilation.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from planted import kernels

from bptt_ref.cases import SMALL_DIMS, boundary_sizes, size_plan
from bptt_ref.cells import CELLS
from bptt_ref.checker.protocol import as_array
from bptt_ref.cli import main
from bptt_ref.strategies import dims
from bptt_ref.testing import ProtocolError, Report, check_gradients

PLANTED_BOUNDARIES = [
    # (factory, cell, the dim past whose boundary it fails, that boundary + 1, the key)
    (kernels.last_tile_lost, "rnn", "H", 33, "W"),
    (kernels.last_chunk_lost, "rnn", "T", 65, "xs"),
    (kernels.batch_tail_lost, "rnn", "B", 9, "b_h"),
    (kernels.last_tile_lost, "lstm", "H", 33, "W_hh"),
    (kernels.last_chunk_lost, "gru", "T", 65, "xs"),
    (kernels.batch_tail_lost, "gru_reset_before", "B", 9, "b_ih"),
]
ONLY = {"T": {"max_H": 8, "max_B": 4}, "H": {"max_T": 16, "max_B": 4}, "B": {"max_T": 16}}
"""Bounds that leave T and H, or T and B, without boundary sizes, so a run compiles the
oracle for fewer dims (D and O keep theirs: the bug must be told apart from them)."""


def report_of(fn: Any, cell: str, **options: Any) -> Report:
    result = check_gradients(fn, cell=cell, max_examples=10, **options)
    assert result.report is not None, f"{fn} passed"
    return result.report


def test_boundary_sizes_sit_on_and_around_each_edge() -> None:
    assert boundary_sizes((8, 64)) == (7, 8, 9, 63, 64, 65)
    assert boundary_sizes((1, 2)) == (1, 2, 3)


@given(
    st.sampled_from(["small", "kernel", [24, 48]]),
    st.integers(1, 300),
    st.integers(1, 200),
    st.data(),
)
def test_dims_stay_in_bounds(sizes: Any, max_T: int, max_H: int, data: st.DataObject) -> None:
    drawn = data.draw(dims(sizes=sizes, max_T=max_T, max_H=max_H, max_B=5))
    assert 1 <= drawn["T"] <= max_T
    assert 1 <= drawn["H"] <= max_H
    assert 1 <= drawn["B"] <= 5
    largest = 4 if sizes == "small" else (129 if sizes == "kernel" else 49)
    assert 1 <= drawn["D"] <= largest
    assert 1 <= drawn["O"] <= largest
    # At most one dim leaves the small sizes, and only to a boundary size.
    small, boundary = size_plan(sizes, {"T": max_T, "H": max_H, "B": 5})
    large = [d for d, n in drawn.items() if not small[d][0] <= n <= small[d][1]]
    assert len(large) <= 1
    assert all(drawn[d] in boundary[d] for d in large)


def test_kernel_dims_put_every_dim_on_its_boundaries() -> None:
    seen: set[str] = set()

    @given(dims(sizes="kernel"))
    def draw(drawn: dict[str, int]) -> None:
        seen.update(d for d, n in drawn.items() if n > SMALL_DIMS[d])

    draw()
    assert seen == set("TBDHO")


def test_small_dims_never_leave_the_small_bucket() -> None:
    @given(dims())
    def draw(drawn: dict[str, int]) -> None:
        assert all(drawn[d] <= SMALL_DIMS[d] for d in drawn)

    draw()


@pytest.mark.parametrize(
    ("sizes", "message"),
    [("huge", "expected 'small', 'kernel'"), ([0, 8], "positive integers"), ([], "positive")],
)
def test_bad_sizes_are_refused(sizes: Any, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        given(dims(sizes=sizes))(lambda drawn: None)()
    with pytest.raises(ValueError, match=message):
        check_gradients(kernels.right("rnn"), sizes=sizes)


@pytest.mark.parametrize(
    ("factory", "cell", "dim", "size", "key"),
    PLANTED_BOUNDARIES,
    ids=[f"{f.__name__}-{c}" for f, c, *_ in PLANTED_BOUNDARIES],
)
def test_a_bug_past_a_boundary_is_shrunk_to_the_boundary(
    factory: Any, cell: str, dim: str, size: int, key: str
) -> None:
    report = report_of(factory(cell), cell, **ONLY[dim])
    assert report.case.dims[dim] == size, report
    assert report.wrong_keys == [key], report
    assert f"the smallest failing {dim} found is {size}, one past {size - 1}" in " ".join(
        report.hints
    ), report
    # The control: the sizes of today's default never reach the boundary.
    assert check_gradients(factory(cell), cell=cell, sizes="small", max_examples=20).ok


def test_a_list_of_edges_crosses_those_boundaries() -> None:
    # Edges 24 reach H = 25 at most, inside the first tile of 32, where this bug is silent.
    fn = kernels.last_tile_lost("rnn")
    assert check_gradients(fn, sizes=[24], max_examples=5, max_T=16, max_B=4).ok
    report = report_of(fn, "rnn", sizes=[16, 32], max_T=16, max_B=4)
    assert report.case.dims["H"] == 33


def test_the_command_crosses_the_batch_boundary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = f"{Path(kernels.__file__)}:rnn_batch_tail_lost"
    argv = ["check", target, "--examples", "10", "--max-T", "16", "--save-dir", str(tmp_path)]
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "B=9 " in out, out
    assert "wrong keys: b_h" in out
    assert main([*argv, "--sizes", "small"]) == 0


def test_a_call_that_hangs_is_named_with_its_case(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = f"{Path(kernels.__file__)}:rnn_hangs_past_a_chunk"
    argv = ["check", target, "--examples", "5", "--max-H", "8", "--max-B", "4"]
    code = main([*argv, "--timeout", "0.5", "--save-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 1
    assert "hung: no return within --timeout 0.5 s" in out, out
    assert "not shrunk" in out
    assert "reproducer:" in out
    T = int(out.split("    T=")[1].split()[0])
    assert T > kernels.CHUNK
    # The control: below the chunk the same function returns, and passes.
    assert main([*argv, "--max-T", "64", "--timeout", "0.5", "--save-dir", str(tmp_path)]) == 0


@pytest.mark.parametrize("cell", list(CELLS))
def test_writing_into_the_inputs_fails_naming_the_array(cell: str) -> None:
    report = report_of(kernels.updates_in_place(cell), cell, sizes="small")
    assert report.headline == "wrote into its inputs"
    assert report.error is not None
    assert "params['U']" in report.error
    assert "the first at [0, 0]" in report.error
    assert str(report).startswith(f"{report.target} wrote into its inputs")
    # It scribbled on its first call: the keys come from that call's return.
    case = report.case
    assert set(report.keys) == set(kernels.right(cell)(case.params, case.xs, case.targets))


def test_writing_into_xs_is_shrunk_and_located() -> None:
    report = report_of(kernels.scales_xs_in_place("rnn"), "rnn", sizes="small")
    assert report.error is not None
    assert report.error.count("entries changed") == 1
    assert "xs: " in report.error
    assert "the first at [0, 0, 1]" in report.error
    assert report.case.dims["D"] == 2
    assert report.case.dims["T"] == 1


@pytest.mark.parametrize("cell", ["rnn", "gru"])
def test_a_racy_result_fails_unless_called_once(cell: str) -> None:
    report = report_of(kernels.racy(cell), cell, sizes="small")
    assert report.headline is not None
    assert "nondeterministic beyond the bound" in report.headline
    assert report.error is not None
    assert f"{CELLS[cell].roles[2]}: two calls differ by" in report.error
    assert not report.shrunk
    assert check_gradients(kernels.racy(cell), cell=cell, sizes="small", repeat=1).ok


def test_rounding_that_changes_between_calls_passes_and_is_reported() -> None:
    result = check_gradients(
        kernels.atomic_order("lstm"), cell="lstm", sizes="small", max_examples=10
    )
    assert result.ok
    assert 0 < max(result.spread.values()) <= 1, result.spread
    exact = check_gradients(kernels.right("lstm"), cell="lstm", sizes="small", max_examples=10)
    assert exact.ok
    assert max(exact.spread.values()) == 0


def _counting(cell: str) -> tuple[Any, list[bytes]]:
    """A right ``fn`` of ``cell`` and the list of the cases it is called on, in order (each
    case by the bytes of its inputs)."""
    right = kernels.right(cell)
    seen: list[bytes] = []

    def fn(params: dict[str, Any], xs: Any, targets: Any) -> dict[str, Any]:
        seen.append(b"".join(a.tobytes() for a in (*params.values(), xs, targets)))
        return right(params, xs, targets)

    return fn, seen


def test_every_boundary_case_and_one_small_case_in_ten_is_called_again() -> None:
    fn, seen = _counting("rnn")
    assert check_gradients(fn, sizes=[8], max_examples=30).ok
    cases = list(dict.fromkeys(seen))  # in the order first called
    twice = {c for c in cases if seen.count(c) == 2}
    assert all(seen.count(c) in (1, 2) for c in cases)
    assert len(cases) > 30  # the small cases, then the sweep's
    assert twice == {cases[0], cases[10], cases[20], *cases[30:]}


def test_the_oracle_judges_a_case_while_fn_computes_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from bptt_ref import jax_reference

    plain = jax_reference.reference
    # fn and the oracle each wait here for the other: run at once they meet; run in turn,
    # fn's wait times out (and the oracle's after it).
    meet = threading.Barrier(2, timeout=2)

    def reference(*args: Any, **kwargs: Any) -> Any:
        with contextlib.suppress(threading.BrokenBarrierError):
            meet.wait()
        return plain(*args, **kwargs)

    right = kernels.right("rnn")
    met: list[bool] = []

    def fn(params: dict[str, Any], xs: Any, targets: Any) -> dict[str, Any]:
        try:
            meet.wait()
            met.append(True)
        except threading.BrokenBarrierError:
            met.append(False)
            meet.reset()
        return right(params, xs, targets)

    monkeypatch.setattr(jax_reference, "reference", reference)
    assert check_gradients(fn, sizes="small", max_examples=5, repeat=1).ok
    assert met == [True] * 5


class _DLPackOnly:
    """An array of another library that NumPy reads only through DLPack."""

    def __init__(self, array: Any) -> None:
        self._array = np.ascontiguousarray(array)

    def __dlpack__(self, **kwargs: Any) -> Any:
        return self._array.__dlpack__(**kwargs)

    def __dlpack_device__(self) -> tuple[int, int]:
        return self._array.__dlpack_device__()


class _DeviceTensor(_DLPackOnly):
    """A device array: refuses ``__array__`` (as a torch GPU tensor does) but copies itself
    to the host through DLPack."""

    def __array__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("can't convert cuda:0 device type tensor to numpy")


@pytest.mark.parametrize("wrapper", [_DLPackOnly, _DeviceTensor])
def test_arrays_that_speak_dlpack_are_read(wrapper: type) -> None:
    right = kernels.right("gru")

    def fn(params: Any, xs: Any, targets: Any) -> dict[str, Any]:
        return {k: wrapper(g) for k, g in right(params, xs, targets).items()}

    assert check_gradients(fn, cell="gru", sizes="small", max_examples=5).ok
    g = np.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(as_array(wrapper(g)), g)


def test_an_unreadable_array_is_a_protocol_error_naming_the_key() -> None:
    def fn(params: Any, xs: Any, targets: Any) -> dict[str, Any]:
        return {"W": _DeviceTensor.__new__(_DeviceTensor)}

    with pytest.raises(ProtocolError, match="returned W that NumPy cannot read"):
        check_gradients(fn, sizes="small", max_examples=2)


def test_a_float32_jax_array_is_told_how_to_enable_x64() -> None:
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    right = kernels.right("rnn")

    def fn(params: Any, xs: Any, targets: Any) -> dict[str, Any]:
        with jax.enable_x64(False):
            return {
                k: jnp.asarray(g.astype(np.float32)) for k, g in right(params, xs, targets).items()
            }

    with pytest.raises(ProtocolError, match="dtype float32") as caught:
        check_gradients(fn, sizes="small", max_examples=2)
    message = str(caught.value)
    assert 'jax.config.update("jax_enable_x64", True)' in message
    assert "JAX_ENABLE_X64=1" in message

    def fn64(params: Any, xs: Any, targets: Any) -> dict[str, Any]:
        with jax.enable_x64(True):
            return {k: jnp.asarray(g) for k, g in right(params, xs, targets).items()}

    assert check_gradients(fn64, sizes="small", max_examples=5).ok


def test_torch_tensors_are_read() -> None:
    torch = pytest.importorskip("torch")
    right = kernels.right("lstm")

    def fn(params: Any, xs: Any, targets: Any) -> dict[str, Any]:
        return {k: torch.from_numpy(g) for k, g in right(params, xs, targets).items()}

    assert check_gradients(fn, cell="lstm", sizes="small", max_examples=5).ok


@pytest.mark.parametrize(
    ("options", "message"),
    [({"timeout": 0}, "timeout is 0"), ({"repeat": 0}, "repeat is 0"), ({"max_B": 0}, "max_B")],
)
def test_bad_kernel_options_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_gradients(kernels.right("rnn"), **options)


@pytest.mark.parametrize("cell", list(CELLS))
def test_padding_a_dim_wider_leaves_the_oracle_unchanged(cell: str) -> None:
    # The checker pads every large dim to one wide bucket (pad_to): exact, as the
    # oracle's own padding is, up to the rounding of sums whose length follows the pad.
    from bptt_ref import jax_reference
    from bptt_ref.cases import make_case
    from bptt_ref.checker.protocol import pad_to

    dims = {"T": 3, "B": 9, "D": 2, "H": 5, "O": 2}
    case = make_case(
        dims=dims, hidden="tanh", output="identity", loss="mse", dtype=np.float64,
        regime="near_critical", style="normal", seed=1, cell=cell,
    )  # fmt: skip
    assert pad_to(dims) == {"B": 256}
    assert pad_to({**dims, "B": 2, "O": 17}) == {"D": 256, "O": 256}
    assert pad_to({**dims, "B": 2, "O": 17}, specialize=False) == {"O": 256}
    args = (case.params, case.xs, case.targets)
    plain = jax_reference.reference(*args, cell=cell, noise=False, **case.config)
    wide = jax_reference.reference(
        *args, cell=cell, noise=False, pad_to={"B": 256, "H": 64}, **case.config
    )
    assert wide.loss == pytest.approx(plain.loss, rel=1e-13)
    for k, g in plain.grads.items():
        np.testing.assert_allclose(wide.grads[k], g, rtol=1e-12, atol=1e-14, err_msg=k)
