"""The JAX oracle: the same loss written independently in ``jax.numpy``, differentiated by autodiff.

Nothing here is shared with the NumPy implementation but the input checks: the
nonlinearities are written in ``jax.numpy`` (``jax.nn``'s for the kinked ones), each cell
is one step function written from its equations, the losses come from their definitions
(``log_softmax``, ``log_sigmoid``), and every derivative comes from autodiff. It runs in
float64 inside ``jax.enable_x64`` so a caller's global JAX settings stay untouched.

This module is the public namespace; the oracle lives in the package
:mod:`bptt_ref.oracle`, one idea per module: ``activations`` (exact and textbook ``f_h``),
``heads`` (the shared output heads), ``cells`` (one step per cell), ``engine`` (padding,
buckets, compilation, the plain loss, its reference and judge, the rounding magnitudes),
``compile_clock`` (how long compiling took), ``cache`` (the persistent compilation cache)
and ``variants`` (the rnn's per-term,
per-lag, truncated and masked losses). The JAX-free judging (``judge_against``,
``assert_matches``) is :mod:`bptt_ref.compare`'s.
"""

from __future__ import annotations

from bptt_ref.compare import assert_matches as assert_matches
from bptt_ref.compare import judge_against as judge_against
from bptt_ref.oracle.activations import HIDDEN as HIDDEN
from bptt_ref.oracle.activations import TEXTBOOK_HIDDEN as TEXTBOOK_HIDDEN
from bptt_ref.oracle.cache import cache_dir as cache_dir
from bptt_ref.oracle.cache import compilation_cache as compilation_cache
from bptt_ref.oracle.compile_clock import CompileClock as CompileClock
from bptt_ref.oracle.compile_clock import compile_clock as compile_clock
from bptt_ref.oracle.compile_clock import time_split as time_split
from bptt_ref.oracle.engine import assert_matches_oracle as assert_matches_oracle
from bptt_ref.oracle.engine import bucket as bucket
from bptt_ref.oracle.engine import judge as judge
from bptt_ref.oracle.engine import loss_and_grad as loss_and_grad
from bptt_ref.oracle.engine import reference as reference
from bptt_ref.oracle.engine import step_losses as step_losses
from bptt_ref.oracle.heads import HEADS as HEADS
from bptt_ref.oracle.heads import TEXTBOOK_HEADS as TEXTBOOK_HEADS
from bptt_ref.oracle.variants import cut_step_losses as cut_step_losses
from bptt_ref.oracle.variants import lag_reference as lag_reference
from bptt_ref.oracle.variants import masked_reference as masked_reference
from bptt_ref.oracle.variants import per_term_reference as per_term_reference
from bptt_ref.oracle.variants import truncated_reference as truncated_reference

__all__ = [
    "HEADS",
    "HIDDEN",
    "TEXTBOOK_HEADS",
    "TEXTBOOK_HIDDEN",
    "CompileClock",
    "assert_matches",
    "assert_matches_oracle",
    "bucket",
    "cache_dir",
    "compilation_cache",
    "compile_clock",
    "cut_step_losses",
    "judge",
    "judge_against",
    "lag_reference",
    "loss_and_grad",
    "masked_reference",
    "per_term_reference",
    "reference",
    "step_losses",
    "time_split",
    "truncated_reference",
]
