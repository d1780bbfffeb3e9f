"""Field: grid output against a naive encoding + the field's MLPs; output transforms."""

from __future__ import annotations

import pytest
import torch

from lorein.inr.field import Field, InwardClamp, plane_voxels
from lorein.inr.hash_encoding import grid_coordinates
from tests.helpers import rng
from tests.inr.naive_hash import naive_encode

GRID = (6, 7, 5)
ENC = {"n_levels": 4, "n_features": 2, "log2_table": 6, "n_min": 2, "growth": 1.5}
MLP_KW = {"hidden": 16, "n_hidden_layers": 2, "chunk_size": 64}


def _field(out_features: int, output: str = "linear", seed: int = 0, **kwargs) -> Field:
    torch.manual_seed(seed)
    field = Field(GRID, out_features, ENC, MLP_KW, output=output, **kwargs)
    with torch.no_grad():
        field.encoding.table.uniform_(-1.0, 1.0, generator=rng(seed + 50))
    return field


def _reference(field: Field) -> torch.Tensor:
    """Naive encoding, unchunked MLPs, transform written out: ``[N, out]`` real."""
    geometry = {k: v for k, v in ENC.items() if k != "n_features"}
    features = naive_encode(grid_coordinates(GRID), field.encoding.table, **geometry)
    return torch.cat([mlp.net(features) for mlp in field.mlps], dim=1)


@pytest.mark.parametrize(
    ("output", "out_features", "separate"),
    [("linear", 3, True), ("exp", 2, True), ("complex", 4, True), ("complex", 4, False)],
)
def test_matches_naive_values_and_gradients(output: str, out_features: int, separate: bool) -> None:
    field = _field(out_features, output, seed=1, separate_complex_mlps=separate)
    assert len(field.mlps) == (2 if output == "complex" and separate else 1)
    values = field()
    h = _reference(field)
    if output == "exp":
        ref = h.exp()
    elif output == "complex":
        ref = torch.complex(h[:, : out_features // 2], h[:, out_features // 2 :])
    else:
        ref = h
    ref = ref.T.reshape(-1, *GRID)
    assert values.shape == ref.shape
    torch.testing.assert_close(values, ref, rtol=1e-5, atol=1e-6)

    weight = torch.randn(values.shape, dtype=values.dtype, generator=rng(2))
    params = list(field.parameters())
    assert len(params) == 1 + 6 * len(field.mlps)
    grads = torch.autograd.grad((values * weight).real.sum(), params)
    grads_ref = torch.autograd.grad((ref * weight).real.sum(), params)
    for g, g_ref in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-5)
    assert float(grads[0].abs().max()) > 0


def test_forward_at_matches_grid() -> None:
    field = _field(2, "complex", seed=3)
    at = field.forward_at(grid_coordinates(GRID))
    assert at.shape == (6 * 7 * 5, 1) and at.dtype == torch.complex64
    torch.testing.assert_close(field(), at.T.reshape(1, *GRID), rtol=1e-6, atol=1e-7)


def test_at_voxels_matches_grid_values_and_gradients() -> None:
    field = _field(2, "complex", seed=3)
    voxels = torch.tensor([0, 3, 3, 41, 6 * 7 * 5 - 1])  # a repeated voxel counts twice
    weights = torch.randn(len(voxels), 1, generator=torch.Generator().manual_seed(0))
    at = field.at_voxels(voxels)
    (at.real * weights).sum().backward()
    grad_at = field.encoding.table.grad.clone()
    field.zero_grad()
    full = field().reshape(1, -1).T
    (full[voxels].real * weights).sum().backward()
    torch.testing.assert_close(at, full[voxels].detach(), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(grad_at, field.encoding.table.grad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("planes", [slice(0, 1), slice(1, 4), slice(3, 5)])
def test_at_planes_is_the_slab_of_the_grid(planes: slice) -> None:
    field = _field(4, "complex", seed=5)
    slab = field.at_planes(planes)
    torch.testing.assert_close(slab, field()[..., planes], rtol=1e-6, atol=1e-7)
    voxels = plane_voxels(GRID, planes).reshape(GRID[0], GRID[1], -1)
    flat = torch.arange(6 * 7 * 5).reshape(GRID)
    assert torch.equal(voxels, flat[..., planes])


def test_complex_dtype_and_shape() -> None:
    out = _field(6, "complex")()
    assert out.dtype == torch.complex64 and out.shape == (3, *GRID)
    assert float(out.imag.detach().abs().max()) > 0
    with pytest.raises(ValueError, match="even"):
        Field(GRID, 3, ENC, output="complex")


def test_exp_positive_and_clamped() -> None:
    lower, upper = 0.5, [5.0, 1.0]
    unbounded = _field(2, "exp", seed=4)
    bias = unbounded.mlps[0].net[-1].bias
    with torch.no_grad():  # put the median output of channel 0 at 5, of channel 1 at 0.5
        median = unbounded().detach().flatten(1).median(dim=1).values
        bias += torch.tensor([5.0, 0.5]).log() - median.log()
    field = _field(2, "exp", seed=4, bounds=(lower, upper))
    field.load_state_dict(unbounded.state_dict())
    ref, values = unbounded(), field()
    assert values.dtype == torch.float32 and bool((ref > 0).all())
    torch.testing.assert_close(values[0], ref[0].clamp(lower, upper[0]))
    torch.testing.assert_close(values[1], ref[1].clamp(lower, upper[1]))
    clamped = ref[0] > upper[0]
    assert 0 < int(clamped.sum()) < clamped.numel()
    assert 0 < int((ref[1] < lower).sum()) < clamped.numel()
    # Above the upper bound the gradient passes only when descent lowers h (back inside):
    # d sum(exp(h)) / d bias counts the clamped voxels (at exp(h) = upper), d -sum does not.
    bias_of = field.mlps[0].net[-1].bias
    (down,) = torch.autograd.grad(values[0].sum(), bias_of, retain_graph=True)
    inside = ref[0][~clamped].sum()
    torch.testing.assert_close(down[0], inside + upper[0] * clamped.sum())
    (up,) = torch.autograd.grad(-values[0].sum(), bias_of)
    torch.testing.assert_close(up[0], -inside)


def test_inward_clamp_gradient_only_points_back_inside() -> None:
    h = torch.tensor([-2.0, -2.0, 0.0, 2.0, 2.0], requires_grad=True)
    lower, upper = torch.tensor(-1.0), torch.tensor(1.0)
    out = InwardClamp.apply(h, lower, upper)
    torch.testing.assert_close(out.detach(), torch.tensor([-1.0, -1.0, 0.0, 1.0, 1.0]))
    weights = torch.tensor([1.0, -1.0, 3.0, 1.0, -1.0])  # d loss / d out
    (grad,) = torch.autograd.grad((weights * out).sum(), h)
    # below: descent raises h only for weight -1; above: descent lowers h only for weight +1
    torch.testing.assert_close(grad, torch.tensor([0.0, -1.0, 3.0, 1.0, 0.0]))


def test_invalid_bounds() -> None:
    with pytest.raises(ValueError, match="positive"):
        Field(GRID, 1, ENC, output="exp", bounds=(0.0, None))
    with pytest.raises(ValueError, match="exceed"):
        Field(GRID, 1, ENC, output="exp", bounds=(2.0, 1.0))
    with pytest.raises(ValueError, match="exp"):
        Field(GRID, 1, ENC, output="linear", bounds=(None, 1.0))


def test_deterministic_given_seed() -> None:
    a, b = _field(3, seed=5), _field(3, seed=5)
    assert torch.equal(a(), b())
    assert not torch.equal(a(), _field(3, seed=6)())
    assert list(a.state_dict())[0] == "grid_encoding.encoding.table"
