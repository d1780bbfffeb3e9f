"""Plane-batched LoREIN (``batching = "planes"``): an epoch of slabs is the volume's loss,
blocks on slabs are the volume's slabs, runs learn and resume exactly."""

import functools
import math
from pathlib import Path

import pytest
import torch

import lorein.methods.lorein.pipeline as pipeline
from lorein.methods.base import RunContext, prepare
from lorein.methods.baselines.summit import SummitConfig
from lorein.methods.lorein.batches import PlaneBatches
from lorein.methods.lorein.config import LoreinConfig
from lorein.methods.lorein.objective import LoreinObjective, start_wnnm
from lorein.methods.registry import reconstruct
from lorein.numerics.optimisation import LoopConfig
from lorein.sim.simulate import Simulation, simulate
from tests.helpers import TINY, TINY_LOREIN_SETTINGS, rng

PLANES = {"batching": "planes", "planes_per_batch": 7}  # TINY: nx = 24, 4 slabs of 6 planes


def tiny_config(**kw) -> LoreinConfig:
    return LoreinConfig(**{**TINY_LOREIN_SETTINGS, **kw})


@pytest.fixture(scope="module")
def sim() -> Simulation:
    return simulate(TINY, 8, seed=2, snr=math.inf, progress=False)


def _setups(sim: Simulation, **kw) -> tuple[pipeline.Setup, pipeline.Setup]:
    """Volume and plane-batched setups with the same (non-trivial) blocks, WNNM on."""
    prepared = prepare(sim.problem, RunContext(progress=False), None)
    volume = pipeline.build(prepared, tiny_config(**kw), seed=0)
    planes = pipeline.build(prepared, tiny_config(**kw, **PLANES), seed=0)
    assert volume.net.lrr.cnn is not None
    with torch.no_grad():  # a CNN that is not the identity, so that its halo matters
        for p in volume.net.lrr.cnn.parameters():
            p.copy_(0.2 * torch.randn(p.shape, generator=rng(len(p.shape))))
    planes.net.load_state_dict(volume.net.state_dict(), strict=False)  # + basis_rms
    planes.net.lrr.refresh_scale()
    with torch.no_grad():
        volume.net.wnnm = start_wnnm(volume.net.pmr(), volume.config, "T1")
    planes.net.wnnm = volume.net.wnnm
    return volume, planes


@pytest.mark.parametrize("dc2_path", ["exact", "subspace"])
def test_an_epoch_of_slabs_is_the_volume_loss(sim: Simulation, dc2_path: str) -> None:
    """Every term and the gradient of the total: the mean over an epoch's steps on slabs of
    x-planes equals the whole-volume step (fields, CNN halo, scaling, WNNM groups)."""
    volume, planes = _setups(sim, dc2_path=dc2_path)
    n = planes.schedule.steps_per_epoch
    assert n == 4 and planes.batches is not None
    epoch = 35  # joint terms and WNNM on
    params_v = [p for p in volume.net.parameters() if p.requires_grad]
    params_p = [p for p in planes.net.parameters() if p.requires_grad]
    whole = LoreinObjective(
        volume.net, volume.prepared.model, volume.losses, volume.config, volume.schedule
    )(epoch)
    grads_v = torch.autograd.grad(whole["total"], params_v, allow_unused=True)
    objective = LoreinObjective(
        planes.net,
        planes.prepared.model,
        planes.losses,
        planes.config,
        planes.schedule,
        planes.batches,
    )
    steps = [objective(epoch * n + i) for i in range(n)]
    assert {planes.batches.planes(epoch * n + i).start for i in range(n)} == {0, 6, 12, 18}
    mean = {k: sum(s[k] for s in steps) / n for k in whole}
    assert set(whole) == {"dc1", "dc2", "prior", "wnnm", "total"}
    for k, value in whole.items():
        assert float(mean[k].detach()) == pytest.approx(float(value.detach()), rel=2e-5), k
    grads_p = torch.autograd.grad(mean["total"], params_p, allow_unused=True)
    for g_v, g_p in zip(grads_v, grads_p, strict=True):
        assert (g_v is None) == (g_p is None)
        if g_v is not None:
            torch.testing.assert_close(g_p, g_v, rtol=1e-3, atol=1e-3 * float(g_v.abs().max()))


def test_blocks_on_slabs_are_slabs_of_the_volume(sim: Simulation) -> None:
    _, planes = _setups(sim)
    lrr, pmr = planes.net.lrr, planes.net.pmr
    assert pmr is not None
    with torch.no_grad():
        bases, coils, maps = lrr.spatial_bases(), lrr.coils(), pmr()
        for s in (slice(0, 5), slice(5, 13), slice(19, 24)):
            torch.testing.assert_close(lrr.bases_at_planes(s), bases[..., s])
            torch.testing.assert_close(lrr.coils.at_planes(s), coils[..., s])
        voxels = torch.tensor([0, 17, 600, 24 * 24 * 4 - 1])
        for name, value in pmr.at_voxels(voxels).items():
            torch.testing.assert_close(value, maps[name].flatten()[voxels])


def test_plane_batched_run_learns_and_reports(sim: Simulation) -> None:
    maps = reconstruct("lorein", sim.problem, tiny_config(**PLANES), progress=False)
    history = maps.extras["history"]
    assert maps.extras["steps_per_epoch"] == 4 and len(history) == 4 * 40
    assert {"dc1", "dc2", "prior", "wnnm"} <= set(history[-1])
    first, last = (
        sum(sum(h[k] for k in ("dc1", "dc2", "prior")) for h in history[a : a + 4])
        for a in (40, len(history) - 4)  # the joint phase starts at epoch 10
    )
    assert last < 0.9 * first
    for name in ("M0", "T1", "T2star", "B0", "phase0"):
        assert torch.isfinite(maps.values[name]).all()
    assert maps.images is not None and maps.images.shape == (60, 4, 24, 24)


def test_one_slab_per_epoch_follows_the_volume_path(sim: Simulation) -> None:
    """With every plane in one batch, the hybrid-space steps are the k-space steps up to
    float round-off."""
    cfg = {"iterations": 14, "pretrain": 4, "wnnm_start": 10}
    volume = reconstruct("lorein", sim.problem, tiny_config(**cfg), progress=False)
    planes = reconstruct(
        "lorein",
        sim.problem,
        tiny_config(**cfg, batching="planes", planes_per_batch=24),
        progress=False,
    )
    assert planes.extras["steps_per_epoch"] == 1
    for h_v, h_p in zip(volume.extras["history"], planes.extras["history"], strict=True):
        assert h_p == pytest.approx(h_v, rel=1e-3)


def test_resume_mid_epoch_gives_the_same_run(
    sim: Simulation, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Interrupted after step 26 (epoch 8 of 3-step epochs, WNNM on since step 24), resumed
    from the checkpoint: the same batches, CNN scale and maps as an uninterrupted run."""
    cfg = tiny_config(
        batching="planes",
        planes_per_batch=8,
        iterations=12,
        pretrain=3,
        wnnm_start=8,
        decay_every=5,
        coil_warmup=5,
        warm_start=5,
    )
    straight = reconstruct("lorein", sim.problem, cfg, progress=False)
    ckpt = tmp_path / "ckpt.pt"
    monkeypatch.setattr(pipeline, "LoopConfig", functools.partial(LoopConfig, checkpoint_seconds=0))
    real = PlaneBatches.planes

    def interrupted(self: PlaneBatches, step: int) -> slice:
        if step == 26:
            raise KeyboardInterrupt
        return real(self, step)

    monkeypatch.setattr(PlaneBatches, "planes", interrupted)
    with pytest.raises(KeyboardInterrupt):
        reconstruct("lorein", sim.problem, cfg, checkpoint=ckpt, progress=False)
    monkeypatch.setattr(PlaneBatches, "planes", real)
    state = torch.load(ckpt, weights_only=True)
    assert state["state"]["iteration"] == 26 and "lrr.basis_rms" in state["module"]
    resumed = reconstruct("lorein", sim.problem, cfg, checkpoint=ckpt, resume=True, progress=False)
    assert resumed.extras["history"] == straight.extras["history"]
    for name in ("M0", "T1", "T2star", "B0", "phase0"):
        assert torch.equal(resumed.values[name], straight.values[name])


def test_summit_runs_on_plane_batches(sim: Simulation) -> None:
    settings = {k: v for k, v in TINY_LOREIN_SETTINGS.items() if hasattr(SummitConfig, k)}
    config = SummitConfig(**{**settings, "iterations": 6, "wnnm_start": 3, **PLANES})
    maps = reconstruct("summit", sim.problem, config, progress=False)
    assert len(maps.extras["history"]) == 24 and "wnnm" in maps.extras["history"][-1]
    assert "dc1" not in maps.extras["history"][-1]
    assert torch.isfinite(maps.values["T1"]).all()


@pytest.mark.parametrize("config_class", [LoreinConfig, SummitConfig])
def test_batching_settings_are_checked(config_class: type) -> None:
    with pytest.raises(ValueError, match="batching = 'slices': expected one of volume, planes"):
        config_class(batching="slices")
    with pytest.raises(ValueError, match="^planes_per_batch = 0: expected at least 1$"):
        config_class(planes_per_batch=0)


def test_memory_estimate_shrinks_with_the_batch(sim: Simulation) -> None:
    from lorein.methods.lorein.model import field_memory

    volume = field_memory(sim.problem, tiny_config())
    assert field_memory(sim.problem, tiny_config(batching="planes", planes_per_batch=1)) < volume
    assert field_memory(sim.problem, tiny_config(batching="planes", planes_per_batch=24)) == volume
