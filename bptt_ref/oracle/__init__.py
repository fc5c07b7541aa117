"""The JAX oracle's package; its public namespace is :mod:`bptt_ref.jax_reference`.

- ``activations``: the exact and textbook nonlinearities (``HIDDEN``, ``TEXTBOOK_HIDDEN``);
- ``heads``: the output heads every cell shares (``HEADS``, ``TEXTBOOK_HEADS``);
- ``cells``: one ``jax.numpy`` step per cell (rnn, lstm, gru, gru_reset_before);
- ``engine``: padding to buckets, one compilation per bucket and cell, the plain loss,
  its reference, judge and rounding magnitudes;
- ``variants``: the rnn's per-term, per-lag, truncated and masked references.

Adding a cell to the oracle is one step function in ``cells`` (and its description).
"""
