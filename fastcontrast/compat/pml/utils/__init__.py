"""pytorch-metric-learning utils: `distributed` (DistributedLossWrapper, DistributedMinerWrapper)."""
