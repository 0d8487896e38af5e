"""Sweeps: plan typed cells, hand them to an executor, append rows as outcomes arrive (no terminal output)."""
