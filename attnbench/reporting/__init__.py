"""Reporting: pure functions of result files — analysis, plots, report.md, compare."""
