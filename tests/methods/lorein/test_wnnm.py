"""WNNM regulariser: block matching and loss against naive loops, gradients, denoising."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from lorein.methods.lorein.wnnm import (
    DEFAULT_WEIGHTS,
    BlockMatching,
    WNNMRegulariser,
    mask_from_amplitude,
    wnnm_loss,
)
from tests.helpers import rng

SHAPE = (2, 17, 16)  # 17 x 16 leaves a bottom strip of 2 rows and a right strip of 1 column


def naive_matching(
    guide: np.ndarray, mask: np.ndarray, patch: int, search: int, n_similar: int
) -> np.ndarray:
    """Per-reference Python loop: ``[G, n_similar, patch^2]`` flat indices."""
    nz, ny, nx = guide.shape
    half = search // 2
    groups = []
    for z in range(nz):
        for r in range(0, ny - patch + 1, patch):
            for c in range(0, nx - patch + 1, patch):
                if not mask[z, r + patch // 2, c + patch // 2]:
                    continue
                ref = guide[z, r : r + patch, c : c + patch].astype(np.float64)
                found = [(-math.inf, r, c)]  # the reference ranks first
                for dy in range(-half, half + 1):
                    for dx in range(-half, half + 1):
                        y, x = r + dy, c + dx
                        if (dy, dx) == (0, 0) or not (
                            0 <= y <= ny - patch and 0 <= x <= nx - patch
                        ):
                            continue
                        cand = guide[z, y : y + patch, x : x + patch].astype(np.float64)
                        found.append((float(((cand - ref) ** 2).sum()), y, x))
                found.sort(key=lambda item: item[0])  # stable: raster order among ties
                group = []
                for _, y, x in found[:n_similar]:
                    rows, cols = np.meshgrid(np.arange(patch), np.arange(patch), indexing="ij")
                    group.append(((z * ny + y + rows) * nx + x + cols).reshape(-1))
                groups.append(group)
    return np.asarray(groups, dtype=np.int64)


def naive_loss(maps: np.ndarray, indices: np.ndarray, c: float = 2.8, eps: float = 1e-6) -> dict:
    """Per-group loop with numpy SVD; returns the loss, weights and clamped-value count."""
    flat = maps.astype(np.float64).reshape(-1)
    total, weights, clamped = 0.0, [], 0
    for group in indices:
        y = np.stack([flat[p] for p in group], axis=1)  # [patch^2, N]
        n = y.shape[1]
        s = np.linalg.svd(y, compute_uv=False)
        sigma = np.std(y[:, 0] - y.mean(axis=1))
        gap = s**2 - n * sigma**2
        clamped += int((gap < 0).sum())
        w = c * math.sqrt(n) / (np.sqrt(np.maximum(gap, 0.0)) + eps)
        weights.append(w)
        total += float((w * s).sum())
    return {"loss": total / len(indices), "weights": np.asarray(weights), "clamped": clamped}


def piecewise_smooth(ny: int, nx: int) -> torch.Tensor:
    """Two slices of ramps with sharp steps and a disc, ``[2, ny, nx]`` float32."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, ny), torch.linspace(0, 1, nx), indexing="ij")
    disc = ((xx - 0.6) ** 2 + (yy - 0.7) ** 2 < 0.05).float()
    first = 1.0 + 0.5 * xx + 0.8 * (yy > 0.4).float() - 0.6 * disc
    second = 1.2 - 0.3 * yy + 0.7 * (xx > 0.55).float()
    return torch.stack([first, second])


@pytest.mark.parametrize(
    ("kind", "patch", "search", "n_similar"),
    [("random", 5, 7, 3), ("integer", 5, 7, 3), ("constant", 5, 7, 3), ("random", 3, 5, 4)],
)
def test_block_matching_matches_naive_loop(
    kind: str, patch: int, search: int, n_similar: int
) -> None:
    g = rng(1)
    if kind == "random":
        guide = torch.randn(SHAPE, generator=g)
    elif kind == "integer":  # few levels: exact ties, broken in raster order of the offsets
        guide = torch.randint(0, 2, SHAPE, generator=g).float()
    else:  # all distances 0: the reference first, then the first offsets inside the slice
        guide = torch.ones(SHAPE)
    mask = torch.rand(SHAPE, generator=g) > 0.3
    matching = BlockMatching.compute(guide, mask, patch, search, n_similar)
    expected = naive_matching(guide.numpy(), mask.numpy(), patch, search, n_similar)
    assert matching.indices.dtype == torch.int64
    assert matching.indices.shape == (len(expected), n_similar, patch * patch)
    assert 0 < len(expected) < 2 * (17 // patch) * (16 // patch)  # the mask dropped some
    np.testing.assert_array_equal(matching.indices.numpy(), expected)


def test_block_matching_uses_the_centre_voxel_and_stays_in_the_slice() -> None:
    guide = torch.randn(SHAPE, generator=rng(2))
    mask = torch.zeros(SHAPE, dtype=torch.bool)
    mask[1, 12, 12] = True  # centre of the reference with corner (10, 10) on slice 1
    matching = BlockMatching.compute(guide, mask)
    assert matching.n_groups == 1 and matching.n_similar == 3
    z, rem = np.divmod(matching.indices.numpy(), 17 * 16)
    y, x = np.divmod(rem, 16)
    assert (z == 1).all()
    first, last = (
        ((17 + 10) * 16 + 10),
        ((17 + 14) * 16 + 14),
    )  # reference voxels (10, 10), (14, 14)
    assert matching.indices[0, 0, 0] == first and matching.indices[0, 0, -1] == last
    corners_y, corners_x = y[0, :, 0], x[0, :, 0]
    assert ((corners_y >= 7) & (corners_y <= 12) & (corners_x >= 7) & (corners_x <= 11)).all()

    off_centre = torch.zeros(SHAPE, dtype=torch.bool)
    off_centre[1, 10, 10] = True  # corner voxel, not a centre: no reference
    with pytest.raises(ValueError, match="centre"):
        BlockMatching.compute(guide, off_centre)


def test_block_matching_rejects_too_few_candidates() -> None:
    guide = torch.randn(1, 6, 5, generator=rng(3))  # 2 candidate positions per reference
    mask = torch.ones_like(guide, dtype=torch.bool)
    assert BlockMatching.compute(guide, mask, n_similar=2).n_groups == 1
    with pytest.raises(ValueError, match="fewer than n_similar"):
        BlockMatching.compute(guide, mask, n_similar=3)


@pytest.mark.parametrize("spikes", [False, True])
def test_loss_matches_naive_loop(spikes: bool) -> None:
    g = rng(4)
    guide = torch.randn(SHAPE, generator=g)
    matching = BlockMatching.compute(guide, torch.ones(SHAPE, dtype=torch.bool))
    maps = torch.randn(SHAPE, generator=g)
    if spikes:  # large outliers inflate sigma: some clean singular values clamp to 0
        maps = maps + 30.0 * (torch.rand(SHAPE, generator=g) > 0.93).float()
    expected = naive_loss(maps.numpy(), matching.indices.numpy())
    assert (expected["clamped"] > 0) == spikes
    loss = wnnm_loss(maps, matching)
    assert loss.dtype == torch.float32 and loss.ndim == 0
    assert float(loss) == pytest.approx(expected["loss"], rel=1e-5)


def test_weights_are_detached() -> None:
    g = rng(5)
    guide = torch.randn(SHAPE, generator=g)
    matching = BlockMatching.compute(guide, torch.ones(SHAPE, dtype=torch.bool))
    base = guide + 0.3 * torch.randn(SHAPE, generator=g)
    fixed_w = torch.from_numpy(naive_loss(base.numpy(), matching.indices.numpy())["weights"])

    x = base.clone().requires_grad_()
    wnnm_loss(x, matching).backward()

    # Reference: the same weights held constant, gradient only through the singular values.
    ref = base.clone().requires_grad_()
    s = torch.linalg.svdvals(matching.groups(ref).double())
    ((fixed_w * s).sum(-1).mean()).backward()
    torch.testing.assert_close(x.grad, ref.grad, rtol=1e-5, atol=1e-7)

    # Letting the weights follow s would give a different gradient: the check discriminates.
    live = base.clone().requires_grad_()
    y = matching.groups(live).double()
    s = torch.linalg.svdvals(y)
    sigma = (y[..., 0] - y.mean(-1)).std(-1, correction=0)
    s_hat = (s.square() - 3 * sigma[:, None].square()).clamp(min=0).sqrt()
    ((2.8 * math.sqrt(3) / (s_hat + 1e-6) * s).sum(-1).mean()).backward()
    assert (live.grad - x.grad).abs().max() > 0.1 * x.grad.abs().max()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_constant_map_has_the_exact_rank_one_gradient(dtype: torch.dtype) -> None:
    matching = BlockMatching.compute(torch.randn(SHAPE, generator=rng(6)), torch.ones(SHAPE).bool())
    x = torch.full(SHAPE, 1.5, dtype=dtype, requires_grad=True)
    wnnm_loss(x, matching).backward()
    # s = (1.5 sqrt(75), 0, 0) with sigma = 0: only s_1 = <u v^T, Y> moves, u = 1/5, v = 1/sqrt(3),
    # w_1 = c sqrt(3) / (s_1 + eps); each voxel gets that once per patch it belongs to.
    s1 = 1.5 * math.sqrt(75.0)
    per_use = 2.8 * math.sqrt(3.0) / (s1 + 1e-6) / (5.0 * math.sqrt(3.0)) / matching.n_groups
    uses = torch.bincount(matching.indices.reshape(-1), minlength=math.prod(SHAPE))
    expected = (per_use * uses).reshape(SHAPE).to(dtype)
    torch.testing.assert_close(x.grad, expected, rtol=1e-4, atol=1e-9)


def test_piecewise_constant_map_has_bounded_gradient() -> None:
    yy, xx = torch.meshgrid(torch.arange(17), torch.arange(16), indexing="ij")
    levels = 1.0 + (xx > 6).float() + 2.0 * ((yy - 8) ** 2 + (xx - 8) ** 2 < 20).float()
    maps = levels.expand(SHAPE).contiguous()
    matching = BlockMatching.compute(maps, torch.ones(SHAPE, dtype=torch.bool))
    x = maps.clone().requires_grad_()
    loss = wnnm_loss(x, matching)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()
    # Exactly-zero singular values carry weights c sqrt(3) / 1e-6; were their arbitrary singular
    # vectors differentiated, the gradient would reach ~1e5 here.
    assert x.grad.abs().max() < 10.0


def test_gradient_steps_denoise_a_piecewise_smooth_map() -> None:
    clean = piecewise_smooth(30, 30)
    noisy = clean + 0.1 * torch.randn(clean.shape, generator=rng(7))
    matching = BlockMatching.compute(noisy, torch.ones(clean.shape, dtype=torch.bool))
    x = noisy.clone().requires_grad_()
    optimiser = torch.optim.Adam([x], lr=3e-3)
    for _ in range(150):
        optimiser.zero_grad()
        loss = 0.01 * wnnm_loss(x, matching) + (x - noisy).square().mean()
        loss.backward()
        optimiser.step()
    before = (noisy - clean).norm() / clean.norm()
    after = (x.detach() - clean).norm() / clean.norm()
    assert after < 0.8 * before


def test_mask_from_amplitude() -> None:
    m0 = torch.tensor([[[0.0, 0.02, 0.031], [0.5, -1.0, 0.029]]])
    expected = torch.tensor([[[False, False, True], [True, True, False]]])
    assert torch.equal(mask_from_amplitude(m0), expected)
    assert torch.equal(mask_from_amplitude(m0 * 1j), expected)
    assert torch.equal(mask_from_amplitude(m0, threshold=0.4), m0.abs() > 0.4)
    assert not mask_from_amplitude(torch.zeros(1, 2, 3)).any()


def test_regulariser_sums_weighted_maps_and_channels() -> None:
    g = rng(8)
    guide = torch.randn(SHAPE, generator=g)
    mask = mask_from_amplitude(torch.rand(SHAPE, generator=g))
    reg = WNNMRegulariser.from_maps(guide, mask)
    direct = BlockMatching.compute(guide, mask)
    assert torch.equal(reg.matching.indices, direct.indices)
    assert reg.weights == DEFAULT_WEIGHTS

    maps = {name: torch.randn(SHAPE, generator=g) for name in ("M0", "T1", "T2", "B0")}
    maps["phase"] = torch.randn(4, *SHAPE, generator=g)  # per-echo phase [E, nz, ny, nx]
    phase = torch.stack([wnnm_loss(p, direct) for p in maps["phase"]]).mean()
    expected = (
        0.05 * wnnm_loss(maps["M0"], direct)
        + 0.2 * wnnm_loss(maps["T1"], direct)
        + 2.0 * wnnm_loss(maps["T2"], direct)
        + 0.2 * phase
    )  # B0 has no weight, T2star is absent
    torch.testing.assert_close(reg(maps), expected, rtol=1e-6, atol=0.0)
    assert float(WNNMRegulariser(direct, {"T2star": 1.0})(maps)) == 0.0


def test_groups_of_disjoint_slabs_add_up_to_the_volume_term() -> None:
    """Each group on the slab of its reference centre, read from the maps on the slab and at
    its outside voxels: the slabs' terms (values and gradients) add up to the volume's."""
    g = rng(9)
    guide = torch.randn(SHAPE, generator=g)
    mask = torch.rand(SHAPE, generator=g) > 0.3
    regulariser = WNNMRegulariser.from_maps(guide, mask, {"T1": 0.5, "T2star": 2.0})
    maps = {name: torch.randn(SHAPE, generator=g).requires_grad_() for name in ("T1", "T2star")}
    volume = regulariser(maps)
    expected = torch.autograd.grad(volume, list(maps.values()))
    total, visited = torch.zeros(()), 0
    for planes in (slice(0, 3), slice(3, 4), slice(4, 11), slice(11, 16)):
        groups = regulariser.on_planes(planes)
        if groups is None:
            continue
        flat = {k: v.flatten() for k, v in maps.items()}
        voxels = torch.arange(math.prod(SHAPE)).reshape(SHAPE)[..., planes].flatten()
        voxels = torch.cat([voxels, groups.outside])
        assert not set(groups.outside.tolist()) & set(voxels[: -len(groups.outside)].tolist())
        on_slab = {k: v[voxels].reshape(1, 1, -1) for k, v in flat.items()}
        total = total + groups.fraction * groups.regulariser(on_slab)
        visited += groups.regulariser.matching.n_groups
    assert visited == regulariser.matching.n_groups
    assert float(total.detach()) == pytest.approx(float(volume.detach()), rel=1e-5)
    for got, want in zip(torch.autograd.grad(total, list(maps.values())), expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_regulariser_round_trips_through_plain_state(tmp_path: Path) -> None:
    g = rng(9)
    guide = torch.randn(SHAPE, generator=g)
    reg = WNNMRegulariser.from_maps(guide, mask_from_amplitude(guide), {"T1": 0.5}, c=2.0)
    path = tmp_path / "state.pt"
    torch.save(reg.state_dict(), path)
    back = WNNMRegulariser.from_state(torch.load(path, weights_only=True))  # plain data only
    assert torch.equal(back.matching.indices, reg.matching.indices)
    assert (back.matching.shape, back.weights, back.c, back.eps) == (SHAPE, {"T1": 0.5}, 2.0, 1e-6)
    maps = {"T1": torch.randn(SHAPE, generator=g)}
    assert torch.equal(back(maps), reg(maps))
    state = reg.state_dict()
    with pytest.raises(ValueError, match="indices outside"):
        WNNMRegulariser.from_state(dict(state, indices=state["indices"] + math.prod(SHAPE)))
    with pytest.raises(ValueError, match="int64"):
        WNNMRegulariser.from_state(dict(state, indices=state["indices"].float()))


@pytest.mark.cuda
def test_cuda_matches_cpu() -> None:
    g = rng(9)
    guide = torch.randn(SHAPE, generator=g)
    maps = torch.randn(SHAPE, generator=g)
    mask = torch.rand(SHAPE, generator=g) > 0.2
    cpu = BlockMatching.compute(guide, mask)
    gpu = BlockMatching.compute(guide.cuda(), mask.cuda())
    assert gpu.indices.is_cuda and torch.equal(gpu.indices, cpu.to("cuda").indices)
    x_cpu = maps.clone().requires_grad_()
    x_gpu = maps.cuda().requires_grad_()
    wnnm_loss(x_cpu, cpu).backward()
    loss_gpu = wnnm_loss(x_gpu, gpu)
    loss_gpu.backward()
    torch.testing.assert_close(loss_gpu.cpu(), wnnm_loss(maps, cpu), rtol=1e-5, atol=0.0)
    torch.testing.assert_close(x_gpu.grad.cpu(), x_cpu.grad, rtol=1e-4, atol=1e-7)
