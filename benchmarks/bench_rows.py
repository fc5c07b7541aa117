"""The rows of ``bench_bptt.py``: one registry entry per way of computing the BPTT gradient.

A row is an :class:`Implementation` in ``REGISTRY``: a name, a ``build`` function that
turns a :class:`Problem` into the closures to time (:class:`Bench`), the sizes it
supports, and optionally a peer row its time is compared with. To add a row, write

    def _mine(problem: Problem) -> Bench:
        def run() -> object:  # forward and backward, what a training step pays
            return my_loss_and_grad(problem.case.params, problem.case.xs, problem.case.targets)
        return Bench(run=run, gradients=lambda: run()[1])

and append ``Implementation("mine", _mine, "what it is", peer="jax_jacrev")`` to
``REGISTRY``. ``gradients`` returns (a subset of) the keys ``U, V, W, b_h, b_y, h0, xs``;
the harness judges them against ``bptt_ref.loss_and_grad`` before anything is timed.

Every row computes the model of the README with ``tanh``, ``identity`` and ``mse``.
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
from bptt_ref.cases import Case, make_case

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

    def flops(self) -> tuple[int, int]:
        """Floating-point operations of the matrix products of (fwd + bwd, bwd alone).

        Forward: x_t Vᵀ, h_{t-1} Wᵀ, h_t Uᵀ; backward: g_t U, δ_{t+1} W (and δ_0 W for
        h0), the three weight gradients and δ_t V for the inputs: 2 flops per
        multiply-add, T·B rows each.
        """
        B, D, H, O, T = self
        fwd = 2 * T * B * H * (D + H + O)
        return 3 * fwd, 2 * fwd


@dataclass(frozen=True)
class Problem:
    """The inputs every row of one size and dtype is given (the same arrays for all)."""

    size: Size
    case: Case


def make_problem(size: Size, dtype: Any, seed: int = 0) -> Problem:
    """A contracting RNN (spectral radius 0.5) with standard normal inputs and targets."""
    case = make_case(
        dims=size.dims,
        hidden="tanh",
        output="identity",
        loss="mse",
        dtype=np.dtype(dtype),
        regime="contracting",
        style="normal",
        seed=seed,
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
    """

    name: str
    build: Callable[[Problem], Bench]
    description: str
    supports: Callable[[Size], bool] = _always
    peer: str | None = None
    blas_threads: int | None = None


def _reverse(problem: Problem) -> Bench:
    c = problem.case

    def run() -> tuple[float, dict[str, NDArray[np.floating]]]:
        return bptt_ref.loss_and_grad(c.params, c.xs, c.targets)

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
    # scan is the plain RNN of the README; textbook=True is jax.nn's tanh, what a user
    # of JAX would write.
    masks = (jnp.ones(T, bool), jnp.ones(B, bool), jnp.ones(O, bool))
    hidden_index = list(jax_reference.HIDDEN).index("tanh")
    head_index = list(jax_reference.HEADS).index(("identity", "mse"))

    def losses(arrays: Mapping[str, jax.Array]) -> jax.Array:
        return jax_reference.step_losses(
            arrays, targets, masks, hidden_index, head_index, textbook=True
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


def _torch(problem: Problem) -> Bench:
    import torch

    c = problem.case
    leaves = {k: torch.from_numpy(v).requires_grad_() for k, v in {**c.params, "xs": c.xs}.items()}
    targets = torch.from_numpy(c.targets)

    def loss() -> Any:
        T, B, D = c.xs.shape
        U, V, W = leaves["U"], leaves["V"], leaves["W"]
        a = (leaves["xs"].reshape(T * B, D) @ V.T).reshape(T, B, -1) + leaves["b_h"]
        h = leaves["h0"]
        states = []
        for t in range(T):
            h = torch.tanh(a[t] + h @ W.T)
            states.append(h)
        z = torch.stack(states) @ U.T + leaves["b_y"]
        return 0.5 * ((z - targets) ** 2).sum()

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


REGISTRY: list[Implementation] = [
    Implementation(
        "reverse", _reverse, "bptt_ref.loss_and_grad: reverse accumulation", peer="jax_grad"
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
        _floor(_rnn_floor_work, elementwise=False),
        "the matrix products alone, into preallocated outputs",
    ),
    Implementation(
        "math_floor",
        _floor(_rnn_floor_work, elementwise=True),
        "the products and, once each over its whole array, f_h, f_h′, the loss and ∂L/∂z",
    ),
    Implementation(
        "blas_floor_1thread",
        _floor(_rnn_floor_work, elementwise=False),
        "blas_floor with BLAS limited to one thread",
        peer="blas_floor",
        blas_threads=1,
    ),
    Implementation("jax_grad", _jax_grad, "jax.jit(jax.grad) of the lax.scan loss"),
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
            "torch", _torch, "PyTorch CPU autograd, a Python loop over t", peer="reverse"
        )
    )
