"""Clients that take the configuration as keywords, for ``bptt-ref check --all``.

``grad`` is right in every configuration (bptt-ref's own NumPy reference, configured by
the keywords it receives). ``fused_tanh_softmax_ce`` is right everywhere but in the one
configuration it sends to a "fused kernel", which averages over the batch where the loss
sums: wrong for tanh / softmax / cross_entropy only, and only when B > 1.
"""

from __future__ import annotations

from typing import Any

from numpy.typing import NDArray

import bptt_ref

Array = NDArray[Any]


def grad(
    params: dict[str, Array], xs: Array, targets: Array, *, hidden: str, output: str, loss: str
) -> dict[str, Array]:
    return dict(
        bptt_ref.loss_and_grad(params, xs, targets, hidden=hidden, output=output, loss=loss)[1]
    )


def fused_tanh_softmax_ce(
    params: dict[str, Array], xs: Array, targets: Array, *, hidden: str, output: str, loss: str
) -> dict[str, Array]:
    grads = grad(params, xs, targets, hidden=hidden, output=output, loss=loss)
    if (hidden, output, loss) == ("tanh", "softmax", "cross_entropy"):
        return {k: g / xs.shape[1] for k, g in grads.items()}
    return grads


def lstm(params: dict[str, Array], xs: Array, targets: Array, **config: str) -> dict[str, Array]:
    """The LSTM's gradient, taking the configuration through ``**config``."""
    return dict(bptt_ref.loss_and_grad(params, xs, targets, cell="lstm", **config)[1])
