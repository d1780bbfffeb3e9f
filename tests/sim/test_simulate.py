"""End-to-end simulation on a tiny protocol: indexing, scaling, noise level, R, the slab, purity
and the paper's protocol."""

import dataclasses
import math

import pytest
import torch

from lorein.eval.metrics import capped
from lorein.numerics.sense import zero_filled_images
from lorein.numerics.voxel_fit import fit_maps
from lorein.physics.models.registry import signal_model
from lorein.physics.operators import EncodingOperator
from lorein.sim.phantom import AIR
from lorein.sim.presets import PRESETS, Preset, T2irProtocol, VfaProtocol, get_preset
from lorein.sim.simulate import band_limit, simulate
from tests.fake_cuda import fake_cuda
from tests.helpers import TINY


def tiny(shared: bool = False, oversampling: int = 2, model: str = "vfa_megre") -> Preset:
    return Preset(
        name="tiny",
        signal_model=model,
        matrix=(24, 24, 6),
        voxel_size=(9.0, 9.0, 10.0),
        n_coils=4,
        accelerations=(12,),
        calibration=(6, 2),
        shared_echo_lines=shared,
        oversampling=oversampling,
        protocol=T2irProtocol() if model == "t2ir_gre" else VfaProtocol(),
    )


def test_band_limit_preserves_constant_and_is_exact_without_oversampling() -> None:
    fine = torch.full((1, 8, 12, 10), 2.5, dtype=torch.complex64)
    coarse = band_limit(fine, (4, 6, 5))
    torch.testing.assert_close(coarse, torch.full((1, 4, 6, 5), 2.5 + 0j), rtol=1e-5, atol=1e-5)


def test_noiseless_lines_equal_the_discrete_forward_model() -> None:
    """With no oversampling and no noise the data are exactly E(model(truth))."""
    preset = tiny(oversampling=1)
    sim = simulate(preset, 12, seed=3, snr=math.inf, progress=False)
    p, t = sim.problem, sim.truth
    maps = {k: getattr(t, k) for k in ("M0", "T1", "T2", "T2star", "B0", "phase0")}
    images = signal_model(p.signal_model, p.contrasts)(maps)
    enc = EncodingOperator(t.coils, p.ky, p.kz, p.contrast, n_contrasts=p.n_contrasts)
    expected = enc(images)
    err = (p.kspace - expected).norm() / expected.norm()
    assert err < 1e-5, err
    assert sim.noise_std == 0.0


def test_oversampled_data_are_close_to_but_not_the_discrete_model() -> None:
    """Avoiding the inverse crime: fine-grid data differ from the coarse model, but not wildly."""
    sim = simulate(tiny(), 12, seed=3, snr=math.inf, progress=False)
    p, t = sim.problem, sim.truth
    maps = {k: getattr(t, k) for k in ("M0", "T1", "T2", "T2star", "B0", "phase0")}
    images = signal_model(p.signal_model, p.contrasts)(maps)
    enc = EncodingOperator(t.coils, p.ky, p.kz, p.contrast, n_contrasts=p.n_contrasts)
    expected = enc(images)
    err = float((p.kspace - expected).norm() / expected.norm())
    assert 1e-3 < err < 0.5, err


def test_noise_level_and_acceleration() -> None:
    clean = simulate(tiny(), 12, seed=1, snr=math.inf, progress=False)
    noisy = simulate(tiny(), 12, seed=1, snr=20.0, progress=False)
    assert abs(noisy.problem.acceleration / 12 - 1) < 0.02
    residual = noisy.problem.kspace - clean.problem.kspace
    measured = float(residual.abs().pow(2).mean().sqrt())
    assert abs(measured / noisy.noise_std - 1) < 0.05
    mask = clean.truth.mask.bool()
    assert noisy.noise_std > 0 and clean.truth.M0[mask].mean() > 0


@pytest.mark.cuda
def test_cuda_simulation_matches_cpu() -> None:
    cpu = simulate(tiny(), 12, seed=4, snr=20.0, progress=False)
    gpu = simulate(tiny(), 12, seed=4, snr=20.0, progress=False, device="cuda")
    assert gpu.problem.kspace.device.type == "cpu"
    for name in ("ky", "kz", "contrast"):
        assert torch.equal(getattr(gpu.problem, name), getattr(cpu.problem, name))
    err = (gpu.problem.kspace - cpu.problem.kspace).norm() / cpu.problem.kspace.norm()
    assert err < 1e-5, err
    assert gpu.noise_std == pytest.approx(cpu.noise_std, rel=1e-5)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CUDA test above runs on the real GPU")
def test_simulation_keeps_its_tensors_on_the_device() -> None:
    cpu = simulate(tiny(), 12, seed=4, snr=20.0, progress=False)
    with fake_cuda():
        gpu = simulate(tiny(), 12, seed=4, snr=20.0, progress=False, device="cuda")
    assert torch.equal(gpu.problem.kspace, cpu.problem.kspace)


def test_t2ir_echoes_share_lines() -> None:
    sim = simulate(tiny(shared=True, model="t2ir_gre"), 160, seed=0, progress=False)
    p = sim.problem
    readout = p.contrasts.readout_index()[p.contrast]
    for r in torch.unique(readout)[:20].tolist():
        rows = readout == r
        per_contrast = {
            int(c): sorted(
                zip(
                    p.ky[rows & (p.contrast == c)].tolist(),
                    p.kz[rows & (p.contrast == c)].tolist(),
                    strict=True,
                )
            )
            for c in torch.unique(p.contrast[rows])
        }
        assert len({tuple(v) for v in per_contrast.values()}) == 1


def test_presets_follow_the_paper() -> None:
    s1, s2 = get_preset("sim1"), get_preset("sim2")
    assert s1.matrix == (112, 112, 16) and s1.n_coils == 24
    assert s1.contrast_table().n_contrasts == 60
    assert s2.matrix == (240, 240, 14) and s2.n_coils == 14
    assert s2.contrast_table().n_contrasts == 1280
    for small, big in (("sim1-small", "sim1"), ("sim2-small", "sim2")):
        a, b = PRESETS[small], PRESETS[big]
        assert a.accelerations == b.accelerations
        torch.testing.assert_close(a.contrast_table().echo_time, b.contrast_table().echo_time)
        assert all(abs(fa - fb) < 1 for fa, fb in zip(a.fov, b.fov, strict=True))


def test_resized_preset_is_the_central_slice_with_its_own_coil_array() -> None:
    """``--nz 1 --coils 1``: the slab's central slice (same truth there), phase-encoded along y
    alone, one unit-magnitude channel; the calibration region shrinks to the slice."""
    flat = TINY.resized(nz=1, n_coils=1)
    assert (flat.matrix, flat.n_coils, flat.calibration) == ((24, 24, 1), 1, (8, 1))
    assert flat.voxel_size == TINY.voxel_size and TINY.resized() == TINY
    sim, slab = (simulate(p, 3, seed=1, progress=False) for p in (flat, TINY))
    assert torch.equal(sim.truth.T1[0], slab.truth.T1[TINY.matrix[2] // 2])
    assert tuple(sim.problem.kspace.shape[1:]) == (1, 24) and bool((sim.problem.kz == 0).all())
    assert sim.truth.coils.shape == (1, 1, 24, 24)
    torch.testing.assert_close(sim.truth.coils.abs(), torch.ones(1, 1, 24, 24))
    for bad in ({"nz": 0}, {"n_coils": -1}):
        with pytest.raises(ValueError, match="expected 1 or more"):
            TINY.resized(**bad)


def per_slice_fit_errors(preset: Preset, seed: int) -> dict[str, torch.Tensor]:
    """Capped NRMSE of T1 and T2* in the truth mask, per slice, of the voxel fit of fully
    sampled, noiseless data with the true coils (the images are then exact)."""
    sim = simulate(preset, 1, seed=seed, snr=math.inf, progress=False)
    p, t = sim.problem, sim.truth
    images = zero_filled_images(p, t.coils)
    maps = fit_maps(images, signal_model(p.signal_model, p.contrasts), mask=t.mask)
    mask = t.mask.bool()
    errors = {}
    for name in ("T1", "T2star"):
        x, ref = capped(name, maps[name]), capped(name, getattr(t, name))
        errors[name] = torch.tensor(
            [float((x[z] - ref[z])[mask[z]].norm() / ref[z][mask[z]].norm()) for z in range(8)]
        )
    return errors


def test_fully_sampled_fit_error_is_flat_across_the_slab() -> None:
    """The slab does not wrap: its first and last slices are fitted as well as the inner ones.

    TINY with 8 slices of 8 mm (the paper's 64 mm slab). Before the simulation rendered a margin
    around the slab, the band limit wrapped the slab's top into its bottom: T2* error 0.46 / 0.30
    in the first / last slice, 0.28-0.35 in the inner ones (now 0.29 / 0.25 and 0.28-0.33).
    """
    preset = dataclasses.replace(TINY, matrix=(24, 24, 8), voxel_size=(9.0, 9.0, 8.0))
    for name, errors in per_slice_fit_errors(preset, seed=0).items():
        inner = errors[1:-1].median()
        assert errors[0] < 1.2 * inner and errors[-1] < 1.2 * inner, (name, errors)


def test_truth_records_the_purity_of_each_voxel() -> None:
    sim = simulate(tiny(), 12, seed=2, snr=math.inf, progress=False)
    t = sim.truth
    assert t.purity is not None and t.purity.shape == t.mask.shape
    assert t.purity.dtype == torch.float32
    assert (t.purity > 0).all() and (t.purity <= 1).all()
    corner = t.purity[:, :2, :2]  # air, far from the head
    assert (t.extra["labels"][:, :2, :2] == AIR).all() and torch.equal(corner, torch.ones(6, 2, 2))
    mixed = t.purity[t.mask.bool()]
    assert (mixed < 0.9).any() and (mixed >= 0.9).any()  # 9-10 mm voxels: pure and mixed ones
    assert (sim.simulation, sim.oversampling, sim.slab_margin) == ("fine-grid", 2, 2)
    assert sim.attrs() == {"simulation": "fine-grid", "oversampling": 2, "slab_margin": 2}


def test_paper_protocol_is_the_discrete_model_of_the_truth() -> None:
    """No finer grid: the data are exactly E(model(truth)) and every voxel is pure."""
    sim = simulate(tiny(), 12, seed=3, snr=math.inf, progress=False, paper_protocol=True)
    p, t = sim.problem, sim.truth
    maps = {k: getattr(t, k) for k in ("M0", "T1", "T2", "T2star", "B0", "phase0")}
    images = signal_model(p.signal_model, p.contrasts)(maps)
    enc = EncodingOperator(t.coils, p.ky, p.kz, p.contrast, n_contrasts=p.n_contrasts)
    expected = enc(images)
    assert float((p.kspace - expected).norm() / expected.norm()) < 1e-5
    assert t.purity is not None and torch.equal(t.purity, torch.ones_like(t.purity))
    assert sim.attrs() == {"simulation": "paper-protocol", "oversampling": 1, "slab_margin": 0}
    fine = simulate(tiny(), 12, seed=3, snr=math.inf, progress=False)
    assert torch.equal(fine.problem.ky, p.ky) and torch.equal(fine.truth.T1, t.T1)
    assert float((fine.problem.kspace - p.kspace).norm() / p.kspace.norm()) > 1e-3
