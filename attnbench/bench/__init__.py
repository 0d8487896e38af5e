"""Everything that measures: timers and meters, result files, the sweeps, analysis and reports."""
