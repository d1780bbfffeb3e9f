"""Time the hash encoding paths, MLP variants and Adam on CPU; print markdown tables.

Usage: ``THP_MEM_ALLOC_ENABLE=1 python benchmarks/hash_encoding.py [--reps 5]``.
Every number is the minimum over ``--reps`` runs (other processes only ever add time).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F  # noqa: N812

from lorein.inr.hash_encoding import GridHashEncoding, HashEncoding, grid_coordinates
from lorein.inr.mlp import MLP

SHAPES = [(16, 112, 112), (8, 56, 56)]


def best_time(fn: Callable[[], object], reps: int) -> float:
    """Minimum wall time of ``fn`` over ``reps`` runs after one warm-up run, in seconds."""
    fn()
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def encoding_rows(shape: tuple[int, int, int], reps: int) -> list[tuple[str, str, float]]:
    """Forward and forward+backward times of the three paths for one grid."""
    torch.manual_seed(0)
    enc = HashEncoding(n_levels=16, n_features=2, log2_table=19, n_min=16, growth=2.0)
    start = time.perf_counter()
    grid = GridHashEncoding(enc, shape)
    build = time.perf_counter() - start
    coords = grid_coordinates(shape)
    n = coords.shape[0]
    grad_out = torch.randn(n, enc.out_features)
    index, weight = grid.index.reshape(-1, 8), grid.weight.reshape(-1, 8)

    def torch_backward() -> torch.Tensor:  # precomputed indices, torch's embedding_bag autograd
        out = F.embedding_bag(index, enc.table, per_sample_weights=weight, mode="sum")
        return out.view(16, n, 2).transpose(0, 1).reshape(n, 32)

    def per_level_forward() -> torch.Tensor:  # one embedding_bag call per level
        outs = [
            F.embedding_bag(
                grid.index[lv], enc.table, per_sample_weights=grid.weight[lv], mode="sum"
            )
            for lv in range(16)
        ]
        return torch.cat(outs, dim=1)

    def fwd(f: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
        def run() -> torch.Tensor:
            with torch.no_grad():
                return f()

        return run

    def fwd_bwd(f: Callable[[], torch.Tensor]) -> Callable[[], None]:
        def run() -> None:
            enc.table.grad = None
            f().backward(grad_out)

        return run

    name = "x".join(str(s) for s in shape)
    rows = [(name, "grid path: precompute (once)", build)]
    paths = {
        "grid path (embedding_bag + transpose backward)": grid,
        "general path (indices per call, index_add backward)": lambda: enc(coords),
        "precomputed indices, torch's embedding_bag backward": torch_backward,
    }
    for label, f in paths.items():
        rows.append((name, f"{label}: fwd", best_time(fwd(f), reps)))
        rows.append((name, f"{label}: fwd+bwd", best_time(fwd_bwd(f), max(1, reps // 2))))
    rows.append(
        (name, "grid forward, 16 per-level calls: fwd", best_time(fwd(per_level_forward), reps))
    )
    return rows


def mlp_rows(n: int, reps: int) -> list[tuple[str, str, float]]:
    """Chunked vs unchunked MLP, and complex outputs from one or two MLPs (fwd+bwd)."""
    torch.manual_seed(0)
    x = torch.randn(n, 32)

    def run(mlps: list[MLP]) -> Callable[[], None]:
        def step() -> None:
            xi = x.clone().requires_grad_(True)
            torch.cat([m(xi) for m in mlps], dim=1).square().sum().backward()

        return step

    cases = {
        "MLP 32-64x3-2, unchunked": [MLP(32, 2, chunk_size=None)],
        "MLP 32-64x3-2, 25k-row chunks": [MLP(32, 2)],
        "complex x1: two MLPs (1 + 1 outputs)": [MLP(32, 1), MLP(32, 1)],
        "complex x1: one MLP (2 outputs)": [MLP(32, 2)],
        "complex x15: two MLPs (15 + 15 outputs)": [MLP(32, 15), MLP(32, 15)],
        "complex x15: one MLP (30 outputs)": [MLP(32, 30)],
    }
    return [(f"{n} rows", label, best_time(run(m), reps)) for label, m in cases.items()]


def adam_rows(reps: int) -> list[tuple[str, str, float]]:
    """One Adam step on hash tables: fused vs foreach."""
    rows = []
    for label, n_rows in [("one level, 2^19 x 2", 2**19), ("16 levels (default encoding)", 0)]:
        n_rows = n_rows or HashEncoding().n_rows
        for impl in ("fused", "foreach"):
            param = torch.nn.Parameter(torch.zeros(n_rows, 2))
            param.grad = torch.randn(n_rows, 2)
            try:
                opt = torch.optim.Adam([param], lr=1e-3, **{impl: True})
                opt.step()
            except RuntimeError as err:  # fused Adam not available on this device
                print(f"Adam {impl}: {err}")
                continue
            rows.append((label, f"Adam step, {impl}", best_time(opt.step, reps)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"THP_MEM_ALLOC_ENABLE={os.environ.get('THP_MEM_ALLOC_ENABLE', 'unset')}, "
        f"min of {args.reps} runs (fwd+bwd: {max(1, args.reps // 2)})\n"
    )
    rows = []
    for shape in SHAPES:
        rows += encoding_rows(shape, args.reps)
    rows += mlp_rows(16 * 112 * 112, args.reps)
    rows += adam_rows(args.reps)
    print("| case | what | time [s] |")
    print("| --- | --- | ---: |")
    for case, what, seconds in rows:
        print(f"| {case} | {what} | {seconds:.4f} |")


if __name__ == "__main__":
    main()
