"""Simulation: digital brain phantom and the paper's dataset presets."""
