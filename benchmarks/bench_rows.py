"""The rows of ``bench_bptt.py``: one registry entry per way of computing the BPTT gradient.

A row is an :class:`Implementation` in ``REGISTRY``: a name, a ``build`` function that
turns a :class:`Problem` into the closures to time (:class:`Bench`), the sizes it
supports, and optionally a peer row its time is compared with. To add a row, write

    def _mine(problem: Problem) -> Bench:
        def run() -> object:  # forward and backward, what a training step pays
            return my_loss_and_grad(problem.case.params, problem.case.xs, problem.case.targets)
        return Bench(run=run, gradients=lambda: run()[1])

and append ``Implementation("mine", _mine, "what it is", peer="jax_jacrev")`` to
``REGISTRY``. ``gradients`` returns (a subset of) the cell's gradient keys (the RNN's
``U, V, W, b_h, b_y, h0, xs``); the harness judges them against ``bptt_ref.loss_and_grad``
before anything is timed. A row runs the cells it names in ``cells`` (default: the RNN).

Every row computes the model of the README with the cell's ``tanh``, ``identity`` and
``mse``: for the RNN ``h_t = tanh(x_t Vᵀ + h_{t-1} Wᵀ + b_h)``, for the gated cells their
equations (``bptt_ref.cells``), with the head ``z_t = h_t Uᵀ + b_y`` and
``L = ½ Σ (z − y)²``.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

import bptt_ref
from bptt_ref import _rnn
from bptt_ref._validate import check_inputs
from bptt_ref.cases import Case, make_case
from bptt_ref.cells import CELLS

Gradients = Mapping[str, Any]


class Size(NamedTuple):
    """One problem size, in the issue's order (B, D, H, O, T)."""

    B: int
    D: int
    H: int
    O: int
    T: int

    @property
    def dims(self) -> dict[str, int]:
        return self._asdict()

    def __str__(self) -> str:
        return f"B={self.B} D={self.D} H={self.H} O={self.O} T={self.T}"

    def flops(self, gates: int = 1) -> tuple[int, int]:
        """Floating-point operations of the matrix products of (fwd + bwd, bwd alone).

        Forward: x_t W_ihᵀ, h_{t-1} W_hhᵀ (G·H columns each, G = ``gates``; the RNN's V, W:
        G = 1), h_t Uᵀ; backward: g_t U, the recurrent product back, the three weight
        gradients and the inputs' product: 2 flops per multiply-add, T·B rows each.
        """
        B, D, H, O, T = self
        fwd = 2 * T * B * H * (gates * (D + H) + O)
        return 3 * fwd, 2 * fwd


@dataclass(frozen=True)
class Problem:
    """The inputs every row of one size and dtype is given (the same arrays for all)."""

    size: Size
    case: Case

    @property
    def cell(self) -> str:
        return self.case.cell


def make_problem(size: Size, dtype: Any, seed: int = 0, cell: str = "rnn") -> Problem:
    """A contracting ``cell`` (spectral radius 0.5) with standard normal inputs and targets."""
    case = make_case(
        dims=size.dims,
        hidden="tanh",
        output="identity",
        loss="mse",
        dtype=np.dtype(dtype),
        regime="contracting",
        style="normal",
        seed=seed,
        cell=cell,
    )
    return Problem(size, case)


@dataclass(frozen=True)
class Bench:
    """What the harness times and checks for one row on one problem.

    Attributes:
        run: forward and backward, steady state.
        backward: the backward pass alone from a stored forward pass, if the row can.
        gradients: the gradients to judge (keys of ``bptt_ref.GRAD_NAMES``); ``None``
            for a row that computes none (the floors).
        compile_s: one-off cost before the steady state (JAX: the first call).
    """

    run: Callable[[], object]
    backward: Callable[[], object] | None = None
    gradients: Callable[[], Gradients] | None = None
    compile_s: float | None = None


def _always(size: Size) -> bool:
    return True


@dataclass(frozen=True)
class Implementation:
    """One row: how to build it, where it runs, what it is compared with.

    ``peer`` names the row whose time this one is reported against (``× peer``);
    ``blas_threads`` runs the row with BLAS limited to that many threads (threadpoolctl).
    ``cells`` are the cells it runs; for another cell the table says ``missing`` where it
    is given and leaves the row out where it is not.
    """

    name: str
    build: Callable[[Problem], Bench]
    description: str
    supports: Callable[[Size], bool] = _always
    peer: str | None = None
    blas_threads: int | None = None
    cells: tuple[str, ...] = ("rnn",)
    missing: str | None = None


def _reverse(problem: Problem) -> Bench:
    c = problem.case

    def run() -> tuple[float, dict[str, NDArray[np.floating]]]:
        return bptt_ref.loss_and_grad(c.params, c.xs, c.targets, cell=c.cell)

    if c.cell != "rnn":
        return Bench(run=run, gradients=lambda: run()[1])
    # The backward pass overwrites its forward pass in place, so each call starts from a
    # fresh copy of the one array it overwrites (T + 1, B, H + O): a copy, no arithmetic.
    fw = _rnn._run(c.params, c.xs, "tanh", "identity")

    def backward() -> dict[str, NDArray[np.floating]]:
        fresh = fw._replace(joint=fw.joint.copy())
        return _rnn._backward(fresh, c.params, c.xs, c.targets, "tanh", "identity", "mse")

    return Bench(run=run, backward=backward, gradients=lambda: run()[1])


@dataclass(frozen=True)
class FloorWork:
    """The least a cell's gradient must compute, as closures over preallocated buffers.

    ``products`` are the matrix products of ``Size.flops`` (forward, backward); ``passes``
    the elementwise passes the equations need (forward, backward), each one NumPy call
    over its whole array. ``blas_floor`` runs the products alone and ``math_floor`` both:
    a cell other than the RNN gets its floors by writing its own ``FloorWork`` builder
    and registering ``_floor(builder, elementwise=...)`` under its own row names.
    ``arrays`` names the buffers, so that a test can check that the passes compute what
    ``bptt_ref`` computes.
    """

    forward_products: Callable[[], None]
    backward_products: Callable[[], None]
    forward_passes: Callable[[], None]
    backward_passes: Callable[[], None]
    arrays: Mapping[str, NDArray[Any]]


def _rnn_floor_work(problem: Problem) -> FloorWork:
    """The RNN's products and passes for ``tanh``, ``identity`` and ``mse``.

    Products: x Vᵀ, h Uᵀ, g U, the three weight gradients and δ V over all T·B rows, and
    the 2T recurrent products with W as separate calls, as the recurrence forces any
    implementation to make them. Passes: f_h = tanh over (T, B, H); f_h′ as
    ``bptt_ref`` computes it, sech² = 1/cosh² in three passes (cosh, square,
    reciprocal); f_y is the identity, no pass; the loss ½ Σ r² with r = z − y and its
    gradient g = r over (T, B, O), one subtraction and one reduction. Left out, though
    ``loss_and_grad`` pays them: the bias adds and sums, the per-step ⊙ f_h′ and the
    input checks. Operands the passes do not write are random: the products do not
    depend on each other's values, only on their shapes.
    """
    B, D, H, O, T = problem.size
    p = problem.case.params
    dtype = problem.case.dtype
    rng = np.random.default_rng(1)

    def rand(*shape: int) -> NDArray[Any]:
        return rng.standard_normal(shape).astype(dtype)

    xs = problem.case.xs.reshape(T * B, D)
    targets = problem.case.targets.reshape(T * B, O)
    U, V, W = p["U"], p["V"], p["W"]
    # tanh writes h_t into states, so the recurrent products see bounded states, as in
    # the real forward pass; f_h′ writes into dh, which the products never read.
    states, delta, g = rand(T + 1, B, H), rand(T + 1, B, H), rand(T * B, O)
    a, da, dh = np.empty((T, B, H), dtype), np.empty((T, B, H), dtype), np.empty((T, B, H), dtype)
    z, dxs = np.empty((T * B, O), dtype), np.empty((T * B, D), dtype)
    dU, dV, dW = np.empty((O, H), dtype), np.empty((H, D), dtype), np.empty((H, H), dtype)
    h_rows, d_rows = states[1:].reshape(T * B, H), delta[:-1].reshape(T * B, H)
    W_T = np.ascontiguousarray(W.T)  # the faster layout, as loss_and_grad uses

    def forward_products() -> None:
        np.matmul(xs, V.T, out=a.reshape(T * B, H))
        for t in range(T):
            np.matmul(states[t], W_T, out=a[t])
        np.matmul(h_rows, U.T, out=z)

    def backward_products() -> None:
        np.matmul(g, U, out=da.reshape(T * B, H))
        for t in range(T):
            np.matmul(delta[t + 1], W, out=da[t])
        np.matmul(g.T, h_rows, out=dU)
        np.matmul(d_rows.T, xs, out=dV)
        np.matmul(d_rows.T, states[:-1].reshape(T * B, H), out=dW)
        np.matmul(d_rows, V, out=dxs)

    loss = np.empty((), dtype)

    def forward_passes() -> None:
        np.tanh(a, out=states[1:])
        np.subtract(z, targets, out=g)
        loss[()] = 0.5 * np.vdot(g, g)

    def backward_passes() -> None:
        with np.errstate(over="ignore"):  # as bptt_ref's sech²: cosh² overflows to inf
            np.cosh(a, out=dh)
            np.multiply(dh, dh, out=dh)
        np.reciprocal(dh, out=dh)

    arrays = {"a": a, "h": states[1:], "dh": dh, "z": z, "targets": targets, "g": g, "loss": loss}
    return FloorWork(forward_products, backward_products, forward_passes, backward_passes, arrays)


def _rnn_step_work(problem: Problem) -> FloorWork:
    """:func:`_rnn_floor_work` and what the recurrence and the API add to it in NumPy code
    of any form, the work ``math_floor`` leaves out: the bias adds (b_h over (T, B, H),
    b_y over (T, B, O)) and the bias sums; per step, the add of h_{t−1} Wᵀ into a_t (a
    product cannot accumulate into its output buffer) and, back, δ_t's ⊙ f_h′, each one
    call over (B, H); and the input checks of ``loss_and_grad``. The per-step calls run
    apart from the products, which costs them no more than interleaved."""
    w = _rnn_floor_work(problem)
    c = problem.case
    B, _, H, _, T = problem.size
    a, z, dh, g = (w.arrays[k] for k in ("a", "z", "dh", "g"))
    # Adding zeros, so the values the passes see do not drift from run to run.
    step, scratch = np.zeros((B, H), a.dtype), np.empty((B, H), a.dtype)
    b_h, b_y = c.params["b_h"], c.params["b_y"]
    d_rows = dh.reshape(T * B, H)

    def forward_passes() -> None:
        check_inputs(c.params, c.xs, c.targets, loss="mse")
        np.add(a, b_h, out=a)
        for t in range(T):
            np.add(a[t], step, out=a[t])
        np.add(z, b_y, out=z)
        w.forward_passes()

    def backward_passes() -> None:
        w.backward_passes()
        for t in range(T):
            np.multiply(dh[t], step, out=scratch)
        d_rows.sum(axis=0)
        g.sum(axis=0)

    return FloorWork(
        w.forward_products, w.backward_products, forward_passes, backward_passes, w.arrays
    )


def _gated_floor_work(problem: Problem) -> FloorWork:
    """A gated cell's products and passes, with G = 4 (LSTM) or 3 (GRU) gates.

    Products: x W_ihᵀ (G·H columns), h Uᵀ, g U, the weight gradients of W_ih, W_hh and U
    and the inputs' product over all T·B rows, and 2T recurrent products as separate calls
    (``gru_reset_before``: two a step each way, [W_hr; W_hz] and W_hn, as its recurrence
    needs r before the second). Passes, in the forms ``bptt_ref`` computes them, over
    whole arrays: the logistic pair (``logistic_pair``: scale, cap, exp, add, reciprocal,
    multiply) over the σ gates, tanh of the candidate, the state update, the gate slopes
    σ'(a) = σ(a) σ(−a) and the ones tanh's derivative needs (LSTM: sech²(a_g) from the same
    pair, sech²(c_t) from cosh; GRU: sech²(a_n) from cosh), the products of each slope with
    the value its gate multiplies, and the loss and ∂L/∂z as for the RNN. Left out, as for
    the RNN: the bias adds and sums, the per-step products with the cotangents and the
    input checks.
    """
    B, D, H, O, T = problem.size
    c = problem.case
    p, dtype, cell = c.params, c.dtype, c.cell
    G = CELLS[cell].gates
    rng = np.random.default_rng(1)

    def rand(*shape: int) -> NDArray[Any]:
        return rng.standard_normal(shape).astype(dtype)

    def empty(*shape: int) -> NDArray[Any]:
        return np.empty(shape, dtype)

    xs = c.xs.reshape(T * B, D)
    targets = c.targets.reshape(T * B, O)
    U, W_ih, W_hh = p["U"], p["W_ih"], p["W_hh"]
    W_hh_T = np.ascontiguousarray(W_hh.T)
    W_rz_T, W_hn_T = np.ascontiguousarray(W_hh_T[:, : 2 * H]), W_hh_T[:, 2 * H :]
    states, cells, g = rand(T + 1, B, H), rand(T + 1, B, H), rand(T * B, O)
    delta = rand(T, B, G * H)
    a, step, e, value, slope = (empty(T, B, G * H) for _ in range(5))
    dh, tanh_c, work = empty(T * B, H), empty(T, B, H), empty(T, B, H)
    z, dxs = empty(T * B, O), empty(T * B, D)
    dU, dW_ih, dW_hh = empty(O, H), empty(G * H, D), empty(G * H, H)
    h, h_prev = states[1:], states[:-1]
    h_rows, d_rows = h.reshape(T * B, H), delta.reshape(T * B, G * H)
    back = empty(B, H)
    # lstm: gates i, f, g, o with σ(2a_g) in the pair (scale 2); gru: r, z, n, the pair
    # over r and z.
    sigmoids = slice(0, G * H if G == 4 else 2 * H)
    scale = np.repeat(np.array([1, 1, 2, 1] if G == 4 else [1, 1], dtype), H)
    cap = np.floor(np.log(np.finfo(dtype).max))

    def forward_products() -> None:
        np.matmul(xs, W_ih.T, out=a.reshape(T * B, G * H))
        for t in range(T):
            if cell == "gru_reset_before":
                np.matmul(states[t], W_rz_T, out=step[t, :, : 2 * H])
                np.matmul(states[t], W_hn_T, out=step[t, :, 2 * H :])
            else:
                np.matmul(states[t], W_hh_T, out=step[t])
        np.matmul(h_rows, U.T, out=z)

    def backward_products() -> None:
        np.matmul(g, U, out=dh)
        for t in range(T):
            if cell == "gru_reset_before":
                np.matmul(delta[t, :, 2 * H :], W_hh[2 * H :], out=back)
                np.matmul(delta[t, :, : 2 * H], W_hh[: 2 * H], out=back)
            else:
                np.matmul(delta[t], W_hh, out=back)
        np.matmul(g.T, h_rows, out=dU)
        np.matmul(d_rows.T, xs, out=dW_ih)
        np.matmul(d_rows.T, h_prev.reshape(T * B, H), out=dW_hh)
        np.matmul(d_rows, W_ih, out=dxs)

    loss = np.empty((), dtype)
    a_s, e_s, v_s = a[..., sigmoids], e[..., sigmoids], value[..., sigmoids]

    def forward_passes() -> None:
        np.multiply(a_s, -scale, out=e_s)
        np.minimum(e_s, cap, out=e_s)
        np.exp(e_s, out=e_s)
        np.add(e_s, 1, out=v_s)
        np.reciprocal(v_s, out=v_s)
        np.multiply(e_s, v_s, out=e_s)
        if G == 4:
            i, f, _, o = np.split(value, 4, axis=-1)
            g_t = step[..., 2 * H : 3 * H]  # tanh(a_g), beside the products' columns
            np.tanh(a[..., 2 * H : 3 * H], out=g_t)
            np.multiply(f, cells[:-1], out=cells[1:])
            np.multiply(i, g_t, out=work)
            np.add(cells[1:], work, out=cells[1:])
            np.tanh(cells[1:], out=tanh_c)
            np.multiply(o, tanh_c, out=h)
        else:
            r, z_gate = value[..., :H], value[..., H : 2 * H]
            m, n = step[..., 2 * H :], value[..., 2 * H :]
            np.multiply(r, m, out=work)
            np.add(a[..., 2 * H :], work, out=n)
            np.tanh(n, out=n)
            np.multiply(e[..., H : 2 * H], n, out=work)
            np.multiply(z_gate, h_prev, out=h)
            np.add(h, work, out=h)
        np.subtract(z, targets, out=g)
        loss[()] = 0.5 * np.vdot(g, g)

    def backward_passes() -> None:
        np.multiply(v_s, e_s, out=slope[..., sigmoids])
        if G == 4:
            # The slopes times the values their gates multiply: g, c_{t-1}, 4i, tanh(c_t).
            d_i, d_f, d_g, d_o = np.split(slope, 4, axis=-1)
            np.multiply(d_i, step[..., 2 * H : 3 * H], out=d_i)
            np.multiply(d_f, cells[:-1], out=d_f)
            np.multiply(value[..., :H], 4, out=work)
            np.multiply(d_g, work, out=d_g)
            np.multiply(d_o, tanh_c, out=d_o)
            sech2 = value[..., 2 * H : 3 * H]  # unused by the gates: σ(2a_g) is in slope
            cosh_of = cells[1:]
        else:
            # P_r = σ'(a_r) m, P_n = (1 − z) sech²(a_n), P_z = σ'(a_z) (h_{t−1} − n).
            np.multiply(slope[..., :H], step[..., 2 * H :], out=slope[..., :H])
            np.subtract(h_prev, value[..., 2 * H :], out=work)
            np.multiply(slope[..., H : 2 * H], work, out=slope[..., H : 2 * H])
            sech2 = slope[..., 2 * H :]
            cosh_of = a[..., 2 * H :]
        with np.errstate(over="ignore"):  # as bptt_ref's sech²: cosh² overflows to inf
            np.cosh(cosh_of, out=sech2)
            np.multiply(sech2, sech2, out=sech2)
        np.reciprocal(sech2, out=sech2)
        # ∂h_t/∂c_t = o sech²(c_t) (LSTM); (1 − z) sech²(a_n) (GRU)
        factor = value[..., 3 * H :] if G == 4 else e[..., H : 2 * H]
        np.multiply(factor, sech2, out=sech2)

    arrays = {"a": a, "value": value, "complement": e, "slope": slope, "scale": scale}
    return FloorWork(forward_products, backward_products, forward_passes, backward_passes, arrays)


def _floor_work(problem: Problem) -> FloorWork:
    """The problem's cell's :class:`FloorWork`."""
    return (_rnn_floor_work if problem.cell == "rnn" else _gated_floor_work)(problem)


def _floor(
    work: Callable[[Problem], FloorWork], *, elementwise: bool
) -> Callable[[Problem], Bench]:
    """A floor row: ``work``'s products, and with ``elementwise`` its passes too."""

    def build(problem: Problem) -> Bench:
        w = work(problem)

        def backward() -> None:
            if elementwise:
                w.backward_passes()
            w.backward_products()

        def run() -> None:
            w.forward_products()
            if elementwise:
                w.forward_passes()
            backward()

        return Bench(run=run, backward=backward)

    return build


def _ready(x: object) -> object:
    import jax

    return jax.block_until_ready(x)  # type: ignore[no-untyped-call]


def _jax_build(problem: Problem, *, per_step: bool) -> Bench:
    import jax
    import jax.numpy as jnp

    from bptt_ref import jax_reference

    c = problem.case
    T, B, O = c.targets.shape
    arrays = {k: jnp.asarray(v) for k, v in {**c.params, "xs": c.xs}.items()}
    targets = jnp.asarray(c.targets)
    # All-true masks and fixed indices are closed over, so XLA folds them away and the
    # scan is the plain cell of the README (the oracle's step of bptt_ref.oracle.cells);
    # textbook=True is jax.nn's sigmoid and tanh, what a user of JAX would write.
    masks = (jnp.ones(T, bool), jnp.ones(B, bool), jnp.ones(O, bool))
    hidden_index = list(jax_reference.HIDDEN).index("tanh")
    head_index = list(jax_reference.HEADS).index(("identity", "mse"))

    def losses(arrays: Mapping[str, jax.Array]) -> jax.Array:
        return jax_reference.step_losses(
            arrays, targets, masks, hidden_index, head_index, textbook=True, cell=c.cell
        )

    if per_step:
        # The Jacobian of the per-step losses with respect to every parameter and xs: the
        # same (T, *shape) arrays vectorized_grads returns, xs's (T, T, B, D) included.
        basis = jnp.eye(T, dtype=targets.dtype)
        step = jax.jit(jax.jacrev(losses))
        forward = jax.jit(lambda arrays: jax.vjp(losses, arrays)[1])
        pullback = jax.jit(lambda vjp: jax.vmap(vjp)(basis))

        def gradients() -> Gradients:
            return {k: np.asarray(v).sum(axis=0) for k, v in step(arrays).items()}

    else:
        step = jax.jit(jax.grad(lambda arrays: jnp.sum(losses(arrays))))
        forward = jax.jit(lambda arrays: jax.vjp(lambda a: jnp.sum(losses(a)), arrays)[1])
        pullback = jax.jit(lambda vjp: vjp(jnp.ones((), targets.dtype)))

        def gradients() -> Gradients:
            return {k: np.asarray(v) for k, v in step(arrays).items()}

    def run() -> object:
        return _ready(step(arrays))

    start = time.perf_counter()
    run()
    compile_s = time.perf_counter() - start
    vjp = forward(arrays)
    _ready(pullback(vjp))

    def backward() -> object:
        return _ready(pullback(vjp))

    return Bench(run=run, backward=backward, gradients=gradients, compile_s=compile_s)


def _jax_grad(problem: Problem) -> Bench:
    return _jax_build(problem, per_step=False)


def _jax_jacrev(problem: Problem) -> Bench:
    return _jax_build(problem, per_step=True)


def _torch_loss(problem: Problem) -> tuple[Callable[[], Any], dict[str, Any]]:
    """The loss in PyTorch on the problem's arrays, and its leaves by our gradient keys.

    The RNN is a Python loop over t; the LSTM and the GRU are ``torch.nn.LSTM`` and
    ``torch.nn.GRU`` (one layer, the same gate layout) holding our weights as parameters.
    """
    import torch

    c = problem.case
    leaves = {k: torch.from_numpy(v).requires_grad_() for k, v in {**c.params, "xs": c.xs}.items()}
    targets = torch.from_numpy(c.targets)
    T, B, D = c.xs.shape
    H = c.params["h0"].shape[1]
    head = {k: leaves.pop(k) for k in ("U", "b_y")}

    def out(states: Any) -> Any:
        z = states @ head["U"].T + head["b_y"]
        return 0.5 * ((z - targets) ** 2).sum()

    if c.cell == "rnn":

        def loss() -> Any:
            V, W = leaves["V"], leaves["W"]
            a = (leaves["xs"].reshape(T * B, D) @ V.T).reshape(T, B, -1) + leaves["b_h"]
            h = leaves["h0"]
            states = []
            for t in range(T):
                h = torch.tanh(a[t] + h @ W.T)
                states.append(h)
            return out(torch.stack(states))

    else:
        module = (torch.nn.LSTM if c.cell == "lstm" else torch.nn.GRU)(D, H)
        module = module.to(getattr(torch, c.xs.dtype.name))
        for name in ("W_ih", "W_hh", "b_ih", "b_hh"):
            torch_name = {"W": "weight", "b": "bias"}[name[0]] + name[1:] + "_l0"
            setattr(module, torch_name, torch.nn.Parameter(leaves.pop(name)))
            leaves[name] = getattr(module, torch_name)
        states = CELLS[c.cell].states

        def loss() -> Any:
            state = tuple(leaves[k][None] for k in states)
            return out(module(leaves["xs"], state if len(state) > 1 else state[0])[0])

    return loss, {**leaves, **head}


def _torch(problem: Problem) -> Bench:
    import torch

    loss, leaves = _torch_loss(problem)
    names = list(leaves)

    def run() -> dict[str, Any]:
        return dict(zip(names, torch.autograd.grad(loss(), list(leaves.values())), strict=True))

    value = loss()

    def backward() -> object:
        return torch.autograd.grad(value, list(leaves.values()), retain_graph=True)

    def gradients() -> Gradients:
        return {k: v.numpy() for k, v in run().items()}

    return Bench(run=run, backward=backward, gradients=gradients)


def _per_term(fn: Callable[..., tuple[Any, dict[str, Any]]]) -> Callable[[Problem], Bench]:
    """A row for one of the note's per-term forms: dL_t/dθ for every t, (T, *θ.shape)."""

    def build(problem: Problem) -> Bench:
        c = problem.case

        def run() -> tuple[Any, dict[str, Any]]:
            return fn(c.params, c.xs, c.targets)

        # Judged by their sum over t, which must be the gradient of L = Σ_t L_t.
        return Bench(run=run, gradients=lambda: {k: g.sum(axis=0) for k, g in run()[1].items()})

    return build


def _literal_fits(size: Size) -> bool:
    # T² products of H×H Jacobians per batch row: O(T²·B·H³).
    return size.T**2 * size.B * size.H**3 <= 1e9


def _chains_fit(size: Size) -> bool:
    # T(T+1)/2 (B, H) @ (H, H) steps, each a separate NumPy call.
    return size.T**2 * size.B * size.H**2 <= 3e9


def _jacrev_fits(size: Size) -> bool:
    # jacrev runs T backward passes at once: T times the flops of one gradient and a
    # (T, ...) result per parameter. Beyond this it takes seconds a call.
    return size.T * size.flops()[1] <= 1e11


GATED = ("lstm", "gru", "gru_reset_before")
"""The gated cells, which the rows ``reverse``, the floors, ``jax_grad`` and ``torch`` run."""

REGISTRY: list[Implementation] = [
    Implementation(
        "reverse",
        _reverse,
        "bptt_ref.loss_and_grad: reverse accumulation",
        peer="jax_grad",
        cells=("rnn", *GATED),
    ),
    Implementation(
        "reverse_1thread",
        _reverse,
        "reverse with BLAS limited to one thread",
        peer="reverse",
        blas_threads=1,
    ),
    Implementation(
        "blas_floor",
        _floor(_floor_work, elementwise=False),
        "the matrix products alone, into preallocated outputs",
        cells=("rnn", *GATED),
    ),
    Implementation(
        "math_floor",
        _floor(_floor_work, elementwise=True),
        "the products and, once each over its whole array, the elementwise passes: rnn f_h, "
        "f_h′; gated cells the gates' σ and tanh, the state update, the slopes; the loss "
        "and ∂L/∂z",
        cells=("rnn", *GATED),
    ),
    Implementation(
        "step_floor",
        _floor(_rnn_step_work, elementwise=True),
        "math_floor and the work it leaves out, which NumPy code of any form pays: the bias "
        "adds and sums, per step the add of h Wᵀ into a_t and the ⊙ f_h′, the input checks",
        peer="reverse",
    ),
    Implementation(
        "blas_floor_1thread",
        _floor(_floor_work, elementwise=False),
        "blas_floor with BLAS limited to one thread",
        peer="blas_floor",
        blas_threads=1,
    ),
    Implementation(
        "jax_grad",
        _jax_grad,
        "jax.jit(jax.grad) of the lax.scan loss",
        cells=("rnn", *GATED),
    ),
    Implementation(
        "jax_jacrev",
        _jax_jacrev,
        "jit'd jax.jacrev of the per-step losses, every parameter and xs (summed over t to check)",
        supports=_jacrev_fits,
    ),
    Implementation(
        "literal",
        _per_term(bptt_ref.literal_grads),
        "the note's sum with every Jacobian product formed, O(T²·B·H³)",
        supports=_literal_fits,
    ),
    Implementation(
        "chains",
        _per_term(bptt_ref.chains_grads),
        "one VJP chain per loss term, Python loops, T(T+1)/2 steps",
        supports=_chains_fit,
    ),
    Implementation(
        "vectorized",
        _per_term(bptt_ref.vectorized_grads),
        "all T chains advanced together, one batched product per step back",
        supports=_jacrev_fits,
        peer="jax_jacrev",
    ),
]
"""Every row, in table order."""

if importlib.util.find_spec("torch") is not None:
    REGISTRY.append(
        Implementation(
            "torch",
            _torch,
            "PyTorch CPU autograd: the RNN a Python loop over t, nn.LSTM, nn.GRU",
            peer="reverse",
            cells=("rnn", "lstm", "gru"),
            missing="no torch module (PyTorch's GRU resets after the product)",
        )
    )
