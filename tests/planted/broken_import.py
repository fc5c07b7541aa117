"""A module whose import fails, as a user's module with a missing dependency does."""

import bptt_ref_no_such_module  # type: ignore[import-not-found]  # noqa: F401
