"""Data: the problem-file contract, validation and file formats."""
