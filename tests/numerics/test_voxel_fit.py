"""Voxel-wise fitting and weighted images from k-space: noiseless and noisy recovery of known maps,
the dictionary stage, masks, and CG-SENSE / zero-filled images of small simulated problems."""

import math

import numpy as np
import pytest
import torch

from lorein.data.problem import Problem
from lorein.numerics.sense import sense_images, zero_filled_images
from lorein.numerics.voxel_fit import FitBounds, fit_maps
from lorein.physics.coils import rss_normalise, simulate_coils
from lorein.physics.contrasts import ContrastTable
from lorein.physics.models.base import SignalModel
from lorein.physics.models.registry import signal_model
from lorein.physics.operators import EncodingOperator
from lorein.physics.sampling import sample_lines
from lorein.sim.presets import get_preset, vfa_megre_table
from tests.helpers import randn_complex, rng

SHAPE = (4, 6, 5)  # nz, ny, nx
TIMES = ("M0", "T1", "T2", "T2star")


def truth_maps(seed: int = 0) -> dict[str, torch.Tensor]:
    """Seeded maps over brain-like ranges, independent per voxel."""
    g = rng(seed)

    def uniform(low: float, high: float, log: bool = False) -> torch.Tensor:
        u = torch.rand(SHAPE, generator=g)
        if log:
            return torch.exp(math.log(low) + u * (math.log(high) - math.log(low)))
        return low + u * (high - low)

    return {
        "M0": uniform(0.5, 1.5),
        "T1": uniform(0.6, 2.0, log=True),
        "T2": uniform(0.05, 0.12, log=True),
        "T2star": uniform(0.02, 0.08, log=True),
        "B0": uniform(-40.0, 40.0),
        "phase0": uniform(-3.0, 3.0),
    }


def small_t2ir_table() -> ContrastTable:
    """2 T2-prep times x 10 segments x 4 echoes, TR 30 ms, flip 10 deg (sim2-like, T = 80)."""
    taus = torch.tensor([0.025, 0.09])
    n_segments, echoes = 10, torch.tensor([4.5, 11.2, 17.9, 24.6]) * 1e-3
    te = echoes.repeat(len(taus) * n_segments)
    return ContrastTable(
        flip_angle=torch.full_like(te, math.radians(10.0)),
        echo_time=te,
        repetition_time=torch.full_like(te, 0.03),
        prep_time=taus.repeat_interleave(n_segments * len(echoes)),
        segment=torch.arange(1, n_segments + 1).repeat_interleave(len(echoes)).repeat(len(taus)),
    )


MODELS = {
    "vfa_megre": lambda: signal_model("vfa_megre", vfa_megre_table()),
    "t2ir_gre": lambda: signal_model("t2ir_gre", small_t2ir_table()),
    "megre": lambda: signal_model("megre", get_preset("megre-small").contrast_table()),
}


def relative_errors(
    maps: dict[str, torch.Tensor], truth: dict[str, torch.Tensor], model: SignalModel
) -> dict[str, torch.Tensor]:
    """Per-voxel errors: relative for M0 and times, in Hz for B0, wrapped radians for phase0."""
    errors = {}
    for name in model.parameters:
        difference = maps[name] - truth[name]
        if name in TIMES:
            difference = difference / truth[name]
        if name == "phase0":
            difference = torch.remainder(difference + math.pi, 2 * math.pi) - math.pi
        errors[name] = difference
    return errors


def add_noise(images: torch.Tensor, snr: float, seed: int) -> torch.Tensor:
    """Complex Gaussian noise of standard deviation ``mean |images| / snr``."""
    sigma = float(images.abs().mean()) / snr
    return images + randn_complex(*images.shape, seed=seed) * (sigma / math.sqrt(2.0))


def data_cost(model: SignalModel, maps: dict[str, torch.Tensor], images: torch.Tensor):
    """``[nz, ny, nx]`` ``sum_t |S_t(maps) - images_t|^2``."""
    return (model(maps) - images).abs().square().sum(0)


# --------------------------------------------------------------------------------------------
# fit_maps
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MODELS)
def test_nlls_recovers_noiseless_maps(name: str) -> None:
    model = MODELS[name]()
    truth = truth_maps()
    maps = fit_maps(model(truth), model)
    assert set(maps) == set(model.parameters)
    for m in maps.values():
        assert m.dtype == torch.float32 and m.shape == SHAPE
    errors = relative_errors(maps, truth, model)
    # reached: about 1e-6 (times, M0), 4e-6 Hz, 1e-6 rad
    for p in ("M0", "T1", "T2", "T2star"):
        if p in errors:
            assert errors[p].abs().max() < 1e-4, p
    assert errors["B0"].abs().max() < 1e-3
    assert errors["phase0"].abs().max() < 1e-4


@pytest.mark.parametrize("name", MODELS)
def test_dictionary_is_within_the_grid_resolution(name: str) -> None:
    model = MODELS[name]()
    truth = truth_maps(1)
    size = 40
    maps = fit_maps(model(truth), model, method="dictionary", dictionary_size=size)
    bounds = FitBounds()
    # one grid step for T1 alone; T1 and T2 are correlated in the short t2ir table, so the best
    # atom of the T1 x T2 grid may lie one cell further along the correlation
    steps = 1 if name == "vfa_megre" else 2
    for p in ("T1", "T2"):
        if p in model.parameters:
            step = math.log(bounds.of(p)[1] / bounds.of(p)[0]) / (size - 1)
            distance = torch.log(maps[p] / truth[p]).abs()
            assert distance.max() <= steps * step, p
            assert distance.median() < 0.5 * step, p
            assert distance.max() > 1e-3 * step, p  # on the grid, not refined
    # T2*, B0 and the phase come from the echo analysis, exact for noiseless data
    errors = relative_errors(maps, truth, model)
    assert errors["T2star"].abs().max() < 1e-4
    assert errors["B0"].abs().max() < 1e-3
    assert errors["M0"].abs().max() < 0.1


@pytest.mark.parametrize("name", MODELS)
def test_noisy_fit_is_accurate_unbiased_and_beats_the_initialisation(name: str) -> None:
    model = MODELS[name]()
    truth = truth_maps(2)
    images = add_noise(model(truth), snr=50.0, seed=3)
    initial = fit_maps(images, model, method="dictionary")
    maps = fit_maps(images, model)
    # the fit reaches the least-squares minimum: a misfit below that of the initialisation and of
    # the true maps in every voxel
    fit_cost, initial_cost = data_cost(model, maps, images), data_cost(model, initial, images)
    truth_cost = data_cost(model, truth, images)
    assert (fit_cost <= initial_cost * (1 + 1e-5)).all()
    assert (fit_cost <= truth_cost * (1 + 1e-4)).all()
    assert fit_cost.sum() < initial_cost.sum()
    errors = relative_errors(maps, truth, model)
    initial_errors = relative_errors(initial, truth, model)
    # reached (vfa_megre / t2ir_gre): rms T1 0.8 % / 0.4 %, T2* 1.0 % / 0.8 %, B0 0.04 Hz;
    # megre (8 contrasts against 60 and 80): rms M0 1.1 %, T2* 2.5 %, B0 0.11 Hz
    for p in ("M0", "T1", "T2", "T2star"):
        if p in errors:
            rms = errors[p].square().mean().sqrt()
            assert rms < 0.03, p
            assert errors[p].mean().abs() < 0.3 * rms + 1e-3, p  # no bias beyond its spread
    # the dictionary's grid limits T1; megre's one atom leaves the echo analysis's T2*
    refined = "T1" if "T1" in errors else "T2star"
    assert errors[refined].square().mean() < initial_errors[refined].square().mean()
    assert errors["B0"].abs().max() < 1.0
    assert errors["phase0"].abs().max() < 0.05


def test_mask_and_empty_voxels() -> None:
    model = MODELS["vfa_megre"]()
    truth = truth_maps(4)
    truth["M0"][0, 0, 0] = 0.0  # no signal inside the mask
    images = model(truth)
    mask = torch.zeros(SHAPE, dtype=torch.bool)
    mask[:2] = True
    maps = fit_maps(images, model, mask=mask)
    full = fit_maps(images, model)
    outside = ~mask
    outside[0, 0, 0] = True
    for name, m in maps.items():
        assert (m[outside] == 0).all(), name  # not fitted: zeros
        torch.testing.assert_close(m[~outside], full[name][~outside], rtol=1e-4, atol=1e-4)
    errors = relative_errors(maps, truth, model)
    assert errors["T1"][~outside].abs().max() < 1e-4


def test_estimates_the_inversion_efficiency() -> None:
    model = signal_model("t2ir_gre", small_t2ir_table(), estimate_inversion=True)
    truth = truth_maps(5)
    truth["B"] = -0.75 - 0.2 * torch.rand(SHAPE, generator=rng(6))
    maps = fit_maps(model(truth), model, iterations=30)  # B, T1 and M0 are strongly correlated
    errors = relative_errors(maps, truth, model)
    assert (maps["B"] - truth["B"]).abs().max() < 1e-4
    assert errors["T1"].abs().max() < 1e-4 and errors["T2"].abs().max() < 1e-4
    initial = fit_maps(model(truth), model, method="dictionary")
    assert (initial["B"] == -1.0).all()  # the dictionary keeps the model's fixed efficiency


def test_readouts_with_different_echo_times() -> None:
    # flips 5-20 deg read 12 echoes, 30 and 40 deg only the first 5: per-readout echo weights
    table = vfa_megre_table()
    keep = torch.arange(table.n_contrasts)
    keep = keep[(keep < 36) | (keep % 12 < 5)]
    model = signal_model("vfa_megre", table.subset(keep))
    truth = truth_maps(7)
    initial = fit_maps(model(truth), model, method="dictionary", dictionary_size=40)
    step = math.log(120.0) / 39
    assert torch.log(initial["T1"] / truth["T1"]).abs().max() <= step
    errors = relative_errors(fit_maps(model(truth), model), truth, model)
    assert errors["T1"].abs().max() < 1e-4 and errors["T2star"].abs().max() < 1e-4


def test_rejects_unsupported_inputs() -> None:
    free = signal_model("vfa_megre", vfa_megre_table(), phase="free")
    images = torch.zeros(60, *SHAPE, dtype=torch.complex64)
    with pytest.raises(ValueError, match="phase='b0'"):
        fit_maps(images, free)
    model = MODELS["vfa_megre"]()
    with pytest.raises(ValueError, match="contrasts"):
        fit_maps(images[:10], model)
    with pytest.raises(ValueError, match="method"):
        fit_maps(images, model, method="grid")  # type: ignore[arg-type]
    single = signal_model("vfa_megre", vfa_megre_table().subset(torch.arange(0, 60, 12)))
    with pytest.raises(ValueError, match="two echo times"):
        fit_maps(images[:5], single)


# --------------------------------------------------------------------------------------------
# weighted images from k-space
# --------------------------------------------------------------------------------------------


def make_problem(
    images: torch.Tensor,
    coils: torch.Tensor,
    ky: torch.Tensor,
    kz: torch.Tensor,
    contrast: torch.Tensor,
    contrasts: ContrastTable,
) -> Problem:
    """A problem whose lines are ``E images`` (noiseless)."""
    n_contrasts, nz, ny, nx = images.shape
    op = EncodingOperator(coils, ky, kz, contrast, n_contrasts=n_contrasts)
    return Problem(
        signal_model="vfa_megre",
        kspace=op.forward(images),
        ky=ky,
        kz=kz,
        contrast=contrast,
        contrasts=contrasts,
        matrix=(nx, ny, nz),
        voxel_size=(3.0, 3.0, 5.0),
        affine=np.eye(4),
        coils=coils,
    )


def fully_sampled(n_contrasts: int, ny: int, nz: int) -> tuple[torch.Tensor, ...]:
    """``ky, kz, contrast`` of every location for every contrast."""
    grid = torch.meshgrid(torch.arange(nz), torch.arange(ny), indexing="ij")
    kz, ky = (k.flatten() for k in grid)
    contrast = torch.arange(n_contrasts).repeat_interleave(ny * nz)
    return ky.repeat(n_contrasts), kz.repeat(n_contrasts), contrast


def test_fully_sampled_sense_and_zero_filled_images_are_exact() -> None:
    model = MODELS["vfa_megre"]()
    truth = truth_maps(8)
    images = model(truth)
    nz, ny, nx = SHAPE
    # unit-RSS coils times a smooth profile: zero filling must divide by sum |C|^2
    profile = 1.0 + torch.linspace(0.0, 1.0, nz * ny * nx).reshape(SHAPE)
    coils = rss_normalise(simulate_coils(4, (nx, ny, nz), (3.0, 3.0, 5.0))) * profile
    problem = make_problem(images, coils, *fully_sampled(60, ny, nz), model.contrasts)
    sense = sense_images(problem, coils, iterations=30)
    assert sense.dtype == torch.complex64 and sense.shape == images.shape
    assert (sense - images).norm() / images.norm() < 1e-5
    chunked = sense_images(problem, coils, iterations=30, chunk_contrasts=7)
    torch.testing.assert_close(chunked, sense, rtol=1e-5, atol=1e-6)
    zero_filled = zero_filled_images(problem, coils, chunk_contrasts=13)
    assert (zero_filled - images).norm() / images.norm() < 1e-5
    # a contrast without lines gives a zero image and leaves the others exact
    ky, kz, contrast = fully_sampled(60, ny, nz)
    keep = contrast != 9
    partial = make_problem(images, coils, ky[keep], kz[keep], contrast[keep], model.contrasts)
    for result in (
        sense_images(partial, coils, 30, chunk_contrasts=4),
        zero_filled_images(partial, coils),
    ):
        assert (result[9] == 0).all()
        others = torch.arange(60) != 9
        assert (result[others] - images[others]).norm() / images[others].norm() < 1e-5
    # the fit baseline end to end: SENSE images -> maps
    errors = relative_errors(fit_maps(sense, model), truth, model)
    assert errors["T1"].abs().max() < 1e-3 and errors["T2star"].abs().max() < 1e-3


def test_undersampled_sense_is_close_and_beats_zero_filling() -> None:
    nz, ny, nx, n_contrasts, n_coils = 4, 16, 12, 3, 8
    g = rng(9)
    # smooth complex images: a few low spatial frequencies
    low = torch.zeros(n_contrasts, nz, ny, nx, dtype=torch.complex64)
    low[:, 1:3, 6:10, 4:8] = randn_complex(n_contrasts, 2, 4, 4, seed=10)
    images = torch.fft.ifftn(torch.fft.ifftshift(low, dim=(-3, -2, -1)), dim=(-3, -2, -1))
    images = images * (1.0 + torch.rand(1, nz, ny, nx, generator=g))
    coils = rss_normalise(simulate_coils(n_coils, (nx, ny, nz), (3.0, 3.0, 5.0)))
    lines = sample_lines(ny, nz, torch.arange(n_contrasts), 1.5, calib=(6, 2), seed=11)
    table = vfa_megre_table().subset(torch.arange(n_contrasts))
    problem = make_problem(images, coils, lines.ky, lines.kz, lines.contrast, table)
    sense = sense_images(problem, coils, iterations=30)
    zero_filled = zero_filled_images(problem, coils)
    sense_error = (sense - images).norm() / images.norm()
    zero_filled_error = (zero_filled - images).norm() / images.norm()
    # reached: 7e-4 for CG-SENSE at R = 1.5, 8 coils (1e-6 after 100 iterations); zero filling
    # 0.45
    assert sense_error < 5e-3
    assert zero_filled_error > 0.2
    # zero filling keeps the scale of an image with a flat spectrum: projection on it about 1
    white = randn_complex(n_contrasts, nz, ny, nx, seed=12)
    problem = make_problem(white, coils, lines.ky, lines.kz, lines.contrast, table)
    zero_filled = zero_filled_images(problem, coils)
    scale = torch.vdot(white.flatten(), zero_filled.flatten()).real / white.norm() ** 2
    assert abs(float(scale) - 1.0) < 0.1
