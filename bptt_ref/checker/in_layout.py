"""A check in a framework's layout (:mod:`bptt_ref.layouts`): what ``fn`` is given, how
its return is judged, and the canonical view of it that the hints probe.

``fn`` receives the case's parameters converted to the layout (a tree for Flax), its
``xs`` and ``targets`` in the layout's orientation (batch-major for Keras, Flax and
CS231n), and returns gradients under the layout's keys; for a stacked or bidirectional
network, ``layout`` is the one :meth:`bptt_ref.layouts.Layout.stacked` gives (PyTorch's
whole ``state_dict``) and the oracle is :mod:`bptt_ref.oracle.stack`. Each returned array is judged
entry by entry with the absolute tolerance of the canonical gradient entry it holds
(:mod:`bptt_ref.compare`'s ``bound_k · scale_k`` of that key on this case), so a check
in a layout accepts and rejects exactly what the canonical check does on the same
numbers, and its verdicts name the layout's keys and indices.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from bptt_ref.compare import KeyComparison, Reference, scale_and_bound
from bptt_ref.layouts import Layout

if TYPE_CHECKING:
    from bptt_ref.cases import Case


def arguments(case: Case, layout: Layout) -> tuple[Any, NDArray[Any], NDArray[Any]]:
    """``(params, xs, targets)`` as ``fn`` receives them in ``layout`` (fresh arrays)."""
    arrays = layout.to_layout(case.cell, case.params)
    xs, targets = (layout.data(case.cell, a) for a in (case.xs, case.targets))
    return layout.nest(arrays), xs, targets


def inputs(case: Case, layout: Layout) -> dict[str, NDArray[Any]]:
    """Every array a gradient may be taken against, under the layout's flat keys."""
    return layout.to_layout(case.cell, {**case.params, "xs": case.xs})


def judge(
    actual: Mapping[str, Any], case: Case, keys: tuple[str, ...], layout: Layout, kink: str = "jax"
) -> list[KeyComparison]:
    """The oracle's verdict on each of ``keys`` (layout keys) of ``actual``.

    The canonical bound and scale of every key are converted like gradients, so that
    each layout entry carries those of the canonical entry it holds; the peer's noise
    is computed only when an entry fails without it, as :func:`bptt_ref.compare.judge_against`
    does. ``kink`` as for :func:`bptt_ref.oracle.engine.reference`.
    """
    from bptt_ref.checker.protocol import pad_to
    from bptt_ref.oracle import engine
    from bptt_ref.oracle import stack as stack_oracle

    verdicts: list[KeyComparison] = []
    for noise in (False, True):
        args = (case.params, case.xs, case.targets)
        if case.stacked:
            ref = stack_oracle.reference(
                *args, cell=case.cell, noise=noise, kink=kink, **case.network, **case.config
            )
        else:
            # As protocol.judge: a boundary sweep in four compilations, for this configuration.
            ref = engine.reference(
                *args,
                noise=noise,
                pad_to=pad_to(case.dims),
                specialize=True,
                kink=kink,
                cell=case.cell,
                **case.config,
            )
        verdicts = _compare(actual, ref, case.cell, keys, layout)
        if all(v.ok for v in verdicts):
            break
    return verdicts


def _compare(
    actual: Mapping[str, Any], ref: Reference, cell: str, keys: tuple[str, ...], layout: Layout
) -> list[KeyComparison]:
    scales, bounds = {}, {}
    for k, g in ref.grads.items():
        scales[k], bounds[k] = (np.full_like(g, v) for v in scale_and_bound(ref, k))
    expected = layout.grads_to_layout(cell, ref.grads)
    scale = layout.grads_to_layout(cell, scales)
    bound = layout.grads_to_layout(cell, bounds)
    out = []
    for k in keys:
        a, e = np.asarray(actual[k], dtype=np.float64), expected[k]
        if a.size == 0:
            out.append(KeyComparison(k, 0.0, float(np.max(bound[k], initial=0.0)), 0.0, (), 0, 0))
            continue
        diff = np.abs(a - e)
        with np.errstate(divide="ignore", invalid="ignore"):
            # The worst entry is the one furthest beyond its own tolerance.
            ratio = np.where(np.isfinite(diff), diff / (scale[k] * bound[k]), np.inf)
        ratio = np.where(diff == 0, 0.0, ratio)
        flat = int(np.argmax(ratio))
        d, s = float(diff.flat[flat]), float(scale[k].flat[flat])
        err = 0.0 if d == 0 else (np.inf if not np.isfinite(d) or s == 0 else d / s)
        out.append(
            KeyComparison(
                k,
                err,
                float(bound[k].flat[flat]),
                d,
                tuple(int(i) for i in np.unravel_index(flat, a.shape)),
                float(a.flat[flat]),
                float(e.flat[flat]),
            )
        )
    return out


def canonical(
    actual: Mapping[str, Any], cell: str, layout: Layout
) -> tuple[tuple[str, ...], dict[str, NDArray[np.float64]]]:
    """``(keys, gradients)``: the canonical gradients the layout's ``actual`` determines."""
    from bptt_ref.cells import CELLS

    grads = layout.grads_from_layout(cell, actual)
    keys = tuple(k for k in CELLS[cell].grad_names if k in grads)
    return keys, {k: np.asarray(grads[k], dtype=np.float64) for k in keys}
