"""Signal models against closed-form limits and a step-by-step Bloch simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lorein.physics.contrasts import ContrastTable
from lorein.physics.models.base import SignalModel
from lorein.physics.models.registry import MODEL_CLASSES, SIGNAL_MODELS, signal_model
from lorein.physics.models.t2ir_gre import T2irGre
from lorein.physics.models.vfa_megre import VfaMegre
from tests.helpers import rng
from tests.physics import bloch_reference as bloch

# WM, cortical GM, deep GM, a fast-relaxing voxel: T1, T2, T2* [s], B0 [Hz], phase0 [rad]
TISSUE = {
    "M0": [0.69, 0.8, 0.75, 1.0],
    "T1": [0.9, 1.4, 1.2, 0.4],
    "T2": [0.075, 0.1, 0.08, 0.05],
    "T2star": [0.05, 0.06, 0.03, 0.015],
    "B0": [-12.0, 5.0, 40.0, -55.0],
    "phase0": [0.3, -1.0, 2.5, 0.0],
}


def tissue_maps(dtype: torch.dtype = torch.float64) -> dict[str, torch.Tensor]:
    return {k: torch.tensor(v, dtype=dtype) for k, v in TISSUE.items()}


def tissue_numpy() -> bloch.Tissue:
    t = {k: np.asarray(v, dtype=np.float64) for k, v in TISSUE.items()}
    return bloch.Tissue(t1=t["T1"], t2=t["T2"], t2star=t["T2star"], df=t["B0"], m0=t["M0"])


RECEIVER_PHASE = np.exp(1j * np.asarray(TISSUE["phase0"]))


def random_maps(model: SignalModel, shape: tuple[int, ...], seed: int, dtype: torch.dtype):
    """In-range random maps for every parameter of ``model``."""
    g = rng(seed)

    def uniform(lo: float, hi: float, *extra: int) -> torch.Tensor:
        return (lo + (hi - lo) * torch.rand(*extra, *shape, generator=g)).to(dtype)

    ranges = {
        "M0": (0.5, 1.0),
        "T1": (0.5, 2.0),
        "T2": (0.04, 0.2),
        "T2star": (0.02, 0.08),
        "B0": (-50.0, 50.0),
        "phase0": (-3.0, 3.0),
        "B": (-1.0, -0.7),
    }
    maps = {p: uniform(*ranges[p]) for p in model.parameters if p != "phase"}
    if "phase" in model.parameters:
        maps["phase"] = uniform(-3.0, 3.0, model.n_echoes)
    return maps


def models_all() -> list[SignalModel]:
    """Both models in both phase modes on small tables (3 echo times, 6 contrasts)."""
    small_vfa = bloch.vfa_table([10.0, 30.0], [2.15e-3, 11.3e-3, 20.45e-3], 46e-3)
    small_t2ir = bloch.t2ir_table([25e-3, 70e-3], 3, [4.5e-3, 11.2e-3], 30e-3, 10.0)
    return [
        VfaMegre(small_vfa),
        VfaMegre(small_vfa, phase="free"),
        T2irGre(small_t2ir),
        T2irGre(small_t2ir, phase="free", estimate_inversion=True),
    ]


def test_factory_knows_the_contrast_table_models() -> None:
    assert set(MODEL_CLASSES) == set(SIGNAL_MODELS) == {"vfa_megre", "t2ir_gre", "megre"}
    assert isinstance(signal_model("vfa_megre", bloch.sim1_table()), VfaMegre)
    model = signal_model("t2ir_gre", bloch.sim2_table(2), estimate_inversion=True)
    assert isinstance(model, T2irGre) and "B" in model.parameters


def test_factory_rejects_unknown_name() -> None:
    with pytest.raises(ValueError, match="'mp2rage'.*t2ir_gre.*vfa_megre"):
        signal_model("mp2rage", bloch.sim1_table())


def test_parameter_names() -> None:
    sim1, sim2 = bloch.sim1_table(), bloch.sim2_table(2)
    assert VfaMegre(sim1).parameters == ("M0", "T1", "T2star", "B0", "phase0")
    assert VfaMegre(sim1, phase="free").parameters == ("M0", "T1", "T2star", "phase")
    assert T2irGre(sim2).parameters == ("M0", "T1", "T2", "T2star", "B0", "phase0")
    assert T2irGre(sim2, phase="free", estimate_inversion=True).parameters == (
        "M0",
        "T1",
        "T2",
        "T2star",
        "B",
        "phase",
    )
    assert VfaMegre(sim1).n_echoes == 12 and T2irGre(sim2).n_echoes == 4


def test_t2ir_needs_preparation_columns() -> None:
    with pytest.raises(ValueError, match="prep_time"):
        T2irGre(bloch.sim1_table())
    table = bloch.sim2_table(2)
    zero_based = ContrastTable(**{**table.columns(), "segment": table.segment - 1})
    with pytest.raises(ValueError, match="from 1"):
        T2irGre(zero_based)


@pytest.mark.parametrize("model", models_all(), ids=lambda m: f"{m.name}-{m.phase_mode}")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shapes_and_dtypes(model: SignalModel, dtype: torch.dtype) -> None:
    maps = random_maps(model, (2, 3, 4), seed=1, dtype=dtype)
    maps["unused"] = torch.zeros(7)
    signal = model(maps)
    expected = torch.complex64 if dtype == torch.float32 else torch.complex128
    assert signal.shape == (model.contrasts.n_contrasts, 2, 3, 4)
    assert signal.dtype == expected
    # any spatial layout: flattening the voxels commutes with the model
    flat = {k: v.flatten(-3) for k, v in maps.items() if k != "unused"}
    torch.testing.assert_close(model(flat), signal.flatten(1))


def test_invalid_maps_are_rejected() -> None:
    model = VfaMegre(bloch.sim1_table())
    maps = random_maps(model, (5,), seed=2, dtype=torch.float32)
    with pytest.raises(KeyError, match="T2star"):
        model({k: v for k, v in maps.items() if k != "T2star"})
    with pytest.raises(ValueError, match="'T1' has shape"):
        model({**maps, "T1": torch.ones(4)})
    free = VfaMegre(bloch.sim1_table(), phase="free")
    with pytest.raises(ValueError, match="'phase' has shape"):
        free({**random_maps(free, (5,), seed=2, dtype=torch.float32), "phase": torch.zeros(5)})
    with pytest.raises(ValueError, match="phase must be"):
        VfaMegre(bloch.sim1_table(), phase="b1")  # type: ignore[arg-type]


def test_vfa_matches_bloch_steady_state() -> None:
    table = bloch.sim1_table()
    model = VfaMegre(table)
    signal = model(tissue_maps()).numpy()  # [60, P]
    tissue = tissue_numpy()
    echo_times = model.echo_times.double().numpy()
    flips = table.flip_angle.double().numpy()[::12]
    tr = float(table.repetition_time[0].double())
    for f, flip in enumerate(flips):
        _, echoes = bloch.spoiled_gre_steady_state(float(flip), tr, echo_times, tissue, 600)
        reference = echoes * RECEIVER_PHASE
        np.testing.assert_allclose(signal[f * 12 : (f + 1) * 12], reference, rtol=1e-6, atol=1e-9)


def test_vfa_closed_form_limits() -> None:
    maps = {k: v[:3] for k, v in tissue_maps().items()}
    te = torch.tensor([0.0, 5e-3, 20e-3], dtype=torch.float64)
    flips = torch.linspace(0.0, 0.5 * math.pi, 2001, dtype=torch.float64)
    decay = torch.exp(-te[:, None] / maps["T2star"])
    phasor = torch.polar(decay, maps["phase0"] + 2 * math.pi * te[:, None] * maps["B0"])
    # TR >> T1: full recovery, S = M0 sin a exp(-TE/T2*) exp(i phi)
    long_tr = VfaMegre(
        ContrastTable(
            flip_angle=torch.full((3,), 0.3), echo_time=te, repetition_time=torch.full((3,), 60.0)
        )
    )
    expected = maps["M0"] * math.sin(0.3) * phasor
    torch.testing.assert_close(long_tr(maps), expected.to(torch.complex128), rtol=1e-6, atol=0)
    # the Ernst angle arccos(E1) maximises the signal; flip 0 gives nothing
    tr = 0.03
    sweep = VfaMegre(
        ContrastTable(
            flip_angle=flips,
            echo_time=torch.zeros_like(flips),
            repetition_time=torch.full_like(flips, tr),
        )
    )
    signal = sweep(maps).abs()
    assert torch.all(signal[0] == 0)
    ernst = torch.arccos(torch.exp(-tr / maps["T1"]))
    step = float(flips[1] - flips[0])
    assert torch.all((flips[signal.argmax(0)] - ernst).abs() <= step)


def simulate_t2ir_prepared(table: ContrastTable, efficiency: np.ndarray) -> np.ndarray:
    """Bloch simulation of each tau's segment from the simulated steady state; ``[T, P]``."""
    taus = torch.unique(table.prep_time.double()).numpy()
    n_seg = int(table.segment.max())
    echo_times = torch.unique(table.echo_time.double()).numpy()
    flip, tr = float(table.flip_angle[0].double()), float(table.repetition_time[0].double())
    tissue = tissue_numpy()
    steady, _ = bloch.spoiled_gre_steady_state(flip, tr, echo_times, tissue, 1500)
    out = []
    for tau in taus:
        _, readouts = bloch.t2ir_segment(
            steady, float(tau), n_seg, flip, tr, echo_times, tissue, efficiency
        )
        out.append(readouts.reshape(-1, readouts.shape[-1]))
    return np.concatenate(out) * RECEIVER_PHASE


def test_t2ir_closed_form_is_exact_for_the_prepared_sequence() -> None:
    table = bloch.t2ir_table([25e-3, 90e-3], 12, [4.5e-3, 17.9e-3], 30e-3, 10.0)
    ideal = T2irGre(table)(tissue_maps()).numpy()
    reference = simulate_t2ir_prepared(table, np.full(4, -1.0))
    np.testing.assert_allclose(ideal, reference, rtol=1e-6, atol=1e-9)
    # imperfect inversion as a map
    efficiency = np.array([-1.0, -0.9, -0.8, -0.7])
    model = T2irGre(table, estimate_inversion=True)
    signal = model({**tissue_maps(), "B": torch.from_numpy(efficiency)}).numpy()
    reference = simulate_t2ir_prepared(table, efficiency)
    np.testing.assert_allclose(signal, reference, rtol=1e-6, atol=1e-9)
    # the fixed inversion efficiency option is the same constant
    fixed = T2irGre(table, inversion_efficiency=-0.8)(tissue_maps()).numpy()
    np.testing.assert_allclose(fixed[:, 2], signal[:, 2], rtol=1e-12)


def periodic_relative_error(n_segments: int, n_cycles: int) -> float:
    """Max |closed form - periodic simulation| / max |closed form|, sim2 protocol, last cycle."""
    table = bloch.sim2_table(n_segments)
    tissue = tissue_numpy()
    echo_times = np.asarray(bloch.SIM2_ECHO_TIMES)
    flip, tr, ideal = math.radians(10.0), 30e-3, np.full(4, -1.0)
    m = bloch.equilibrium(tissue.m0)
    for _ in range(n_cycles):
        cycle = []
        for tau in bloch.SIM2_TAUS:
            m, readouts = bloch.t2ir_segment(
                m, tau, n_segments, flip, tr, echo_times, tissue, ideal
            )
            cycle.append(readouts.reshape(-1, 4))
    simulated = np.concatenate(cycle) * RECEIVER_PHASE
    closed = T2irGre(table)(tissue_maps()).numpy()
    return float(np.abs(closed - simulated).max() / np.abs(closed).max())


def test_t2ir_periodic_sequence_approaches_closed_form() -> None:
    # sim2's 80 readouts per segment: Mz has not quite returned to Mss before the next
    # preparation, which biases the first readouts (measured: 3.7e-2 of the peak signal)
    error_80 = periodic_relative_error(80, 2)
    assert 1e-3 < error_80 < 0.05
    # long segments: the steady-state assumption holds (measured: 7.4e-5)
    assert periodic_relative_error(250, 2) < 3e-4


def test_t2ir_closed_form_limits() -> None:
    maps = tissue_maps()
    te = [4.5e-3, 11.2e-3]
    sim1_like = bloch.vfa_table([10.0], te, 30e-3)
    steady = VfaMegre(sim1_like)(maps)
    # tau -> 0, B = -1, n -> infinity: the VFA steady state
    late = T2irGre(bloch.t2ir_table([0.0], 2000, te, 30e-3, 10.0))(maps)
    torch.testing.assert_close(late[-2:], steady, rtol=1e-9, atol=0)
    # B = 1 and E2 = 1: no preparation at all, the steady state at every n
    none = T2irGre(bloch.t2ir_table([0.0], 5, te, 30e-3, 10.0), inversion_efficiency=1.0)(maps)
    torch.testing.assert_close(none, steady.repeat(5, 1), rtol=1e-12, atol=0)
    # first readout, ideal inversion: Mz = Mss (1 - (1 + E2) E1 cos a)
    tau = 50e-3
    first = T2irGre(bloch.t2ir_table([tau], 1, te, 30e-3, 10.0))(maps)
    # the table stores float32 values
    tau32, tr32, flip32 = (float(torch.tensor(v)) for v in (tau, 30e-3, math.radians(10.0)))
    q = torch.exp(-tr32 / maps["T1"]) * math.cos(flip32)
    factor = 1.0 - (1.0 + torch.exp(-tau32 / maps["T2"])) * q
    torch.testing.assert_close(first, steady * factor, rtol=1e-9, atol=0)


@pytest.mark.parametrize("model", models_all(), ids=lambda m: f"{m.name}-{m.phase_mode}")
def test_gradcheck(model: SignalModel) -> None:
    maps = random_maps(model, (3,), seed=3, dtype=torch.float64)
    names = list(maps)
    inputs = tuple(maps[n].clone().requires_grad_(True) for n in names)

    def evaluate(*tensors: torch.Tensor) -> torch.Tensor:
        return model(dict(zip(names, tensors, strict=True)))

    assert torch.autograd.gradcheck(evaluate, inputs, eps=1e-6, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("model", models_all()[::2], ids=lambda m: m.name)
def test_gradients_stay_finite_at_degenerate_maps(model: SignalModel) -> None:
    maps = random_maps(model, (4,), seed=4, dtype=torch.float32)
    for name in ("T1", "T2", "T2star"):
        if name in maps:
            maps[name] = torch.tensor([0.0, -1.0, 1e-9, 0.5])
    leaves = {k: v.requires_grad_(True) for k, v in maps.items()}
    signal = model(leaves)
    assert torch.isfinite(torch.view_as_real(signal)).all()
    (signal.abs() ** 2).sum().backward()
    for name, leaf in leaves.items():
        assert leaf.grad is not None and torch.isfinite(leaf.grad).all(), name


@pytest.mark.parametrize("model", [models_all()[0], models_all()[2]], ids=lambda m: m.name)
def test_free_phase_reproduces_b0_phase(model: SignalModel) -> None:
    maps = random_maps(model, (6,), seed=5, dtype=torch.float64)
    free = type(model)(model.contrasts, phase="free")
    te = model.echo_times.double()[:, None]
    phase = maps["phase0"] + 2 * math.pi * te * maps["B0"]
    free_maps = {k: v for k, v in maps.items() if k not in ("B0", "phase0")}
    torch.testing.assert_close(free({**free_maps, "phase": phase}), model(maps), rtol=1e-12, atol=0)


@pytest.mark.cuda
@pytest.mark.parametrize("model", models_all(), ids=lambda m: f"{m.name}-{m.phase_mode}")
def test_cuda_matches_cpu(model: SignalModel) -> None:
    maps = random_maps(model, (2, 5), seed=6, dtype=torch.float32)
    cpu = model(maps)
    gpu = model({k: v.cuda() for k, v in maps.items()})
    assert gpu.device.type == "cuda" and gpu.dtype == torch.complex64
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-5, atol=1e-6)
