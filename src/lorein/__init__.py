"""LoREIN: low-rank augmented implicit neural representation for quantitative MRI."""

__version__ = "0.1.0"
