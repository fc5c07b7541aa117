"""Gradient functions under test for ``bptt-ref check``: right ones in several styles,
realistic bugs, and protocol violations. Importable as ``planted.<module>`` with
``tests/`` on the path, or by file as ``tests/planted/<module>.py:FUNC``."""
