"""LoREIN end to end on a tiny simulated problem: runs, learns, resumes exactly, ablations."""

import math
from pathlib import Path

import pytest
import torch

from lorein.eval.metrics import map_error
from lorein.methods.baselines.fit import FitConfig
from lorein.methods.lorein.config import LoreinConfig, resolve_encoding
from lorein.methods.registry import reconstruct
from lorein.sim.simulate import Simulation, simulate
from tests.helpers import TINY, TINY_LOREIN_SETTINGS, TINY_MEGRE


def tiny_config(**kw) -> LoreinConfig:
    return LoreinConfig(**{**TINY_LOREIN_SETTINGS, **kw})


@pytest.fixture(scope="module")
def sim() -> Simulation:
    return simulate(TINY, 8, seed=2, snr=math.inf, progress=False)


def test_auto_growth_reaches_twice_the_grid() -> None:
    enc = resolve_encoding({"n_levels": 16, "n_min": 16, "growth": "auto"}, (8, 56, 56))
    assert enc["n_min"] * enc["growth"] ** 15 == pytest.approx(112)
    assert resolve_encoding({"n_levels": 4, "n_min": 1, "growth": 1.5}, (8, 8, 8))["growth"] == 1.5


def test_joint_run_learns_and_reports(sim: Simulation) -> None:
    maps = reconstruct("lorein", sim.problem, tiny_config(), progress=False)
    history = maps.extras["history"]
    assert len(history) == 40
    assert {"dc1", "dc2", "prior", "wnnm"} <= set(history[-1])
    data = [sum(h[k] for k in ("dc1", "dc2", "prior")) for h in (history[10], history[-1])]
    assert data[1] < 0.9 * data[0]  # the joint phase starts at iteration 10
    for name in ("M0", "T1", "T2star", "B0", "phase0"):
        assert torch.isfinite(maps.values[name]).all()
    assert maps.images is not None and maps.images.shape == (60, 4, 24, 24)
    assert maps.extras["dc2_relative_difference"] >= 0


def test_resume_continues_to_the_same_result(sim: Simulation, tmp_path: Path) -> None:
    cfg = tiny_config(iterations=30, wnnm_start=15)
    straight = reconstruct("lorein", sim.problem, cfg, progress=False)
    ckpt = tmp_path / "ckpt.pt"
    reconstruct(
        "lorein",
        sim.problem,
        tiny_config(iterations=20, wnnm_start=15),
        checkpoint=ckpt,
        progress=False,
    )
    resumed = reconstruct("lorein", sim.problem, cfg, checkpoint=ckpt, resume=True, progress=False)
    for name in ("T1", "T2star", "B0"):
        torch.testing.assert_close(resumed.values[name], straight.values[name])


def test_resume_after_wnnm_switched_on_is_exact_from_a_plain_checkpoint(
    sim: Simulation, tmp_path: Path
) -> None:
    short = {"wnnm_start": 11, "coil_warmup": 5, "warm_start": 5}
    cfg = tiny_config(iterations=14, **short)
    straight = reconstruct("lorein", sim.problem, cfg, progress=False)
    ckpt = tmp_path / "ckpt.pt"
    first = tiny_config(iterations=12, **short)
    reconstruct("lorein", sim.problem, first, checkpoint=ckpt, progress=False)
    state = torch.load(ckpt, weights_only=True)  # tensors and plain data only
    wnnm = state["module"]["_extra_state"]  # the regulariser, switched on before step 11
    assert state["state"]["iteration"] == 12 and wnnm["indices"].dtype == torch.int64
    resumed = reconstruct("lorein", sim.problem, cfg, checkpoint=ckpt, resume=True, progress=False)
    assert resumed.extras["history"] == straight.extras["history"]
    assert "wnnm" in resumed.extras["history"][-1]
    for name in ("M0", "T1", "T2star", "B0", "phase0"):
        assert torch.equal(resumed.values[name], straight.values[name])


@pytest.mark.parametrize("mode", ["pmr-only", "lrr-fit"])
def test_ablation_modes_run(sim: Simulation, mode: str) -> None:
    maps = reconstruct("lorein", sim.problem, tiny_config(mode=mode, iterations=15), progress=False)
    assert torch.isfinite(maps.values["T1"]).all()
    if mode == "pmr-only":
        assert maps.images is None and "dc1" not in maps.extras["history"][-1]
    else:
        assert "dc2" not in maps.extras["history"][-1]


def test_subspace_dc2_path_runs(sim: Simulation) -> None:
    maps = reconstruct(
        "lorein", sim.problem, tiny_config(dc2_path="subspace", iterations=15), progress=False
    )
    assert "dc2" in maps.extras["history"][-1]


def test_prior_fast_path_equals_naive_formula(sim: Simulation) -> None:
    """The prior from the projected factors equals ||Phi u - I||^2 / (T V C) of the images."""
    from lorein.methods.lorein.objective import LoreinLosses
    from lorein.physics.models.registry import signal_model
    from lorein.physics.subspace import temporal_subspace

    problem = sim.problem
    model = signal_model(problem.signal_model, problem.contrasts)
    subspace = temporal_subspace(model, 6, 500, 50.0, seed=0)
    losses = LoreinLosses(problem, problem.kspace, subspace, model)
    g = torch.Generator().manual_seed(4)
    u = torch.randn(6, *problem.grid.shape, dtype=torch.complex64, generator=g)
    maps = {name: value.float() for name, value in sim.truth.maps().items()}
    factors = model.factors(maps)
    images = factors.images()
    phi = subspace.phi.to(torch.complex64)
    lrr_images = torch.tensordot(phi, u, dims=([1], [0]))
    naive = (lrr_images - images).abs().pow(2).sum() / (images.numel() * problem.n_coils)
    projected, norm2 = losses.project(factors)
    assert float(losses.prior(u, projected, norm2)) == pytest.approx(float(naive), rel=1e-5)
    # the subspace form: ||u - Phi^H I||^2 with the projection computed from the images
    coefficients = torch.tensordot(phi.conj(), images, dims=([0], [0]))
    naive_subspace = (u - coefficients).abs().pow(2).sum() / (images.numel() * problem.n_coils)
    fast_subspace = losses.prior(u, projected, norm2, "subspace")
    assert float(fast_subspace) == pytest.approx(float(naive_subspace), rel=1e-4)
    assert float(naive_subspace) < float(naive)  # it drops the out-of-subspace energy


@pytest.mark.parametrize(("flow", "lrr_moves"), [("to-pmr", False), ("both", True)])
def test_prior_flow_decides_which_blocks_the_prior_trains(
    sim: Simulation, flow: str, lrr_moves: bool
) -> None:
    # only the prior acts: with "to-pmr" its weight must not reach the LRR block's images
    runs = [
        reconstruct(
            "lorein",
            sim.problem,
            tiny_config(
                iterations=12, pretrain=2, dc1=0.0, dc2=0.0, wnnm=0.0, prior=w, prior_flow=flow
            ),
            progress=False,
        )
        for w in (1.0, 5.0)
    ]
    assert not torch.equal(runs[0].values["T1"], runs[1].values["T1"])
    assert torch.equal(runs[0].images, runs[1].images) is not lrr_moves


@pytest.mark.parametrize("key", ["mode", "prior_flow", "prior_space", "dc2_path"])
def test_unknown_choice_is_rejected(key: str) -> None:
    with pytest.raises(ValueError, match=f"{key} = 'nope': expected one of"):
        LoreinConfig(**{key: "nope"})


def test_report_times_warm_up_and_steps(sim: Simulation) -> None:
    extras = reconstruct("lorein", sim.problem, tiny_config(iterations=3), progress=False).extras
    assert 0 < extras["warm_up_seconds"] < extras["seconds"]
    assert 0 < 3 * extras["seconds_per_step"] < extras["seconds"]


def test_pmr_start_from_lrr_needs_joint_pretraining() -> None:
    with pytest.raises(ValueError, match="pmr_start = 'lrr' needs mode = 'joint' and pretrain > 0"):
        LoreinConfig(pmr_start="lrr", pretrain=0)
    with pytest.raises(ValueError, match="mode = 'pmr-only'"):
        LoreinConfig(pmr_start="lrr", mode="pmr-only")


def test_pmr_start_from_lrr_needs_regression_steps() -> None:
    with pytest.raises(ValueError, match="pmr_start = 'lrr' needs warm_start > 0"):
        LoreinConfig(pmr_start="lrr", pretrain=5, warm_start=0)


def test_average_fraction_is_a_fraction_of_the_run() -> None:
    assert LoreinConfig(iterations=300, average_fraction=0.5).average_steps == 150
    assert LoreinConfig(iterations=7, average_fraction=0.5).average_steps == 4
    expected = "^average_fraction = 1.0: expected a finite number at least 0 and below 1$"
    with pytest.raises(ValueError, match=expected):
        LoreinConfig(average_fraction=1.0)
    with pytest.raises(ValueError, match="average_fraction = -0.1"):
        LoreinConfig(average_fraction=-0.1)


def test_scratch_starts_skip_the_cg_start(sim: Simulation, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CG start is computed only for a field that starts from it: ``lrr_start = "scratch"``
    regresses only the maps, both starts from scratch compute nothing."""
    import lorein.methods.lorein.pipeline as lorein_module

    calls: list[tuple[bool, bool]] = []
    real = lorein_module.warm_start

    def recording(lrr, pmr, *args, **kwargs):
        calls.append((lrr is not None, pmr is not None))
        return real(lrr, pmr, *args, **kwargs)

    monkeypatch.setattr(lorein_module, "warm_start", recording)
    for starts in [("cg", "cg"), ("scratch", "cg"), ("cg", "scratch"), ("scratch", "scratch")]:
        config = tiny_config(iterations=1, lrr_start=starts[0], pmr_start=starts[1])
        reconstruct("lorein", sim.problem, config, progress=False)
    assert calls == [(True, True), (False, True), (True, False)]


def test_coil_support_zeroes_coils_and_m0_outside_the_support(sim: Simulation) -> None:
    maps = reconstruct(
        "lorein", sim.problem, tiny_config(iterations=2, coil_support=True), progress=False
    )
    outside = maps.coils.abs().sum(0) == 0
    assert outside.any() and not outside.all()
    assert torch.all(maps.values["M0"][outside] == 0)
    assert not maps.mask[outside].any()


def test_pmr_start_from_lrr_fits_the_pretrained_images(
    sim: Simulation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``pmr_start = "lrr"`` the maps are started once, from the LRR block's images after
    pre-training (the CG warm start leaves them alone); with ``"cg"`` never during the loop."""
    import lorein.methods.lorein.pipeline as lorein_module

    calls: list[torch.Tensor] = []
    real = lorein_module.start_maps

    def recording(pmr, images, *args, **kwargs):
        calls.append(images.clone())
        return real(pmr, images, *args, **kwargs)

    monkeypatch.setattr(lorein_module, "start_maps", recording)
    reconstruct("lorein", sim.problem, tiny_config(iterations=12, pretrain=10), progress=False)
    assert calls == []
    maps = reconstruct(
        "lorein",
        sim.problem,
        tiny_config(pmr_start="lrr", iterations=11, pretrain=10),
        progress=False,
    )
    assert len(calls) == 1
    started, final = calls[0].flatten(), maps.images.flatten()
    assert started.shape == final.shape
    # one joint step after the start the LRR images have barely moved (measured 0.998; the CG
    # start's images, which the "cg" start fits, give 0.72 against the same final images)
    cosine = torch.vdot(started, final).abs() / (started.norm() * final.norm())
    assert float(cosine) > 0.99


def test_megre_run_writes_r2star_and_beats_the_sense_fit_on_t2star_and_m0() -> None:
    # single flip angle: no T1 field; R2* written with the maps (measured at R = 4: T2* NRMSE
    # 0.31 against 0.60 for the CG-SENSE fit, M0 0.18 against 0.25)
    sim = simulate(TINY_MEGRE, 4, seed=2, snr=40.0, progress=False)
    maps = reconstruct("lorein", sim.problem, tiny_config(rank=4), progress=False)
    assert set(maps.values) == {"M0", "T2star", "R2star", "B0", "phase0"}
    t2star = maps.values["T2star"]
    torch.testing.assert_close(maps.values["R2star"], 1 / t2star)
    sense = reconstruct("fit", sim.problem, FitConfig(), progress=False)
    mask = sim.truth.mask
    for name, factor in (("T2star", 0.7), ("M0", 0.9)):
        ours = map_error(name, maps.values[name], getattr(sim.truth, name), mask)
        theirs = map_error(name, sense.values[name], getattr(sim.truth, name), mask)
        assert ours < factor * theirs, name
