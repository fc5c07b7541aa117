"""The checker behind ``bptt-ref check`` and :mod:`bptt_ref.testing`, one idea a module.

- :mod:`~bptt_ref.checker.protocol`: what ``fn(params, xs, targets)`` is given for a cell
  and may return (signature, keys, shapes in named dims, dtypes), one call of it, and the
  oracle's verdicts on what it returned.
- :mod:`~bptt_ref.checker.search`: the Hypothesis search and shrinking
  (:func:`~bptt_ref.checker.search.check_gradients`).
- :mod:`~bptt_ref.checker.hints`: probes that name a likely cause of a failure.
- :mod:`~bptt_ref.checker.report`: the failure report, its reproducer and the results.
- :mod:`~bptt_ref.checker.in_layout`: a check in a framework's layout (``layout=``): what
  ``fn`` is given, how its return is judged, its canonical view for the hints.

The public names are re-exported by :mod:`bptt_ref.testing`; import them from there.
"""
