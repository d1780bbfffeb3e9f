"""Hash encoding: general and grid paths against a naive reference, for values and gradients."""

from __future__ import annotations

import math
import weakref

import pytest
import torch

from lorein.inr import hash_encoding
from lorein.inr.hash_encoding import (
    GridHashEncoding,
    HashEncoding,
    grid_coordinates,
    tcnn_available,
)
from tests.helpers import rng
from tests.inr.naive_hash import level_rows, naive_encode

# 4 levels, 2^6 rows: levels 0-1 dense, 2-3 hashed with collisions on a 6x7x5 grid
SMALL = {"n_levels": 4, "n_features": 2, "log2_table": 6, "n_min": 2, "growth": 1.5}
GRID = (6, 7, 5)
CONVENTIONS = ["ngp", "tcnn"]


def _encoding(convention: str, seed: int = 0) -> HashEncoding:
    enc = HashEncoding(**SMALL, convention=convention, backend="torch", generator=rng(seed))
    with torch.no_grad():  # O(1) table entries, so that errors are not hidden by 1e-4 scales
        enc.table.uniform_(-1.0, 1.0, generator=rng(seed + 100))
    return enc


def _naive(enc: HashEncoding, coords: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    return naive_encode(
        coords, table, enc.n_levels, enc.log2_table, enc.n_min, enc.growth, enc.convention
    )


def _random_coords(n: int, seed: int) -> torch.Tensor:
    coords = torch.rand(n, 3, generator=rng(seed))
    coords[:4] = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, 0.5], [1.0, 0.3, 0]])
    return coords


@pytest.mark.parametrize(
    ("convention", "resolutions", "dense", "rows"),
    [
        ("ngp", [3, 4, 5, 7], [True, True, False, False], [32, 64, 64, 64]),
        ("tcnn", [2, 3, 5, 7], [True, True, False, False], [8, 32, 64, 64]),
    ],
)
def test_level_layout(
    convention: str, resolutions: list[int], dense: list[bool], rows: list[int]
) -> None:
    enc = _encoding(convention)
    assert enc.level_resolution.tolist() == resolutions
    assert enc.level_dense.tolist() == dense
    assert enc.level_size.tolist() == rows
    assert enc.table.shape == (sum(rows), 2)
    assert [r for r, _, _ in level_rows(4, 6, 2, 1.5, convention)] == rows


def test_default_levels() -> None:
    """Paper defaults: 16 levels, 2^19 rows, N_l = 16 * 2^l, levels 0-2 dense."""
    enc = HashEncoding()
    assert enc.level_scale.tolist() == [16.0 * 2**level for level in range(16)]
    assert enc.level_dense.tolist() == [True] * 3 + [False] * 13
    assert enc.n_rows == (17**3 + 7) + (33**3 + 7) + (65**3 + 7) + 13 * 2**19  # up to 8s
    assert enc.out_features == 32
    assert enc.table.dtype == torch.float32
    table = enc.table.detach()
    assert float(table.abs().max()) <= 1e-4
    assert float(table.std()) > 1e-5


def test_hashed_levels_collide() -> None:
    """The test problem exercises collisions: more vertices are touched than rows exist."""
    enc = _encoding("ngp")
    index, _ = enc.corners(grid_coordinates(GRID))
    for level in (2, 3):
        scale = int(enc.level_scale[level])
        vertices = math.prod(
            len({min(int((i + 0.5) / n * scale), scale - 1) + b for i in range(n) for b in (0, 1)})
            for n in GRID
        )
        rows = torch.unique(index[level]).numel()
        assert rows <= 2**enc.log2_table < vertices
        assert rows > 2**enc.log2_table // 2  # the hash spreads over the table


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_general_path_matches_naive(convention: str) -> None:
    enc = _encoding(convention, seed=1)
    coords = _random_coords(50, seed=2)
    out = enc(coords)
    ref = _naive(enc, coords, enc.table)
    assert out.shape == (50, enc.out_features)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)

    grad_out = torch.randn(out.shape, generator=rng(3))
    (grad,) = torch.autograd.grad(out, enc.table, grad_out)
    (grad_ref,) = torch.autograd.grad(ref, enc.table, grad_out)
    torch.testing.assert_close(grad, grad_ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_coordinate_gradient_matches_naive(convention: str) -> None:
    enc = _encoding(convention, seed=4)
    coords = torch.rand(30, 3, generator=rng(5)) * 0.98 + 0.01  # away from the clamp
    coords.requires_grad_(True)
    grad_out = torch.randn(30, enc.out_features, generator=rng(6))
    (grad,) = torch.autograd.grad(enc(coords), coords, grad_out)
    (grad_ref,) = torch.autograd.grad(_naive(enc, coords, enc.table.detach()), coords, grad_out)
    torch.testing.assert_close(grad, grad_ref, rtol=1e-4, atol=1e-4)
    assert float(grad.abs().max()) > 0.1


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_grid_path_matches_general_and_naive(convention: str) -> None:
    enc = _encoding(convention, seed=7)
    grid = GridHashEncoding(enc, GRID)
    coords = grid_coordinates(GRID)
    fast, general, ref = grid(), enc(coords), _naive(enc, coords, enc.table)
    assert fast.shape == (6 * 7 * 5, enc.out_features)
    torch.testing.assert_close(fast, general, rtol=0, atol=0)
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-6)

    grad_out = torch.randn(fast.shape, generator=rng(8))
    grads = [torch.autograd.grad(out, enc.table, grad_out)[0] for out in (fast, general, ref)]
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grads[0], grads[2], rtol=1e-5, atol=1e-5)
    assert int((grads[0] != 0).any(1).sum()) > 100  # most rows are touched


@pytest.mark.parametrize(
    "settings",
    [
        {"n_levels": 8, "log2_table": 4, "n_min": 1, "growth": 1.5},  # SUMMIT's coil field
        {"n_levels": 6, "log2_table": 5, "n_min": 1, "growth": 2.0},
    ],
)
def test_tiny_tables_stay_in_range(settings: dict) -> None:
    """With tables smaller than a level's width, x (hash prime 1) must wrap like the others."""
    enc = HashEncoding(n_features=2, generator=rng(11), **settings)
    grid = GridHashEncoding(enc, (4, 20, 40))
    coords = grid_coordinates((4, 20, 40))
    index, _ = enc.corners(coords)
    assert int(index.max()) < enc.n_rows
    torch.testing.assert_close(grid(), _naive(enc, coords, enc.table), rtol=1e-5, atol=1e-6)


def test_grid_path_paper_sizes_match_general() -> None:
    """Paper sizes, 5 levels (three dense, two hashed): grid and general paths agree."""
    enc = HashEncoding(n_levels=5, generator=rng(9))
    grid = GridHashEncoding(enc, (3, 5, 4))
    grad_out = torch.randn(60, 10, generator=rng(10))
    fast, general = grid(), enc(grid_coordinates((3, 5, 4)))
    torch.testing.assert_close(fast, general, rtol=0, atol=0)
    (g_fast,) = torch.autograd.grad(fast, enc.table, grad_out)
    (g_general,) = torch.autograd.grad(general, enc.table, grad_out)
    torch.testing.assert_close(g_fast, g_general, rtol=1e-5, atol=1e-8)


def test_vertex_values_and_upper_edge() -> None:
    """On the ngp grid the coordinate 1 lands on the last vertex: output = that table row."""
    enc = _encoding("ngp")
    out = enc(torch.ones(1, 3))
    for level in range(enc.n_dense):
        n = int(enc.level_scale[level])
        res = n + 1
        row = int(enc.level_offset[level]) + n + n * res + n * res * res
        torch.testing.assert_close(out[0, 2 * level : 2 * level + 2], enc.table[row])
    torch.testing.assert_close(enc(torch.zeros(1, 3))[0, :2], enc.table[0])
    # all 8 corners are vertices of the grid (none past the upper edge), also at 1
    index, _ = enc.corners(torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 1.0]]))
    for level in range(enc.n_dense):
        local = index[level] - enc.level_offset[level]
        assert int(local.max()) < int(enc.level_resolution[level]) ** 3


def test_grid_coordinates_convention() -> None:
    coords = grid_coordinates((1, 2, 4))
    assert coords.shape == (8, 3)
    torch.testing.assert_close(coords[0], torch.tensor([0.5, 0.25, 0.125]))
    torch.testing.assert_close(coords[-1], torch.tensor([0.5, 0.75, 0.875]))
    torch.testing.assert_close(coords[5], torch.tensor([0.5, 0.75, 0.375]))  # (0, 1, 1) C order


def test_deterministic() -> None:
    a, b = _encoding("ngp", seed=11), _encoding("ngp", seed=11)
    torch.testing.assert_close(a.table, b.table, rtol=0, atol=0)
    assert not torch.equal(a.table, _encoding("ngp", seed=12).table)
    grid = GridHashEncoding(a, GRID)
    grad_out = torch.randn(6 * 7 * 5, a.out_features, generator=rng(13))
    grads = [torch.autograd.grad(grid(), a.table, grad_out)[0] for _ in range(2)]
    assert torch.equal(grads[0], grads[1])


def test_chunked_precompute(monkeypatch: pytest.MonkeyPatch) -> None:
    enc = _encoding("tcnn", seed=19)
    whole = GridHashEncoding(enc, GRID)
    monkeypatch.setattr(hash_encoding, "_BUILD_CHUNK", 16)
    monkeypatch.setattr(hash_encoding, "_CORNERS", weakref.WeakValueDictionary())  # rebuild
    chunked = GridHashEncoding(enc, GRID)
    for name in ("index", "weight", "t_bag", "t_weight", "t_offsets"):
        assert getattr(chunked, name).data_ptr() != getattr(whole, name).data_ptr(), name
        assert torch.equal(getattr(chunked, name), getattr(whole, name)), name


def test_same_geometry_shares_the_corners() -> None:
    """Tables and feature counts differ, the corners are one copy; another geometry has its own."""
    first = GridHashEncoding(_encoding("ngp", seed=1), GRID)
    wider = HashEncoding(**{**SMALL, "n_features": 4}, backend="torch", generator=rng(2))
    second = GridHashEncoding(wider, GRID)
    assert second.index.data_ptr() == first.index.data_ptr()
    assert second.t_bag.data_ptr() == first.t_bag.data_ptr()
    torch.testing.assert_close(second(), wider(grid_coordinates(GRID)), rtol=0, atol=0)
    finer = HashEncoding(**{**SMALL, "growth": 2.0}, backend="torch", generator=rng(3))
    assert GridHashEncoding(finer, GRID).index.data_ptr() != first.index.data_ptr()
    assert GridHashEncoding(_encoding("tcnn"), GRID).index.data_ptr() != first.index.data_ptr()


def test_buffers_not_in_state_dict() -> None:
    enc = _encoding("ngp")
    grid = GridHashEncoding(enc, GRID)
    assert list(grid.state_dict()) == ["encoding.table"]
    assert grid.index.dtype == torch.int32 and grid.index.shape == (4, 6 * 7 * 5, 8)
    assert int(grid.t_offsets[-1]) == grid.index.numel()


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="log2_table"):
        HashEncoding(log2_table=2)
    with pytest.raises(ValueError, match="convention"):
        HashEncoding(convention="other")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tcnn"):
        HashEncoding(convention="ngp", backend="tcnn")
    with pytest.raises(ValueError, match="coords"):
        _encoding("ngp")(torch.zeros(4, 2))


@pytest.mark.cuda
@pytest.mark.parametrize("convention", CONVENTIONS)
def test_cuda_grid_matches_cpu(convention: str) -> None:
    enc = _encoding(convention, seed=14)
    grid = GridHashEncoding(enc, GRID)
    grad_out = torch.randn(6 * 7 * 5, enc.out_features, generator=rng(15))
    out_cpu = grid()
    (g_cpu,) = torch.autograd.grad(out_cpu, enc.table, grad_out)
    grid = grid.to("cuda")
    assert grid.index.is_cuda and grid.encoding.level_offset.is_cuda
    out_gpu = grid()
    (g_gpu,) = torch.autograd.grad(out_gpu, grid.encoding.table, grad_out.cuda())
    torch.testing.assert_close(out_gpu.cpu(), out_cpu, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g_gpu.cpu(), g_cpu, rtol=1e-5, atol=1e-5)


@pytest.mark.cuda
@pytest.mark.skipif(not tcnn_available(), reason="needs tinycudann")
def test_tcnn_backend_matches_torch() -> None:
    kwargs = {**SMALL, "convention": "tcnn"}
    ours = HashEncoding(**kwargs, backend="torch").cuda()
    theirs = HashEncoding(**kwargs, backend="tcnn").cuda()
    with torch.no_grad():
        ours.table.uniform_(-1.0, 1.0, generator=rng(16))
        theirs.table.copy_(ours.table)
    coords = torch.rand(1000, 3, generator=rng(17)).cuda()
    grad_out = torch.randn(1000, ours.out_features, generator=rng(18)).cuda()
    out_ours, out_theirs = ours(coords), theirs(coords)
    torch.testing.assert_close(out_theirs, out_ours, rtol=1e-4, atol=1e-5)
    (g_ours,) = torch.autograd.grad(out_ours, ours.table, grad_out)
    (g_theirs,) = torch.autograd.grad(out_theirs, theirs.table, grad_out)
    torch.testing.assert_close(g_theirs, g_ours, rtol=1e-4, atol=1e-4)
