r"""The seed note's form of the gradient: one loss term at a time, as a sum over earlier steps.

For one loss term :math:`L_t = \sum_b \mathrm{loss}(\hat y_{t,b}, y_{t,b})` the note writes

.. math::
    \frac{\partial L_t}{\partial W}
    = \frac{\partial L_t}{\partial \hat y_t}\frac{\partial \hat y_t}{\partial h_t}
      \sum_{k=0}^{t}\Bigl(\prod_{i=k+1}^{t}\frac{\partial h_i}{\partial h_{i-1}}\Bigr)
      \frac{\partial h_k}{\partial W}

with :math:`\partial h_k/\partial W` the *immediate* partial (``h_{k-1}`` held fixed). In the
contract's batched row-vector notation (``a_k = x_k Vᵀ + h_{k-1} Wᵀ + b_h``, one row per
batch element b, and h_{k-1} the state step k starts from: ``h0`` for k = 0):

- ``∂h_{k,b}/∂h_{k-1,b} = diag(f_h'(a_{k,b})) W``   (H, H) per row, zero across rows;
- ``∂h_{k,b}/∂W[p, q] = e_p f_h'(a_{k,b})_p h_{k-1,b,q}``: an outer product, kept as the pair
  ``(f_h'(a_k), h_{k-1})``; ``∂h_k/∂V`` is the pair ``(f_h'(a_k), x_k)`` and ``∂h_k/∂b_h``
  is ``diag(f_h'(a_k))``;
- ``∂L_t/∂ŷ_t · ∂ŷ_t/∂h_t = g_t U`` with ``g_t = ∂L_t/∂z_t`` (T, B, O) from
  :func:`bptt_ref._losses.loss_grad_logits`: the product is taken through the logits
  because cross-entropy's stable form lives there.

Three implementations return the *per-term* gradients ``dL_t/dθ`` of every loss term, shape
(T, *θ.shape), for θ in ``U, V, W, b_h, b_y, h0, xs``; summed over their first axis they are
:func:`bptt_ref.loss_and_grad`'s gradient. They share one signature, so a benchmark can
call :func:`literal_grads`, :func:`chains_grads`, :func:`vectorized_grads` and
``loss_and_grad`` (the reverse accumulation, which returns the sum only) the same way:

=====================  ==========================================  ==================
form                   what it does                                cost
=====================  ==========================================  ==================
``literal_grads``      materializes each Π ∂h_i/∂h_{i-1} (H, H)     O(T²·B·H³)
``chains_grads``       one vector-Jacobian chain per term, looped   O(T²·B·H²), T² steps
``vectorized_grads``   all T chains, one batched product per step   O(T²·B·H²), T steps
``loss_and_grad``      the δ recurrence, sum over terms only         O(T·B·H²)
=====================  ==========================================  ==================
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from bptt_ref._activations import HIDDEN, Array
from bptt_ref._losses import loss_grad_logits, loss_sum
from bptt_ref._rnn import _run
from bptt_ref._validate import check_inputs, check_names
from bptt_ref.config import Config, Model, model_of

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "StepJacobians",
    "chains_grads",
    "jacobian_product_norms",
    "lag_contributions",
    "literal_grads",
    "step_jacobians",
    "vectorized_grads",
]

Grads = dict[str, Array]

_IMMEDIATE = ("W", "V", "b_h")


class StepJacobians(NamedTuple):
    """The per-step Jacobians of ``h_k = f_h(x_k Vᵀ + h_{k-1} Wᵀ + b_h)``, kept factored.

    Attributes:
        slope: ``f_h'(a_k)``, shape (T, B, H).
        h_prev: ``h_{k-1}`` (``h0`` for k = 0), shape (T, B, H).
        xs: ``x_k``, shape (T, B, D).
        W: the recurrent weight, shape (H, H).
        V: the input weight, shape (H, D).

    Every Jacobian is block-diagonal over the batch (row b of ``h_k`` depends on row b of
    ``h_{k-1}`` only), so each method returns one block per batch row.
    """

    slope: Array
    h_prev: Array
    xs: Array
    W: Array
    V: Array

    def recurrent(self, k: int | None = None) -> Array:
        """``∂h_{k,b}/∂h_{k-1,b} = diag(f_h'(a_{k,b})) W``: shape (B, H, H), or (T, B, H, H)
        for every step when ``k`` is None. Materialized: O(B·H²) per step."""
        slope = self.slope if k is None else self.slope[k]
        blocks: Array = slope[..., :, None] * self.W
        return blocks

    def immediate(self, name: str, k: int) -> Array:
        """The dense immediate partial ``∂h_{k,b}/∂θ`` of one step, ``h_{k-1}`` held fixed.

        Shapes: W (B, H, H, H), V (B, H, H, D), b_h (B, H, H), xs (B, H, D) (the last is
        ``∂h_{k,b}/∂x_{k,b} = diag(f_h'(a_{k,b})) V``). Entry ``[b, i, ...]`` is the
        derivative of ``h_{k,b,i}``. This is what :meth:`pull` avoids forming: W's is
        H times larger than the two vectors it is built from.
        """
        slope = self.slope[k]
        B, H = slope.shape
        dense: Array
        if name == "xs":
            dense = slope[:, :, None] * self.V
            return dense
        if name == "b_h":
            dense = slope[:, :, None] * np.eye(H, dtype=slope.dtype)
            return dense
        inputs = self._inputs(name, k)
        dense = np.zeros((B, H, H, inputs.shape[-1]), dtype=slope.dtype)
        rows = np.arange(H)
        dense[:, rows, rows, :] = slope[:, :, None] * inputs[:, None, :]
        return dense

    def pull(self, name: str, k: int, v: Array) -> Array:
        """``Σ_b v_b ∂h_{k,b}/∂θ`` for a row cotangent ``v`` (B, H) on ``h_k``, unmaterialized.

        ``u = v ⊙ f_h'(a_k)`` is the cotangent on ``a_k``; then W: ``uᵀ h_{k-1}`` (H, H),
        V: ``uᵀ x_k`` (H, D), b_h: ``Σ_b u_b`` (H,), xs: ``u V`` (B, D).
        """
        u = v * self.slope[k]
        pulled: Array
        if name == "b_h":
            pulled = u.sum(axis=0)
        elif name == "xs":
            pulled = u @ self.V
        else:
            pulled = u.T @ self._inputs(name, k)
        return pulled

    def _inputs(self, name: str, k: int) -> Array:
        inputs: Array
        if name == "W":
            inputs = self.h_prev[k]
        elif name == "V":
            inputs = self.xs[k]
        else:
            raise ValueError(f"no immediate partial for {name!r}; expected one of W, V, b_h, xs")
        return inputs


def step_jacobians(params: Mapping[str, Any], xs: Any, *, hidden: str = "tanh") -> StepJacobians:
    """The factored Jacobians of every step of the forward pass (see :class:`StepJacobians`).

    Args:
        params: ``U`` (O, H), ``V`` (H, D), ``W`` (H, H), ``b_h`` (H,), ``b_y`` (O,),
            ``h0`` (B, H).
        xs: inputs, shape (T, B, D).
        hidden: name of ``f_h``.
    """
    check_names(hidden, "identity")
    p, x, _ = check_inputs(params, xs)
    run = _run(p, x, hidden, "identity")
    return _jacobians(p, x, run.states, HIDDEN[hidden].df(run.a, run.states[1:]))


def _jacobians(p: Mapping[str, Array], x: Array, states: Array, slope: Array) -> StepJacobians:
    return StepJacobians(slope=slope, h_prev=states[:-1], xs=x, W=p["W"], V=p["V"])


class _Pass(NamedTuple):
    """One checked forward pass with what every backward form needs."""

    params: dict[str, NDArray[np.floating]]
    xs: NDArray[np.floating]
    states: Array  # (T + 1, B, H), states[k + 1] = h_k
    g: Array  # (T, B, O): ∂L_t/∂z_t
    top: Array  # (T, B, H): ∂L_t/∂h_t through the output only, g_t U
    slope: Array  # (T, B, H): f_h'(a_t)
    losses: Array  # (T,): L_t
    total: float  # L, summed as loss_and_grad sums it


def _forward(params: Mapping[str, Any], xs: Any, targets: Any, model: Model) -> _Pass:
    _, hidden, output, loss = model
    p, x, y = check_inputs(params, xs, targets, loss=loss)
    assert y is not None
    run = _run(p, x, hidden, output)
    states, a, z, y_hat = run.states, run.a, run.z, run.y_hat
    g = loss_grad_logits(output, loss, z, y_hat, y)
    losses = np.array(
        [loss_sum(loss, z[t], y_hat[t], y[t]) for t in range(x.shape[0])], dtype=x.dtype
    )
    total = float(loss_sum(loss, z, y_hat, y))
    return _Pass(p, x, states, g, g @ p["U"], HIDDEN[hidden].df(a, states[1:]), losses, total)


def _head_grads(g: Array, h: Array) -> Grads:
    """``dL_t/dU = g_tᵀ h_t`` and ``dL_t/db_y = Σ_b g_{t,b}``: no recurrence (the note's U line)."""
    return {"U": g.swapaxes(-1, -2) @ h, "b_y": g.sum(axis=1)}


def _immediate_inputs(states: Array, x: Array) -> Array:
    """``[h_{k-1}, x_k, 1]`` for every step, (T, B, H + D + 1): one product of a cotangent
    ``u_k`` with it gives ``[dW, dV, db_h]`` of that step."""
    T, B, _ = x.shape
    return np.concatenate([states[:-1], x, np.ones((T, B, 1), states.dtype)], axis=-1)


def _split_immediate(joint: Array, H: int) -> Grads:
    return {"W": joint[..., :H], "V": joint[..., H:-1], "b_h": joint[..., -1]}


def _assemble(
    p: Mapping[str, Array], x: Array, states: Array, g: Array, u: Array, h0_ct: Array
) -> Grads:
    """Every gradient from the cotangents on the pre-activations and on ``h0``.

    ``u`` (T, B, H) is ``∂L/∂a_k`` and ``h0_ct`` (B, H) the cotangent on ``h0``. Then
    ``dW = Σ_k u_kᵀ h_{k-1}``, ``dV = Σ_k u_kᵀ x_k``, ``db_h = Σ_{k,b} u_{k,b}``,
    ``dx_k = u_k V``; the first three are one matrix product over the T·B rows,
    ``uᵀ [h_{k-1}, x_k, 1]``. ``p``: the parameters; ``x`` (T, B, D); ``states``
    (T + 1, B, H); ``g`` (T, B, O).
    """
    T, B, H = u.shape
    O, D = g.shape[2], x.shape[2]
    inputs = _immediate_inputs(states, x)
    rows = u.reshape(T * B, H)
    rows_g = g.reshape(T * B, O)
    return {
        "U": rows_g.T @ states[1:].reshape(T * B, H),
        "b_y": rows_g.sum(axis=0),
        **_split_immediate(rows.T @ inputs.reshape(T * B, inputs.shape[-1]), H),
        "h0": h0_ct,
        "xs": (rows @ p["V"]).reshape(T, B, D),
    }


# float32 chains are carried in float64: a chain through a contracting W decays to
# float32's subnormals within about a hundred steps, and x86 arithmetic on subnormals
# (in the product with W, too) is about 100 times slower. Every u is stored in the
# input dtype, with values below tiny/eps flushed to zero (2^-103 ≈ 1e-31 in float32,
# 2^-970 in float64): then u times any factor above eps in magnitude, as in the
# products with h, x and V that make the gradients, is a normal number. Flushing at
# tiny alone left those products subnormal: the float32 per-term products at
# B = 32, H = 128, T = 100 took 213 ms, 77 ms with this flush. A flushed u moves a
# gradient entry by less than 1e-31 times the factors it multiplies.
def _chain_setup(W: Array, dtype: np.dtype[Any]) -> tuple[Array, float]:
    """W in float64, the chains' precision, and the flush floor tiny/eps of ``dtype``."""
    info = np.finfo(dtype)
    return W.astype(np.float64), float(info.tiny / info.eps)


def _onto_pre_activations(c: Array, slope_k: Array, floor: float) -> Array:
    """``u = c ⊙ f_h'(a_k)`` in place of ``c``, with values below ``floor`` flushed to zero."""
    u = np.multiply(c, slope_k, out=c)
    np.copyto(u, 0, where=np.abs(u) < floor)
    return u


def _chain_cotangents(
    top: Array,
    slope: Array,
    W: Array,
    starts: NDArray[np.intp] | None = None,
    *,
    live: NDArray[np.bool_] | None = None,
) -> tuple[Array, Array]:
    """Run the reverse chains of the loss terms back through time and sum them.

    Chain t carries ``c_{t,k} = ∂L_t/∂h_k`` (B, H) from ``c_{t,t} = top_t`` back to step
    ``starts[t]``; at each step k it is active on,

        u_{t,k} = c_{t,k} ⊙ f_h'(a_k),     c_{t,k-1} = u_{t,k} W,

    with ``u_{t,k} = ∂L_t/∂a_k``. The chain ends at step ``starts[t]`` (its truncation
    window); ``c_{t,-1} = ∂L_t/∂h0`` is kept only where ``starts[t] == 0``. With ``live``
    (T, B), a row that is not live at step k keeps its state, ``h_k = h_{k-1}``, so there
    ``u = 0`` and the cotangent passes unchanged: ``c_{t,k-1} = u_{t,k} W + (1 - live_k) c_{t,k}``.

    ``starts`` (T,) must be non-decreasing with ``starts[t] <= t`` (``None``: every chain
    runs back to step 0, full BPTT). Chains that end at the same step are
    indistinguishable from then on and are merged into one sum, so full BPTT runs a
    single chain (the δ recurrence) and a window of k steps runs at most k + 1; the
    chains active at step k are a contiguous range of these groups and advance as ONE
    batched product ``(n·B, H) @ (H, H)``.

    Returns ``(u, h0)``: ``Σ_t u_{t,k}`` (T, B, H) and ``Σ_t c_{t,-1}`` (B, H).
    """
    T, B, H = top.shape
    if starts is None:
        starts = np.zeros(T, dtype=np.intp)
    group_start, group = np.unique(starts, return_inverse=True)
    n_groups = len(group_start)
    # group is non-decreasing, so a group's last term is the last t in it. (Not by
    # assigning arange(T) at the repeated indices: NumPy leaves unspecified which
    # repeated assignment wins.)
    group_last = np.searchsorted(group, np.arange(n_groups), side="right") - 1
    W, floor = _chain_setup(W, top.dtype)
    # Two buffers take turns: each step reads its chains from one and writes them,
    # advanced, to the other, so the loop allocates nothing. Groups not yet entered are
    # zero in both; groups that have ended are never read again.
    carry = np.zeros((n_groups, B, H))  # float64, NumPy's default
    spare = np.zeros_like(carry)
    u_sum = np.zeros((T, B, H), dtype=top.dtype)
    for k in range(T - 1, -1, -1):
        carry[group[k]] += top[k]
        # Active: groups with a term at or after k (entered) whose window reaches k.
        lo = int(np.searchsorted(group_last, k))
        hi = int(np.searchsorted(group_start, k, side="right"))
        c = carry[lo:hi]
        held = None if live is None else c * ~live[k][:, None]
        u = _onto_pre_activations(c, slope[k], floor)
        if live is not None:
            u *= live[k][:, None]
        u_sum[k] = u.sum(axis=0)
        rows = (hi - lo) * B
        advanced = spare[lo:hi]
        np.matmul(u.reshape(rows, H), W, out=advanced.reshape(rows, H))
        if held is not None:
            advanced += held
        carry, spare = spare, carry
    return u_sum, carry[group_start == 0].sum(axis=0).astype(top.dtype)


def _term_chains(top: Array, slope: Array, W: Array, terms: range, out: Array) -> Array:
    """The reverse chains of the loss terms ``t in terms``, each kept on its own.

    The recurrence of :func:`_chain_cotangents`, every chain from ``c_{t,t} = top_t``
    back to step 0; at step k the chains with t >= k advance as ONE batched product
    ``(n·B, H) @ (H, H)``. Writes ``u_{t,k} = ∂L_t/∂a_k`` into
    ``out[t - terms.start, k]`` for k <= t, leaving the entries with k > t as they were,
    and returns ``c_{t,-1} = ∂L_t/∂h0``, (len(terms), B, H). ``terms`` is a range with
    step 1; ``out`` is at least (len(terms), terms.stop, B, H), of top's dtype.
    """
    first, n = terms.start, len(terms)
    B, H = top.shape[1:]
    W, floor = _chain_setup(W, top.dtype)
    # As in _chain_cotangents: two float64 buffers take turns, a row is zero in both
    # until its term enters at k = t.
    carry = np.zeros((n, B, H))
    spare = np.zeros_like(carry)
    for k in range(terms.stop - 1, -1, -1):
        if k >= first:
            carry[k - first] = top[k]  # the chain of term k enters
        lo = max(k - first, 0)
        u = _onto_pre_activations(carry[lo:], slope[k], floor)
        out[lo:n, k] = u
        rows = (n - lo) * B
        np.matmul(u.reshape(rows, H), W, out=spare[lo:].reshape(rows, H))
        carry, spare = spare, carry
    return carry.astype(top.dtype)


# vectorized_grads runs its chains in blocks of loss terms whose cotangents, (block, T,
# B, H), take about this many bytes, and sums each block over k before the next: the
# buffer is reused, where one (T, T, B, H) array was written afresh on every call. On
# this VM, memory the kernel has handed back to the host costs several times more to
# touch again (B = 32, H = 128, T = 100, float64, after 3 s idle: 1107 ms for the whole
# array, 525 ms in blocks of five terms); back to back the blocks were faster too (304
# against 241 ms), their cotangents still in cache when they are summed.
_TERM_BLOCK_BYTES = 1 << 24


def vectorized_grads(
    params: Mapping[str, Any],
    xs: Any,
    targets: Any,
    **config: Unpack[Config],
) -> tuple[Array, Grads]:
    r"""Per-term gradients ``dL_t/dθ`` for every t, all T chains advanced together.

    The note's sum for term t, read right to left as a vector-Jacobian chain from
    :math:`c_{t,t} = g_t U` (the row :math:`\partial L_t/\partial h_t`, one per batch row):

    .. math::
        u_{t,k} = c_{t,k}\odot f_h'(a_k),\qquad c_{t,k-1} = u_{t,k} W,\qquad k = t,\dots,0,

        \frac{dL_t}{dW} = \sum_{k=0}^{t} u_{t,k}^\top h_{k-1},\quad
        \frac{dL_t}{dV} = \sum_{k=0}^{t} u_{t,k}^\top x_k,\quad
        \frac{dL_t}{db_h} = \sum_{k,b} u_{t,k,b},\quad
        \frac{dL_t}{dx_k} = u_{t,k} V,\quad
        \frac{dL_t}{dh_0} = c_{t,-1},

        \frac{dL_t}{dU} = g_t^\top h_t,\qquad \frac{dL_t}{db_y} = \sum_b g_{t,b},

    where :math:`u_{t,k}` (B, H) is one summand of the note's sum: the cotangent
    :math:`\partial L_t/\partial h_t\,(\prod_{i=k+1}^{t} \partial h_i/\partial h_{i-1})`
    times :math:`\mathrm{diag} f_h'(a_k)`. The loss terms run in blocks of consecutive t
    (as many as fit in about 16 MB of cotangents; all T at small sizes). Within a block, the
    step back from k to k - 1 advances every chain with t >= k in ONE batched matrix
    product ``(n·B, H) @ (H, H)``; then the sums over k are one matrix product per term,
    over its steps k <= t only. O(T²·B·H²) time; memory O(T²·B·D) for the result
    ``dL_t/dx_k`` and about max(16 MB, T·B·H·itemsize) for the cotangents. float32
    chains are advanced in float64 and each ``u`` is rounded to float32; values of ``u``
    below ``tiny / eps`` of the dtype (about 1e-31 in float32) are flushed to zero, so
    that no product in the loop or the sums over k meets subnormal arithmetic, which
    would make a float32 run many times slower.

    Args:
        params: ``U`` (O, H), ``V`` (H, D), ``W`` (H, H), ``b_h`` (H,), ``b_y`` (O,),
            ``h0`` (B, H).
        xs: inputs, shape (T, B, D).
        targets: shape (T, B, O).
        config: ``hidden``, ``output``, ``loss`` as for :func:`bptt_ref.loss_and_grad`
            (``cell`` may only be ``"rnn"``: the note's forms are the vanilla RNN's).

    Returns:
        ``(losses, grads)``: ``losses`` (T,) holds ``L_t``; ``grads[θ]`` has shape
        (T, *θ.shape) with ``grads[θ][t] = dL_t/dθ`` for ``U, V, W, b_h, b_y, h0``, and
        ``grads["xs"]`` is (T, T, B, D) with ``[t, k] = dL_t/dx_k`` (zero for k > t).
        Their sums over axis 0 are ``L`` and ``loss_and_grad``'s gradients.

    Raises:
        ValueError, TypeError: as :func:`bptt_ref.loss_and_grad`.
    """
    fp = _forward(params, xs, targets, model_of(config, cells=("rnn",)))
    p, x = fp.params, fp.xs
    T, B, H = fp.top.shape
    D = x.shape[2]
    inputs = _immediate_inputs(fp.states, x)
    width = inputs.shape[-1]
    joint = np.empty_like(x, shape=(T, H, width))
    dx = np.zeros_like(x, shape=(T, T, B, D))
    h0 = np.empty_like(fp.top)
    block = max(1, _TERM_BLOCK_BYTES // max(1, fp.top.nbytes))
    u = np.empty_like(fp.top, shape=(min(block, T), T, B, H))
    for first in range(0, T, block):
        terms = range(first, min(first + block, T))
        h0[first : terms.stop] = _term_chains(fp.top, fp.slope, p["W"], terms=terms, out=u)
        # u[t, k] is only written for k <= t: contracting the steps 0..t of term t does
        # half the work of the full square.
        for t in terms:
            rows = u[t - first, : t + 1].reshape((t + 1) * B, H)
            np.matmul(rows.T, inputs[: t + 1].reshape((t + 1) * B, width), out=joint[t])
            np.matmul(rows, p["V"], out=dx[t, : t + 1].reshape((t + 1) * B, D))
    grads = _head_grads(fp.g, fp.states[1:])
    grads.update(_split_immediate(joint, H))
    grads.update({"h0": h0, "xs": dx})
    return fp.losses, grads


def chains_grads(
    params: Mapping[str, Any],
    xs: Any,
    targets: Any,
    **config: Unpack[Config],
) -> tuple[Array, Grads]:
    """Per-term gradients by one vector-Jacobian chain per loss term, in Python loops.

    The same recurrence, shapes and result as :func:`vectorized_grads`, but chain t runs on
    its own, ``k = t, …, 0``, each step one (B, H) @ (H, H) product and the immediate
    partials applied at once through :meth:`StepJacobians.pull`: T(T+1)/2 sequential steps.
    It is the form to time against :func:`vectorized_grads` (same arithmetic, T times more
    Python-level steps).
    """
    fp = _forward(params, xs, targets, model_of(config, cells=("rnn",)))
    p, x, states = fp.params, fp.xs, fp.states
    T = x.shape[0]
    jac = _jacobians(p, x, states, fp.slope)
    grads = _head_grads(fp.g, states[1:])
    for name in ("V", "W", "b_h", "h0"):
        grads[name] = np.zeros((T, *p[name].shape), dtype=x.dtype)
    grads["xs"] = np.zeros((T, *x.shape), dtype=x.dtype)
    for t in range(T):
        c = fp.top[t]  # ∂L_t/∂h_t
        for k in range(t, -1, -1):
            for name in _IMMEDIATE:
                grads[name][t] += jac.pull(name, k, c)
            grads["xs"][t, k] = jac.pull("xs", k, c)
            c = (c * fp.slope[k]) @ p["W"]  # ∂L_t/∂h_{k-1}
        grads["h0"][t] = c
    return fp.losses, grads


def _products(J: Array, t: int) -> Iterator[tuple[int, Array]]:
    """``(k, P)`` for k = t, t-1, …, -1 with ``P = Π_{i=k+1..t} J_i`` (B, H, H), newest left.

    ``J`` (T, B, H, H) holds ``∂h_i/∂h_{i-1}``; P starts as the identity (k = t, the empty
    product) and gains one factor on the right per step back: O(B·H³) each.
    """
    B, H = J.shape[1], J.shape[2]
    P = np.broadcast_to(np.eye(H, dtype=J.dtype), (B, H, H))
    for k in range(t, -1, -1):
        yield k, P
        P = P @ J[k]
    yield -1, P


def literal_grads(
    params: Mapping[str, Any],
    xs: Any,
    targets: Any,
    **config: Unpack[Config],
) -> tuple[Array, Grads]:
    r"""Per-term gradients by the note's formula with every Jacobian materialized.

    For each t and each batch row b (row vectors, ``c_t = ∂L_t/∂h_t = g_t U``):

    .. math::
        \frac{dL_t}{d\theta} = \sum_b c_{t,b} \sum_{k=0}^{t}
            \Bigl(\prod_{i=k+1}^{t} J_{i,b}\Bigr)\frac{\partial h_{k,b}}{\partial \theta},
        \qquad J_{i,b} = \mathrm{diag}(f_h'(a_{i,b}))\,W,

    for θ in W, V, b_h (dense immediate partials from :meth:`StepJacobians.immediate`),
    ``dL_t/dx_k = c_t (Π_{i=k+1..t} J_i) ∂h_k/∂x_k`` and
    ``dL_t/dh0 = c_t Π_{i=0..t} J_i`` (one factor more than the k = 0 product, reaching
    back to ``h0``); U and b_y as in :func:`vectorized_grads`. Each product is an
    (H, H) matrix, built by one more right factor per step back: O(T²·B·H³) time.
    For small sizes only; it is the executable transcription of the note.

    Shapes and return value as :func:`vectorized_grads`.
    """
    fp = _forward(params, xs, targets, model_of(config, cells=("rnn",)))
    p, x, states = fp.params, fp.xs, fp.states
    T = x.shape[0]
    jac = _jacobians(p, x, states, fp.slope)
    J = jac.recurrent()
    grads = _head_grads(fp.g, states[1:])
    for name in ("V", "W", "b_h", "h0"):
        grads[name] = np.zeros((T, *p[name].shape), dtype=x.dtype)
    grads["xs"] = np.zeros((T, *x.shape), dtype=x.dtype)
    for t in range(T):
        for k, P in _products(J, t):
            # c_t (Π J): the cotangent that reaches h_k, a row per batch element.
            reach = np.einsum("bi,bij->bj", fp.top[t], P)
            if k < 0:
                grads["h0"][t] = reach
                continue
            for name in _IMMEDIATE:
                grads[name][t] += np.einsum("bi,bi...->...", reach, jac.immediate(name, k))
            grads["xs"][t, k] = np.einsum("bi,bid->bd", reach, jac.immediate("xs", k))
    return fp.losses, grads


def lag_contributions(
    params: Mapping[str, Any],
    xs: Any,
    targets: Any,
    **config: Unpack[Config],
) -> dict[str, Array]:
    r"""Norms of each summand of the note's sum: the lag decomposition of ``dL_t/dθ``.

    Entry ``[t, k]`` (for k <= t) is the Frobenius norm of term k of the sum for ``dL_t/dθ``,

    .. math::
        \Bigl\| \sum_b c_{t,b}\Bigl(\prod_{i=k+1}^{t} J_{i,b}\Bigr)
            \frac{\partial h_{k,b}}{\partial \theta} \Bigr\|_F
        = \| u_{t,k}^\top h_{k-1} \|_F \ (W),\quad \| u_{t,k}^\top x_k \|_F \ (V),\quad
          \| \textstyle\sum_b u_{t,k,b} \| \ (b_h),

    with ``u_{t,k}`` as in :func:`vectorized_grads`; entries with k > t are 0. Plotted
    against the lag t - k, it shows how fast the contribution of the past decays
    (vanishing gradients) or grows (exploding ones).

    Args and input shapes as :func:`vectorized_grads`.

    Returns:
        ``{"W": …, "V": …, "b_h": …}``, each of shape (T, T).
    """
    fp = _forward(params, xs, targets, model_of(config, cells=("rnn",)))
    T = fp.xs.shape[0]
    u = np.zeros_like(fp.top, shape=(T, *fp.top.shape))
    _term_chains(fp.top, fp.slope, fp.params["W"], range(T), out=u)
    inputs = {"W": fp.states[:-1], "V": fp.xs}
    out = {name: np.zeros((T, T), dtype=fp.xs.dtype) for name in _IMMEDIATE}
    for k in range(T):
        for name, arr in inputs.items():
            out[name][:, k] = np.linalg.norm(np.einsum("tbi,bj->tij", u[:, k], arr[k]), axis=(1, 2))
        out["b_h"][:, k] = np.linalg.norm(u[:, k].sum(axis=1), axis=-1)
    return out


def jacobian_product_norms(params: Mapping[str, Any], xs: Any, *, hidden: str = "tanh") -> Array:
    r"""Spectral norms of the note's Jacobian products, per batch row.

    Entry ``[t, k, b]`` (for k <= t) is :math:`\|\prod_{i=k+1}^{t} J_{i,b}\|_2` with
    :math:`J_{i,b} = \mathrm{diag}(f_h'(a_{i,b})) W`; 1 on the diagonal (the empty product)
    and 0 for k > t. Materializes the products: O(T²·B·H³).

    Args:
        params: ``U`` (O, H), ``V`` (H, D), ``W`` (H, H), ``b_h`` (H,), ``b_y`` (O,),
            ``h0`` (B, H).
        xs: inputs, shape (T, B, D).
        hidden: name of ``f_h``.

    Returns:
        Array of shape (T, T, B).
    """
    jac = step_jacobians(params, xs, hidden=hidden)
    J = jac.recurrent()
    T, B = jac.slope.shape[:2]
    out: Array = np.zeros((T, T, B), dtype=jac.slope.dtype)
    for t in range(T):
        for k, P in _products(J, t):
            if k >= 0:
                out[t, k] = np.linalg.norm(P, ord=2, axis=(1, 2))
    return out
