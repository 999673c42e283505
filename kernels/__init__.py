"""Per-device kernels for Gated DeltaNet models with sequence-parallel-aware dispatch."""
