"""Max err (compare.py measure, noise-free float64 oracle) per form and dtype over 300 seeded cases.

Run: PYTHONPATH=. python docs/measure_agreement.py
"""

import numpy as np

import bptt_ref
from bptt_ref import jax_reference as jr
from bptt_ref._losses import VALID_HEADS
from bptt_ref.cases import INPUT_STYLES, REGIMES, make_case
from bptt_ref.compare import compare_gradients

rng = np.random.default_rng(123)
worst = {}


def note(form, dt, verdicts):
    key = (form, str(dt))
    e = max(v.err for v in verdicts)
    worst[key] = max(worst.get(key, 0.0), e)


for n in range(300):
    hidden = rng.choice(list(bptt_ref.HIDDEN_ACTIVATIONS))
    out, loss = VALID_HEADS[rng.integers(len(VALID_HEADS))]
    style = rng.choice(
        [s for s in INPUT_STYLES if not (s == "large" and (out, loss) == ("softmax", "mse"))]
    )
    dt = [np.float64, np.float32][n % 2]
    dims = {
        "T": int(rng.integers(1, 9)),
        "B": int(rng.integers(1, 4)),
        "D": int(rng.integers(1, 4)),
        "H": int(rng.integers(1, 5)),
        "O": int(rng.integers(1, 4)),
    }
    c = make_case(
        dims=dims,
        hidden=str(hidden),
        output=out,
        loss=loss,
        dtype=dt,
        regime=str(rng.choice(list(REGIMES))),
        style=str(style),
        seed=int(rng.integers(2**31)),
    )
    a = (c.params, c.xs, c.targets)
    ref = jr.per_term_reference(*a, **c.config, noise=False)
    for f in (bptt_ref.literal_grads, bptt_ref.chains_grads, bptt_ref.vectorized_grads):
        note(f.__name__, dt, compare_gradients(f(*a, **c.config)[1], ref))
    w = int(rng.integers(0, 8))
    k1 = int(rng.integers(1, 4))
    k2 = k1 + int(rng.integers(0, 4))
    note(
        "window",
        dt,
        compare_gradients(
            bptt_ref.window_loss_and_grad(*a, window=w, **c.config)[1],
            jr.truncated_reference(*a, window=w, noise=False, **c.config),
        ),
    )
    note(
        "tbptt",
        dt,
        compare_gradients(
            bptt_ref.tbptt_loss_and_grad(*a, k1=k1, k2=k2, **c.config)[1],
            jr.truncated_reference(*a, chunks=(k1, k2), noise=False, **c.config),
        ),
    )
    m = rng.random(c.xs.shape[:2]) < 0.7
    for mode in ("loss", "freeze"):
        note(
            "mask-" + mode,
            dt,
            compare_gradients(
                bptt_ref.masked_loss_and_grad(*a, m, mode=mode, **c.config)[1],
                jr.masked_reference(*a, m, mode=mode, noise=False, **c.config),
            ),
        )
for k in sorted(worst):
    print(f"{k[0]:18s} {k[1]:8s} max err {worst[k]:.2e}")
