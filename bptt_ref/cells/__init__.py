"""Recurrent cells: each module describes one cell's parameters, forward pass and BPTT."""
