"""What runs inside a worker: workload, timing, memory, analytic cost, approximation error (imports core only)."""
