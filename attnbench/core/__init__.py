"""What every variant and benchmark shares: the attention contract, the registry, the skeleton."""
