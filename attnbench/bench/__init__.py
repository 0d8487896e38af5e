"""The old home of the benchmark code, now split by job (measure/, execution/, runs/, sweeps/, training/,
reporting/, tasks/). Its modules that outside code imports remain as thin re-exports."""
