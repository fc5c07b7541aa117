"""The recurrent cells bptt-ref differentiates, one module per cell."""
