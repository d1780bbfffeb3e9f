"""Metrics: capped NRMSE, scale-invariant M0, B0 RMSE, SSIM against simple cases."""

import torch

from lorein.eval.metrics import map_error, nrmse, ssim, ssim_of_map
from tests.helpers import rng


def _maps() -> tuple[torch.Tensor, torch.Tensor]:
    g = rng(0)
    ref = 0.5 + torch.rand(3, 10, 12, generator=g)
    mask = torch.zeros(3, 10, 12, dtype=torch.uint8)
    mask[:, 2:8, 3:10] = 1
    return ref, mask


def test_nrmse_naive_formula() -> None:
    ref, mask = _maps()
    x = ref + 0.1
    m = mask.bool()
    expected = float(torch.sqrt(((x - ref)[m] ** 2).sum() / (ref[m] ** 2).sum()))
    assert abs(nrmse(x, ref, mask) - expected) < 1e-6
    assert nrmse(ref, ref, mask) == 0.0


def test_caps_hide_csf_like_outliers() -> None:
    ref, mask = _maps()
    ref[0, 4, 5] = 4.5  # CSF-like T1 above the 3.5 s cap
    x = ref.clone()
    x[0, 4, 5] = 9.0  # wildly wrong, but both above the cap
    assert map_error("T1", x, ref, mask) == 0.0
    x[0, 4, 6] += 0.2  # an error below the cap counts
    assert map_error("T1", x, ref, mask) > 0.0


def test_m0_is_scale_invariant_and_b0_in_hz() -> None:
    ref, mask = _maps()
    assert map_error("M0", 3.7 * ref, ref, mask) < 1e-6
    assert abs(map_error("B0", ref + 2.0, ref, mask) - 2.0) < 1e-5


def test_ssim_identity_and_noise() -> None:
    ref, mask = _maps()
    assert abs(ssim(ref, ref, mask, data_range=1.0) - 1.0) < 1e-6
    noisy = ref + 0.3 * torch.randn(ref.shape, generator=rng(1))
    assert ssim(noisy, ref, mask, data_range=1.0) < 0.9
    assert ssim_of_map("T1", ref, ref, mask) > 0.999
