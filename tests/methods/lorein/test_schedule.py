"""LoREIN's stages by step: pre-training, PMR start, joint, WNNM on."""

from lorein.methods.lorein.config import LoreinConfig
from lorein.methods.lorein.schedule import Schedule


def test_joint_mode_pretrains_then_adds_the_pmr_terms_then_wnnm() -> None:
    s = Schedule.from_config(LoreinConfig(iterations=10, pretrain=3, wnnm_start=6))
    assert [s.pmr_on(i) for i in range(5)] == [False, False, False, True, True]
    assert [s.wnnm_on(i) for i in (5, 6, 9)] == [False, True, True]
    assert s.lrr and s.pmr_restart is None
    assert s.transitions(6, wnnm_started=False) == ["wnnm-start"]
    assert s.transitions(7, wnnm_started=True) == []  # restored from a checkpoint: not again


def test_wnnm_waits_for_the_pmr_block_and_can_be_off() -> None:
    late = Schedule.from_config(LoreinConfig(iterations=10, pretrain=8, wnnm_start=2))
    assert late.wnnm_from == 8
    off = Schedule.from_config(LoreinConfig(iterations=10, pretrain=3, wnnm=0.0))
    assert off.wnnm_from is None and not any(off.wnnm_on(i) for i in range(10))


def test_lrr_start_restarts_the_maps_once_before_the_joint_phase() -> None:
    s = Schedule.from_config(LoreinConfig(iterations=10, pretrain=4, pmr_start="lrr", wnnm_start=4))
    assert s.pmr_restart == 4
    assert [s.transitions(i, wnnm_started=False) for i in (3, 4)] == [
        [],
        ["pmr-restart", "wnnm-start"],  # the block matching sees the restarted maps
    ]


def test_modes_without_a_block() -> None:
    summit = Schedule.from_config(LoreinConfig(mode="pmr-only", pretrain=5))
    assert not summit.lrr and summit.pmr_from == 0  # no pre-training without an LRR block
    lrr_fit = Schedule.from_config(LoreinConfig(mode="lrr-fit"))
    assert lrr_fit.pmr_from is None and lrr_fit.wnnm_from is None
    assert not lrr_fit.pmr_on(10**6)


def test_plane_batches_count_the_stages_in_epochs() -> None:
    config = LoreinConfig(iterations=10, pretrain=3, wnnm_start=6, batching="planes")
    s = Schedule.from_config(config, steps_per_epoch=4)
    assert (s.iterations, s.pmr_from, s.wnnm_from) == (40, 12, 24)
    assert s.transitions(24, wnnm_started=False) == ["epoch-start", "wnnm-start"]
    assert s.transitions(25, wnnm_started=True) == []
    starts = [i for i in range(40) if "epoch-start" in s.transitions(i, True)]
    assert starts == list(range(0, 40, 4))
    volume = Schedule.from_config(LoreinConfig(iterations=10, pretrain=3, wnnm_start=6))
    assert not any("epoch-start" in volume.transitions(i, True) for i in range(10))
