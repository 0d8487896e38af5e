"""Bridges from attnbench variants into other libraries; each needs its optional extra and is imported on its own."""
