"""Evaluation: metrics against the ground truth, figures, comparisons."""
