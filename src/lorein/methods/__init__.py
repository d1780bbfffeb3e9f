"""Reconstruction methods behind one interface, and the registry that the CLI and benchmarks
read."""
