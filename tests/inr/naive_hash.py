"""Naive hash encoding for tests: loops over levels and corners, plain indexing, no
embedding_bag, geometry recomputed from the formulas rather than read from the module."""

from __future__ import annotations

import math

import numpy as np
import torch

PRIMES_XYZ = (1, 2654435761, 805459861)


def level_geometry(
    level: int, n_min: int, growth: float, convention: str
) -> tuple[float, float, int, int]:
    """``(scale, shift, vertices per axis, largest lower corner)`` of one level."""
    if convention == "ngp":
        scale = math.floor(n_min * growth**level)
        return float(scale), 0.0, scale + 1, scale - 1
    scale = float(np.float32(n_min * growth**level) - np.float32(1.0))
    resolution = math.ceil(scale) + 1
    return scale, 0.5, resolution, resolution - 1


def level_rows(n_levels: int, log2_table: int, n_min: int, growth: float, convention: str):
    """Per level: ``(rows, first row, dense)``; rows = min(2^T, r^3 rounded up to 8)."""
    out, offset = [], 0
    for level in range(n_levels):
        resolution = level_geometry(level, n_min, growth, convention)[2]
        rows = min(-(-(resolution**3) // 8) * 8, 2**log2_table)
        out.append((rows, offset, resolution**3 <= 2**log2_table))
        offset += rows
    return out


def naive_encode(
    coords: torch.Tensor,
    table: torch.Tensor,
    n_levels: int,
    log2_table: int,
    n_min: int,
    growth: float,
    convention: str = "ngp",
) -> torch.Tensor:
    """``[N, 3]`` (z, y, x) in [0, 1] -> ``[N, n_levels * F]``, differentiable in both inputs."""
    coords = coords.clamp(0.0, 1.0)
    rows = level_rows(n_levels, log2_table, n_min, growth, convention)
    features = []
    for level in range(n_levels):
        scale, shift, resolution, max_cell = level_geometry(level, n_min, growth, convention)
        size, offset, dense = rows[level]
        pos = coords * scale + shift
        cell = pos.detach().floor().long().clamp(max=max_cell)
        frac = pos - cell
        acc = torch.zeros(coords.shape[0], table.shape[1], dtype=table.dtype)
        for bz in (0, 1):
            for by in (0, 1):
                for bx in (0, 1):
                    z, y, x = cell[:, 0] + bz, cell[:, 1] + by, cell[:, 2] + bx
                    if dense:
                        row = (x + y * resolution + z * resolution**2) % size
                    else:
                        row = (
                            (x * PRIMES_XYZ[0]) ^ (y * PRIMES_XYZ[1]) ^ (z * PRIMES_XYZ[2])
                        ) % 2**log2_table
                    w = (
                        (frac[:, 0] if bz else 1 - frac[:, 0])
                        * (frac[:, 1] if by else 1 - frac[:, 1])
                        * (frac[:, 2] if bx else 1 - frac[:, 2])
                    )
                    acc = acc + w[:, None] * table[offset + row]
        features.append(acc)
    return torch.cat(features, dim=1)
