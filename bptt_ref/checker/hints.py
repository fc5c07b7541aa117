"""Likely causes of a failure, each stated only when the evidence on the case singles it out.

Generic hints hold for every cell: NaN or inf, clipped gradients, a constant factor (a
mean for a sum, ½ in mse, a sign), truncation read off the longest right prefix of the
case, a missing sum over the batch, the loss's gradient. The vanilla RNN's hints speak
of its δ_t = ∂L/∂a_t, W and V (and probe Σ_t δ_tᵀ h_t for the h_t-in-∂L/∂W mistake);
the gated cells' hints probe their own mistakes: gate blocks read or written in another
order, one of the two biases left without a gradient, the LSTM's c carry, the GRU's z
and 1 − z. Where a mistake is another framework's convention (a gate order, the side of
the GRU's reset, a transposed recurrent kernel, z and 1 − z exchanged), the hint names
both conventions, in the names of the layout checked (:mod:`bptt_ref.layouts`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from bptt_ref import kinks
from bptt_ref.cases import SMALL_DIMS
from bptt_ref.cells import CELLS
from bptt_ref.checker.protocol import (
    GradFn,
    Hung,
    ProtocolError,
    Raised,
    Scribbled,
    call,
    judge,
    judged_under,
    pad_to,
)
from bptt_ref.checker.report import STYLE_MEANING
from bptt_ref.compare import KeyComparison, tolerance_for

if TYPE_CHECKING:
    from bptt_ref.cases import Case
    from bptt_ref.layouts import Layout

Grads = Mapping[str, NDArray[Any]]

_FORMULAS = {
    "U": "∂L/∂U = Σ_t g_tᵀ h_t",
    "V": "∂L/∂V = Σ_t δ_tᵀ x_t",
    "W": (
        "∂L/∂W = Σ_t δ_tᵀ h_{t-1}, with h_{t-1} the state step t starts from (h0 at t = 0), "
        "not h_t = f_h(a_t), the state step t computes"
    ),
    "b_h": "∂L/∂b_h = Σ_t Σ_b δ_{t,b}",
    "b_y": "∂L/∂b_y = Σ_t Σ_b g_{t,b}",
    "h0": "∂L/∂h0 = δ_0 W (with the factor W)",
    "xs": "∂L/∂x_t = δ_t V",
}
"""The RNN's gradients in terms of g_t = ∂L/∂z_t (T, B, O) and δ_t = ∂L/∂a_t (T, B, H).

The state that step t reads is h_{t-1}; before the first step that is the parameter ``h0``,
which is never called h_0 or h_{-1} here: h_0 = f_h(a_0) would read as the first computed state.
"""

_CARRIED = {"h0": "h_{t-1}", "c0": "c_{t-1}"}
"""The state step t starts from, for each initial state's key."""


def sliced(case: Case, *, T: int | None = None, B: int | None = None) -> Case:
    """The same case cut to its first T steps or first B batch rows (every initial state)."""
    t, b = slice(T), slice(B)
    states = {k: case.params[k][b] for k in CELLS[case.cell].states}
    return replace(
        case, params={**case.params, **states}, xs=case.xs[t, b], targets=case.targets[t, b]
    )


def passes(
    fn: GradFn,
    case: Case,
    keys: tuple[str, ...],
    target: str,
    timeout: float | None = None,
    kink: str | None = None,
) -> bool | None:
    """Whether fn is right on ``case`` (at a kink, by ``kink`` as in the search); ``None``
    when it raises, hangs past ``timeout``, writes into its inputs or breaks the protocol
    there."""
    try:
        _, actual = call(fn, case, keys, target, timeout=timeout)
    except (Raised, Hung, Scribbled, ProtocolError):
        return None
    return all(v.ok for v in judge(actual, case, keys, kink=kink)[1])


def kink_hint(case: Case, keys: tuple[str, ...], actual: Grads, kink: str | None) -> str | None:
    """When the check pinned the convention ``kink`` at an exact kink of ``case`` and the
    canonical ``actual`` is right under the other side: the convention it follows.

    By default (``kink=None``) both sides were tried already, so no other convention can
    make the case pass: a gradient that takes one side at some kinks and the other at
    the rest is no single convention's, and is judged wrong.
    """
    hidden = case.hidden
    if kink is None:
        return None
    mine = kinks.side(kink, hidden)
    if mine is None or not kinks.at_kink(
        case.params, case.xs, hidden, cell=case.cell, **case.network
    ):
        return None
    other = "right" if mine == "left" else "left"
    if not all(v.ok for v in judged_under(actual, case, keys, None, other)[1]):
        return None
    theirs = [c for c in kinks.CONVENTIONS if kinks.side(c, hidden) == other]
    also = f" or {', '.join(theirs[1:])}" if len(theirs) > 1 else ""
    return (
        f"your gradient matches {kinks.describe(theirs[0], hidden)}, not --kink {kink}'s "
        f"({hidden}'(0) = {kinks.SLOPES[hidden][mine]:g}), on this "
        f"case's units at exactly a = 0: pass --kink {theirs[0]}{also} (kink={theirs[0]!r} in "
        "bptt_ref.testing) or drop --kink, which accepts either one-sided derivative"
    )


def common_factor(actual: Grads, expected: Grads, keys: list[str], rtol: float) -> float | None:
    """``c`` when every key in ``keys`` is ``c × expected`` to within ``rtol``, else ``None``."""
    factors = []
    for k in keys:
        a, e = actual[k], expected[k]
        size = float(np.max(np.abs(e), initial=0.0))
        if size == 0.0 or not np.all(np.isfinite(a)):
            return None
        c = float(np.vdot(a, e) / np.vdot(e, e))
        if np.max(np.abs(a - c * e)) > rtol * abs(c) * size:
            return None
        factors.append(c)
    if not factors or any(not math.isclose(c, factors[0], rel_tol=rtol) for c in factors):
        return None
    return factors[0]


def factor_hint(
    c: float,
    wrong: list[str],
    keys: tuple[str, ...],
    dims: Mapping[str, int],
    rtol: float,
    cell: str = "rnn",
) -> str | None:
    """What a common factor ``c`` of the ``wrong`` keys says, if it says anything."""
    T, B, O = dims["T"], dims["B"], dims["O"]
    candidates = {
        "1/T": 1 / T,
        "1/B": 1 / B,
        "1/(T·B)": 1 / (T * B),
        "2": 2.0,
        "1/2": 0.5,
        "-1": -1.0,
        "0": 0.0,
    }
    named = [n for n, v in candidates.items() if math.isclose(c, v, rel_tol=rtol)]
    if not named and (len(wrong) < 3 or T * B * O == 1):
        # One or two arrays, possibly of one element, fit any factor; and with a single
        # logit every key is a multiple of its one ∂L/∂z, whatever is wrong with it.
        return None
    every = set(wrong) == set(keys)
    subject = "every wrong gradient is" if every or len(wrong) == 1 else "are"
    if not every:
        subject = f"{', '.join(wrong)} {subject.rsplit(' ', 1)[-1]}"
    head = f"{subject} {c:.6g} × the reference"
    if named and named[0] in ("1/T", "1/B", "1/(T·B)"):
        dim = {"1/T": "time steps", "1/B": "batch rows", "1/(T·B)": "time steps and rows"}
        what = "the loss is a mean" if every else f"{', '.join(wrong)} averaged"
        return (
            f"{head} = {named[0]} (T={T}, B={B}): {what} over {dim[named[0]]}; "
            "the contract's L = Σ_t Σ_b loss(ŷ_{t,b}, y_{t,b}) is a sum"
        )
    if named and named[0] in ("2", "1/2") and every:
        return (
            f"{head}: a factor {named[0]} in the loss; mse is ½ Σ_o (ŷ_o - y_o)², "
            "whose gradient is ŷ - y"
        )
    if named and named[0] == "0":
        return f"{head}: zeros where the reference is not; a time step (t = 0?) is skipped"
    if named and named[0] == "-1":
        if every:
            return f"{head}: a sign error in ∂L/∂z, e.g. y - ŷ for ŷ - y"
        if cell == "rnn":
            return (
                f"{head}: a sign error in what they share (for V, W, b_h, h0, xs: δ_t, e.g. f_h')"
            )
        return f"{head}: a sign error in what they share"
    if not every:
        return None  # a factor on some keys only: the per-key hints say more
    return f"{head}: a constant factor in the loss or in ∂L/∂z"


def clip_level(
    actual: Grads, expected: Grads, wrong: list[str], rtol: float
) -> tuple[float, int, str] | None:
    """``(c, n, example)`` when the wrong keys look clipped to ±c, else ``None``.

    Clipped means: each of the n wrong entries (off by more than ``rtol`` of its key's
    largest reference entry) is ±c with the reference's sign, where the reference is
    larger than c in magnitude; no returned entry of any key exceeds c; and c is a
    threshold someone chose, of at most two significant digits. Without that last test a
    single wrong entry that is merely too small (a mean for a sum) would look clipped.
    ``example`` names one such entry with its two values.
    """
    pinned, off = [], []
    for k in wrong:
        a, e = actual[k], expected[k]
        bad = np.abs(a - e) > rtol * np.max(np.abs(e), initial=0.0)
        pinned.append(np.abs(a[bad]))
        off.append((k, a, e, bad))
    levels = np.concatenate(pinned)
    if levels.size == 0 or not np.all(np.isfinite(levels)):
        return None
    c = float(levels.max())
    largest = max(float(np.max(np.abs(a), initial=0.0)) for a in actual.values())
    for _, a, e, bad in off:
        held = np.abs(np.abs(a[bad]) - c) <= rtol * c
        beyond = np.abs(e[bad]) > c * (1 + rtol)
        if not (np.all(held) and np.all(beyond) and np.all(np.sign(a[bad]) == np.sign(e[bad]))):
            return None
    if c == 0.0 or largest > c * (1 + rtol) or not math.isclose(c, float(f"{c:.2g}"), rel_tol=rtol):
        return None
    k, a, e, bad = next(item for item in off if item[3].any())
    i = tuple(int(j) for j in np.argwhere(bad)[0])
    return c, int(levels.size), f"{k}{list(i)}: actual {a[i]:.6g}, expected {e[i]:.6g}"


def dW_with_h_t(case: Case) -> NDArray[np.float64]:
    """Σ_t δ_tᵀ h_t (H, H): the RNN's ∂L/∂W with each δ_t paired with the state its step computes.

    Appending h_t to x_t as D extra inputs with zero weights leaves the RNN as it is, and
    the gradient of those weights is Σ_t δ_tᵀ h_t.
    """
    from bptt_ref import forward, loss_and_grad

    params = {k: v.astype(np.float64) for k, v in case.params.items()}
    xs, targets = case.xs.astype(np.float64), case.targets.astype(np.float64)
    h = forward(params, xs, hidden=case.hidden, output=case.output).h
    H = params["W"].shape[0]
    widened = {**params, "V": np.concatenate([params["V"], np.zeros((H, H))], axis=1)}
    _, grads = loss_and_grad(widened, np.concatenate([xs, h], axis=-1), targets, **case.config)
    return grads["V"][:, -H:].astype(np.float64, copy=False)


def _stacked(cell: str) -> list[str]:
    """The keys whose first axis stacks one block per gate (named ``"4H"``, ``"3H"``)."""
    return [k for k, spec in CELLS[cell].params.items() if spec[0][:-1]]


def _reblocked(arrays: Grads, keys: list[str], gates: int, blocks: Any) -> dict[str, Any]:
    """``arrays`` with each of ``keys`` cut into its (G, H, ...) gate blocks, then
    ``blocks`` applied: an index list reorders them, a (G,) sign vector scales them."""
    out: dict[str, Any] = dict(arrays)
    for k in keys:
        a = arrays[k]
        split = a.reshape(gates, a.shape[0] // gates, *a.shape[1:])
        if isinstance(blocks, list):
            out[k] = split[blocks].reshape(a.shape)
        else:
            out[k] = (split * blocks.reshape(gates, *[1] * (a.ndim))).reshape(a.shape)
    return out


def _near(actual: Grads, probe: Grads, keys: tuple[str, ...], rtol: float) -> bool:
    """Whether every one of ``keys`` of ``actual`` is ``probe``'s to within ``rtol`` of its
    largest entry."""
    for k in keys:
        a, e = actual[k], np.asarray(probe[k], dtype=np.float64)
        if not np.all(np.isfinite(a)):
            return False
        if np.max(np.abs(a - e), initial=0.0) > rtol * np.max(np.abs(e), initial=0.0):
            return False
    return True


def _numpy_grads(case: Case, params: Grads) -> dict[str, NDArray[np.floating]]:
    """The NumPy reference's gradient of ``case`` at ``params``, in float64."""
    from bptt_ref import loss_and_grad

    wide = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
    xs, targets = case.xs.astype(np.float64), case.targets.astype(np.float64)
    return loss_and_grad(wide, xs, targets, cell=case.cell, **case.config)[1]


def _order_of(cell: str, layout: Layout) -> tuple[str, ...]:
    """The order in which ``layout`` stacks ``cell``'s gate blocks in one array, in the
    cell's own letters; empty where each gate has arrays of its own (Flax)."""
    w_ih = CELLS[cell].roles[0]
    for entry in layout.of(cell).entries:
        gates = tuple(p.gate for p in entry.pieces if p.key == w_ih and p.gate)
        if len(gates) > 1:
            return gates
    return ()


def _whose(cell: str, order: tuple[str, ...]) -> str:
    """`` (the order of onnx)``: the layouts that stack ``cell``'s gates in ``order``."""
    from bptt_ref.layouts import LAYOUTS

    names = [n for n, lay in LAYOUTS.items() if cell in lay.cells and _order_of(cell, lay) == order]
    return f" (the order of {', '.join(names)})" if names else ""


def _gate_order(
    case: Case,
    keys: tuple[str, ...],
    actual: Grads,
    expected: Grads,
    wrong: list[str],
    rtol: float,
    layout: Layout | None = None,
) -> str | None:
    """The gate blocks of a gated cell in another order, written or read.

    A client whose forward pass is right but whose backward stacks ∂L/∂a_t's blocks in
    the order σ returns the reference's gradients of the stacked keys with their blocks
    reordered, and every other key right. A client that reads its weights' blocks in the
    order σ computes another model, the reference's at the blocks reordered back; its
    gradient is that model's, reordered. Each is named only when one order alone fits.
    In a layout, whose blocks sit in its own order L, canonical block ``order[j]`` holds
    layout block ``L.index(order[j])``, so the order the client reads its arrays in is
    ``X[k] = σ[order.index(L[k])]``, named with the frameworks that stack their gates so.
    """
    order = CELLS[case.cell].gate_names
    if not order:
        return None
    stacked, G = _stacked(case.cell), len(order)
    written, read = [], []
    for sigma in itertools.permutations(order):
        if sigma == tuple(order):
            continue
        index = [order.index(g) for g in sigma]
        if set(wrong) <= set(stacked) and _near(
            actual, _reblocked(expected, stacked, G, index), keys, rtol
        ):
            written.append(sigma)
        back = [sigma.index(g) for g in order]
        model = _numpy_grads(case, _reblocked(case.params, stacked, G, back))
        if _near(actual, _reblocked(model, stacked, G, index), keys, rtol):
            read.append(sigma)
    own = order if layout is None else (_order_of(case.cell, layout) or order)

    def theirs_of(sigma: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(sigma[order.index(g)] for g in own)

    ours = own
    if layout is None:
        names, holder = ", ".join(stacked), "this cell"
    else:
        names = ", ".join(
            e.name
            for e in layout.of(case.cell).entries
            if any(p.gate is not None and p.key in stacked for p in e.pieces)
        )
        holder = f"layout {layout.name} ({layout.of(case.cell).convention})"
    ours_text = ", ".join(ours)
    if len(written) == 1 and not read:
        theirs = ", ".join(theirs_of(written[0]))
        return (
            f"{', '.join(wrong)} {'is' if len(wrong) == 1 else 'are'} the reference's with "
            f"the gate blocks in the order {theirs}, and the other keys are right: the "
            f"forward pass reads the gates as {ours_text}, but the backward stacks the blocks of "
            f"∂L/∂a_t as {theirs}; stack them {ours_text}, the order of {names}"
        )
    if len(read) == 1 and not written:
        theirs_order = theirs_of(read[0])
        theirs = ", ".join(theirs_order)
        mine = " (the PyTorch / cuDNN layout)" if layout is None else _whose(case.cell, ours)
        return (
            f"every returned key is the gradient of the {case.cell} that reads the gate blocks "
            f"of {names} in the order {theirs}{_whose(case.cell, theirs_order)}: {holder} "
            f"stacks them {ours_text}{mine}"
        )
    return None


def _reset_side(case: Case, keys: tuple[str, ...], actual: Grads, rtol: float) -> str | None:
    """The GRU with its reset on the other side of the recurrent product."""
    sides = {
        "gru": "after the recurrent product, r ⊙ (h_{t-1} W_hnᵀ + b_hn) (PyTorch, cuDNN, "
        "Keras reset_after=True, ONNX linear_before_reset=1, Flax)",
        "gru_reset_before": "before the recurrent product, (r ⊙ h_{t-1}) W_hnᵀ + b_hn (Cho et "
        "al. 2014, Keras reset_after=False, ONNX linear_before_reset=0)",
    }
    if case.cell not in sides:
        return None
    (other,) = set(sides) - {case.cell}
    model = _numpy_grads(replace(case, cell=other), case.params)
    if not _near(actual, model, keys, rtol):
        return None
    return (
        f"every returned key is the gradient of the GRU with the reset {sides[other]}: cell "
        f"{case.cell} places it {sides[case.cell]}; check with --cell {other} if that is the "
        "cell fn implements"
    )


def _transposed(
    case: Case, keys: tuple[str, ...], actual: Grads, rtol: float, layout: Layout | None
) -> str | None:
    """Every H×H gate block of the recurrent weight used transposed (h W for h Wᵀ).

    That cell is this one at the blocks transposed, and a client consistent with its own
    forward pass returns that cell's gradient with the blocks transposed back.
    """
    spec = CELLS[case.cell]
    w_hh, H = spec.roles[1], case.dims["H"]
    if H < 2:
        return None

    def flipped(arrays: Grads) -> dict[str, Any]:
        w = np.asarray(arrays[w_hh])
        blocks = w.reshape(spec.gates, H, H).transpose(0, 2, 1)
        return {**arrays, w_hh: blocks.reshape(w.shape)}

    if not _near(actual, flipped(_numpy_grads(case, flipped(case.params))), keys, rtol):
        return None
    if layout is None:
        name, held = w_hh, f"{w_hh} ({spec.gates * H if spec.gates > 1 else 'H'}, H) used as h Wᵀ"
    else:
        entry = next(
            e for e in layout.of(case.cell).entries if any(p.key == w_hh for p in e.pieces)
        )
        used = "h K" if entry.axes is not None else "h Kᵀ"
        name = entry.name
        held = f"{name} {layout.shape_text(case.cell, name)} used as {used}"
    return (
        f"every returned key is the gradient of the {case.cell} that uses each H×H gate block "
        f"of {name} transposed: this layout holds {held}; PyTorch and ONNX store the "
        "recurrent weight (G·H, H) used as h Wᵀ, Keras, Flax and CS231n (H, G·H) used as h W"
    )


def _c_carry(keys: tuple[str, ...], wrong: list[str]) -> str | None:
    """The LSTM's cell-state carry ∂L/∂c_{t-1} = f_t ⊙ ∂L/∂c_t, when only c0 shows it."""
    if "c0" not in wrong or "h0" in wrong or len(keys) < 2:
        return None
    rule = (
        "∂L/∂c0 = f ⊙ ∂L/∂c_t at t = 0, the forget gate of the first step times the "
        "cotangent of the cell state it computes (c_t = f ⊙ c_{t-1} + i ⊙ g carries "
        "∂L/∂c_{t-1} = f_t ⊙ ∂L/∂c_t)"
    )
    if "h0" in keys:
        lead = "only c0 is wrong" if wrong == ["c0"] else "c0 is wrong"
        return (
            f"{lead} while h0 is right: h0 = ∂L/∂a_0 W_hh shows that the first step's gates "
            f"get the right cotangent, so the error is in the c carry, which alone reaches "
            f"c0: check {rule}"
        )
    if wrong == ["c0"]:
        return f"only c0 is wrong, so what it shares with the right keys is right: check {rule}"
    return None


def _one_bias(keys: tuple[str, ...], actual: Grads, wrong: list[str]) -> str | None:
    """One of the two biases left at zero while the other is right."""
    biases = {"b_ih", "b_hh"}
    if len(wrong) != 1 or wrong[0] not in biases or not biases <= set(keys):
        return None
    (zero,) = wrong
    if np.any(actual[zero] != 0):
        return None
    (other,) = biases - {zero}
    return (
        f"{zero} is zero where the reference is not, while {other} is right: both biases "
        f"of x_t W_ihᵀ + b_ih + h_{{t-1}} W_hhᵀ + b_hh get a gradient; {zero}'s is Σ_t Σ_b "
        "of the cotangent of the product it is added to"
    )


def _z_swapped(case: Case, keys: tuple[str, ...], actual: Grads, rtol: float) -> str | None:
    """The GRU written h_t = z ⊙ n + (1 − z) ⊙ h_{t-1}.

    σ(−a) = 1 − σ(a): that GRU is this one at the z blocks of the weights and biases
    negated, and its gradient is this one's there, with the z blocks negated back.
    """
    if case.cell not in ("gru", "gru_reset_before"):
        return None
    stacked, order = _stacked(case.cell), CELLS[case.cell].gate_names
    signs = np.array([-1.0 if g == "z" else 1.0 for g in order])
    model = _numpy_grads(case, _reblocked(case.params, stacked, len(order), signs))
    if not _near(actual, _reblocked(model, stacked, len(order), signs), keys, rtol):
        return None
    return (
        "every returned key is the gradient of the GRU with z and 1 - z swapped, "
        "h_t = z ⊙ n + (1 - z) ⊙ h_{t-1} (the convention of Chung et al. 2014): this cell, "
        "as PyTorch, cuDNN, Keras, ONNX and Flax write it, keeps z ⊙ h_{t-1}: "
        "h_t = (1 - z) ⊙ n + z ⊙ h_{t-1}"
    )


def _past_a_boundary(dims: Mapping[str, int]) -> str | None:
    """For a case with a dim above the small sizes and within one of a power of two e (a
    boundary size), where a blocked kernel goes wrong; ``None`` for every other case."""
    for d, n in dims.items():
        if n <= SMALL_DIMS[d]:
            continue
        edge = 1 << round(math.log2(n))
        if abs(n - edge) > 1:
            continue
        where = {edge + 1: "one past", edge: "exactly", edge - 1: "one short of"}[n]
        return (
            f"the smallest failing {d} found is {n}, {where} {edge}, and the cases tried "
            f"with {d} ≤ {SMALL_DIMS[d]} passed: look at how fn handles {d} around a block of "
            f"{edge} (the last partial tile, vector or chunk, or a tail assumed to exist)"
        )
    return None


def hints(
    fn: GradFn,
    case: Case,
    keys: tuple[str, ...],
    actual: Grads,
    verdicts: list[KeyComparison],
    target: str,
    layout: Layout | None = None,
    timeout: float | None = None,
    kink: str | None = None,
) -> list[str]:
    """Likely causes, each stated only when the evidence on ``case`` singles it out.

    ``actual``, ``keys`` and ``verdicts`` are canonical; ``layout``, the layout ``fn``
    was checked in, only names the arrays in the convention hints; ``timeout`` bounds
    each probing call of ``fn``, as in the search; ``kink``, the convention the check
    pinned at a kink (:func:`kink_hint`), judges the probes too.
    """
    from bptt_ref import jax_reference

    at_kink = kink_hint(case, keys, actual, kink)
    if at_kink is not None:
        # Right under another convention: the probes below would describe a right gradient.
        return [at_kink]
    wrong = [v.key for v in verdicts if not v.ok]
    dims = case.dims
    T, B = dims["T"], dims["B"]
    rnn = case.cell == "rnn"
    found = []
    nonfinite = [k for k in wrong if not np.all(np.isfinite(actual[k]))]
    if nonfinite:
        found.append(
            f"{', '.join(nonfinite)} {'contains' if len(nonfinite) == 1 else 'contain'} NaN or inf "
            "on finite inputs: an edge case of "
            f"this case's inputs ({STYLE_MEANING[case.style]}), e.g. 0/0, log(0) or an "
            "overflowing exp"
        )
    # The program the search judged with (one configuration), not a second one.
    expected = jax_reference.loss_and_grad(
        case.params,
        case.xs,
        case.targets,
        cell=case.cell,
        pad_to=pad_to(dims),
        specialize=True,
        **case.config,
    )[1]
    rtol = 10 * tolerance_for(case.dtype)
    clipped = clip_level(actual, expected, wrong, rtol)
    if clipped is not None:
        # Clipping explains every wrong entry; the formula and probe hints would blame the math.
        c, n, example = clipped
        return [
            *found,
            f"{', '.join(wrong)} {'is' if len(wrong) == 1 else 'are'} ±{c:.6g}, with the "
            f"reference's sign, wherever {'it is' if len(wrong) == 1 else 'they are'} wrong, "
            f"and there the reference is larger ({n} {'entry' if n == 1 else 'entries'}; "
            f"{example}); no returned entry exceeds {c:.6g} in magnitude: the gradients look "
            f"clipped, as np.clip(dθ, -{c:g}, {c:g}) does. The check wants the gradient "
            "itself: clip after checking, in the update step",
        ]
    if rnn and "W" in wrong and np.all(np.isfinite(actual["W"])):
        with_h_t = dW_with_h_t(case)
        size = float(np.max(np.abs(with_h_t), initial=0.0))
        if size > 0 and np.max(np.abs(actual["W"] - with_h_t)) <= rtol * size:
            only = "only W is wrong, and it" if wrong == ["W"] else "W"
            found.append(
                f"{only} equals Σ_t δ_tᵀ h_t on this case: δ_t is paired with h_t = f_h(a_t), "
                "the state step t computes; ∂L/∂W = Σ_t δ_tᵀ h_{t-1} needs h_{t-1}, the "
                "state step t starts from (h0 at t = 0)"
            )
            if wrong == ["W"]:
                return found
    convention = _reset_side(case, keys, actual, rtol) or _transposed(
        case, keys, actual, rtol, layout
    )
    if convention is not None:
        return [*found, convention]
    if not rnn:
        # Each names a mistake of the cell's own exactly; the generic probes would only
        # describe its symptoms (c0 alone zero reads as "a time step skipped").
        own = _c_carry(keys, wrong) if case.cell == "lstm" else _z_swapped(case, keys, actual, rtol)
        cell_hint = (
            own
            or _one_bias(keys, actual, wrong)
            or _gate_order(case, keys, actual, expected, wrong, rtol, layout)
        )
        if cell_hint is not None:
            return [*found, cell_hint]
    factor = common_factor(actual, expected, wrong, rtol)
    explained = None if factor is None else factor_hint(factor, wrong, keys, dims, rtol, case.cell)
    if explained is not None:
        # A constant factor explains every symptom; the probes below would only echo it.
        return [*found, explained]

    prefix = [passes(fn, sliced(case, T=k), keys, target, timeout, kink) for k in range(1, T)]
    right_until = next((k for k, ok in enumerate(prefix, start=1) if not ok), T) - 1
    carried = " and ".join(_CARRIED[k] for k in CELLS[case.cell].states)
    if T >= 2 and right_until >= 1 and not any(prefix[right_until:]):
        if rnn and right_until == 1 and wrong == ["W"]:
            found.append(
                "only W is wrong, and only from T = 2 (T = 1 of this case is right): "
                "∂L/∂W = Σ_t δ_tᵀ h_{t-1} pairs δ_t with the state step t starts from; check "
                "h_{t-1} (h0 at t = 0, not h_t = f_h(a_t)) and that every step is summed"
            )
        elif right_until == 1:
            recurrent = (
                "the recurrent term of δ_t = (g_t U + δ_{t+1} W) ⊙ f_h'(a_t) "
                "(W, not Wᵀ; every step)"
                if rnn
                else f"the cotangent each step hands back to the state it starts from, {carried}"
            )
            found.append(
                f"right for T = 1 of this case, wrong from T = 2 in {', '.join(wrong)}: the "
                f"error is in what crosses time steps, {recurrent}"
            )
        else:
            what = "δ" if rnn else f"the cotangents of {carried}"
            found.append(
                f"right for T ≤ {right_until} of this case, wrong from T = {right_until + 1}: "
                f"the backward pass looks truncated after {right_until} steps; BPTT runs {what} "
                "back to t = 0 from every step"
            )
    if B >= 2 and passes(fn, sliced(case, B=1), keys, target, timeout, kink):
        found.append(
            f"right for B = 1 (the first row of this case), wrong for B = {B} in "
            f"{', '.join(wrong)}: a sum over the batch is missing or runs over the wrong axis "
            "(bias gradients are Σ_t Σ_b)"
        )
    through_cell = [k for k in (*CELLS[case.cell].params, "xs") if k in keys]
    output_side = [k for k in ("U", "b_y") if k in keys]
    single_step_wrong = T == 1 or (bool(prefix) and prefix[0] is False)
    if single_step_wrong and output_side and set(wrong) == set(through_cell):
        check = (
            f"δ_t = (g_t U) ⊙ f_h'(a_t), in particular f_h' of {case.hidden}"
            if rnn
            else "the cell's backward step from ∂L/∂h_t = g_t U: the derivatives of its gates"
        )
        found.append(
            f"{', '.join(output_side)} (which need only ∂L/∂z) are right, but every key "
            f"through {'δ' if rnn else 'the cell'} is wrong even at a single step: check {check}"
        )
    if single_step_wrong and "b_y" in wrong:
        found.append(
            f"b_y = Σ_t Σ_b ∂L/∂z_{{t,b}} is wrong even at a single step: check the gradient "
            f"of {case.loss} after {case.output} with respect to the logits z"
        )
    boundary = _past_a_boundary(dims)
    if boundary is not None:
        found.append(boundary)
    if rnn and len(wrong) == 1 and len(keys) > 1 and not found:
        found.append(
            f"only {wrong[0]} is wrong, so what it shares with the right keys is right: "
            f"check {_FORMULAS[wrong[0]]}"
        )
    return found
