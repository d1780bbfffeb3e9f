"""Physics: FFT, linear operators, signal models, sampling, coils and subspaces."""
