"""Training: the loop, presets and settings, one accuracy cell (what a worker runs for the accuracy sweep)."""
