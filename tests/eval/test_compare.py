"""Side-by-side comparison: methods in subprocesses, failures recorded, tissue statistics."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from lorein.cli import main
from lorein.data.problem import read_problem, read_truth, write_problem
from lorein.eval.compare import compare, last_line, tissue_stats
from lorein.eval.evaluate import evaluate_maps, read_maps
from lorein.eval.metrics import interior_mask, map_error, pure_mask
from lorein.run import METHODS
from lorein.sim.phantom import TISSUES
from lorein.sim.simulate import simulate
from tests.helpers import TINY

FAST_FIT_AND_BROKEN_SUMMIT = """
[fit]
fit = "dictionary"
sense_iterations = 5

[summit]
bogus_setting = 1
"""
"""Configuration under which ``fit`` runs in seconds and ``summit`` fails on start-up."""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny problem with truth and known coils, and the same one without tissue labels."""
    folder = tmp_path_factory.mktemp("problem")
    sim = simulate(TINY, 8, seed=0, progress=False)
    problem = dataclasses.replace(sim.problem, coils=sim.truth.coils)
    with_labels, without = folder / "tiny.h5", folder / "no_labels.h5"
    write_problem(with_labels, problem, truth=sim.truth, attrs={"preset": "tiny", "seed": 0})
    write_problem(without, problem, truth=dataclasses.replace(sim.truth, extra={}))
    return with_labels, without


@pytest.fixture(scope="module")
def compared(tiny: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Output folder of a comparison of ``fit`` (succeeds) and ``summit`` (fails)."""
    folder = tmp_path_factory.mktemp("compare")
    config = folder / "config.toml"
    config.write_text(FAST_FIT_AND_BROKEN_SUMMIT)
    out = folder / "out"
    compare(tiny[0], ["fit", "summit"], out, config=config, progress=False)
    return out


def _record(out: Path) -> dict[str, Any]:
    return json.loads((out / "compare.json").read_text())


def test_writes_json_markdown_and_figure(compared: Path) -> None:
    record = _record(compared)
    assert record["format"] == "lorein-compare"
    assert list(record["methods"]) == ["fit", "summit"]
    assert record["problem"]["preset"] == "tiny"
    assert record["problem"]["matrix"] == [24, 24, 4]
    assert record["problem"]["n_coils"] == 4
    assert abs(record["problem"]["acceleration"] - 8) < 0.2
    markdown = (compared / "compare.md").read_text()
    assert "| fit | ok |" in markdown and "| summit | failed |" in markdown
    assert "T1 [ms]" in markdown
    assert (compared / "compare.png").read_bytes()[:4] == b"\x89PNG"
    assert (compared / "fit" / "maps.h5").exists() and (compared / "summit.log").exists()


def test_successful_method_is_scored(compared: Path) -> None:
    fit = _record(compared)["methods"]["fit"]
    assert fit["status"] == "ok"
    assert set(fit["scores"]) == {"M0", "T1", "T2star", "B0"}
    assert 0 < fit["scores"]["M0"]["nrmse"] < 0.5 and 0 < fit["scores"]["T1"]["nrmse"] < 1
    assert 0 < fit["scores"]["B0"]["rmse_hz"] < 10
    assert fit["wall_seconds"] > 0 and fit["peak_memory_gib"] > 0
    for tissue in ("WM", "GM", "deep GM", "CSF"):
        t1 = fit["tissues"][tissue]["T1"]
        assert t1["bias"] == pytest.approx(t1["mean"] - t1["true_mean"])


def test_interior_errors_are_the_errors_in_the_interior_mask(
    compared: Path, tiny: tuple[Path, Path]
) -> None:
    truth = read_truth(tiny[0])
    interior = interior_mask(truth.extra["labels"], truth.mask)
    record = _record(compared)
    maps = read_maps(compared / "fit")
    scores = record["methods"]["fit"]["scores"]
    for name in ("T1", "B0"):
        expected = map_error(name, maps[name], getattr(truth, name), interior)
        assert scores[name]["interior"] == pytest.approx(expected)
    counts = record["problem"]["interior_voxels"]
    assert sum(counts.values()) <= int(interior.sum()) and counts["WM"] > 0
    assert "The same errors in the tissue interiors" in (compared / "compare.md").read_text()
    unlabelled = read_truth(tiny[1])
    assert all("interior" not in s for s in evaluate_maps(maps, unlabelled).values())


def test_pure_errors_are_the_errors_in_the_pure_voxels_and_lead_compare_md(
    compared: Path, tiny: tuple[Path, Path]
) -> None:
    truth = read_truth(tiny[0])
    assert truth.purity is not None
    pure = pure_mask(truth.purity, truth.mask)
    record = _record(compared)
    maps = read_maps(compared / "fit")
    scores = record["methods"]["fit"]["scores"]
    for name in ("T1", "B0"):
        expected = map_error(name, maps[name], getattr(truth, name), pure)
        assert scores[name]["pure"] == pytest.approx(expected)
        assert "nrmse" in scores["T1"] and "interior" in scores[name]  # added, none replaced
    assert record["problem"]["pure_voxels"] == int(pure.sum()) > 0
    assert record["problem"]["simulation"] is None  # written without the simulation's attrs
    text = (compared / "compare.md").read_text()
    headline = text.index("Errors in the pure-tissue voxels")
    assert headline < text.index("Paper protocol: errors inside the whole truth mask")
    assert f"{int(pure.sum())} voxels." in text[headline:]
    no_purity = dataclasses.replace(truth, purity=None)
    assert all("pure" not in s for s in evaluate_maps(maps, no_purity).values())


def test_without_csf_errors_leave_out_exactly_the_csf_voxels(
    compared: Path, tiny: tuple[Path, Path]
) -> None:
    """Naive reference: the capped NRMSE recomputed by hand over the non-CSF voxels of the mask."""
    truth = read_truth(tiny[0])
    labels = truth.extra["labels"]
    csf = labels == TISSUES["csf"].label
    record = _record(compared)
    maps = read_maps(compared / "fit")
    region = truth.mask.bool() & ~csf
    assert csf[truth.mask.bool()].any() and region.any()  # the phantom has CSF in its mask
    x, ref = maps["T1"].clamp(0, 3.5)[region], truth.T1.clamp(0, 3.5)[region]
    expected = float((x - ref).norm() / ref.norm())
    scores = record["methods"]["fit"]["scores"]
    assert scores["T1"]["without_csf"] == pytest.approx(expected, rel=1e-5)
    assert scores["T1"]["without_csf"] != pytest.approx(scores["T1"]["nrmse"])
    problem = record["problem"]
    assert problem["mask_voxels"] - problem["tissue_voxels"]["CSF"] == int(region.sum())
    text = (compared / "compare.md").read_text()
    assert "The same errors in the mask without its CSF voxels" in text
    assert f": {int(region.sum())} voxels." in text
    assert "CSF" in record["methods"]["fit"]["tissues"]
    unlabelled = read_truth(tiny[1])
    assert all("without_csf" not in s for s in evaluate_maps(maps, unlabelled).values())


def test_constant_map_row_is_the_oracle_level(compared: Path, tiny: tuple[Path, Path]) -> None:
    truth = read_truth(tiny[0])
    constant = _record(compared)["constant_map"]
    assert {"M0", "T1", "T2star", "B0"} <= set(constant)
    level = torch.full_like(truth.T1, float(truth.T1[truth.mask.bool()].clamp(0, 3.5).mean()))
    assert constant["T1"] == pytest.approx(map_error("T1", level, truth.T1, truth.mask))
    row = f"| constant map at the truth's mean | oracle | {constant['M0']:.3f} |"
    assert row in (compared / "compare.md").read_text()


def test_failed_method_keeps_its_last_error_line(compared: Path) -> None:
    summit = _record(compared)["methods"]["summit"]
    assert summit["status"] == "failed"
    assert "bogus_setting" in summit["error"] and "\n" not in summit["error"]
    assert "scores" not in summit


def test_truth_itself_has_no_tissue_bias(tiny: tuple[Path, Path]) -> None:
    truth = read_truth(tiny[0])
    stats = tissue_stats(truth.maps(), truth)
    assert set(stats) == {"WM", "GM", "deep GM", "CSF"}
    for values in stats.values():
        for name, s in values.items():
            assert s["bias"] == pytest.approx(0, abs=1e-6 * abs(s["true_mean"]) + 1e-9), name
    for tissue, nominal in (("WM", TISSUES["wm"]), ("GM", TISSUES["gm"]), ("CSF", TISSUES["csf"])):
        assert stats[tissue]["T1"]["true_mean"] == pytest.approx(nominal.t1, rel=0.05)
        assert stats[tissue]["T2star"]["true_mean"] == pytest.approx(nominal.t2star, rel=0.05)


def test_tissue_bias_has_the_sign_and_size_of_the_error(tiny: tuple[Path, Path]) -> None:
    truth = read_truth(tiny[0])
    maps = truth.maps()
    maps.update(T1=1.1 * truth.T1, B0=truth.B0 - 2.0, M0=3.0 * truth.M0)
    stats = tissue_stats(maps, truth)
    for values in stats.values():
        assert values["T1"]["bias"] == pytest.approx(0.1 * values["T1"]["true_mean"], rel=1e-4)
        assert values["B0"]["bias"] == pytest.approx(-2.0, rel=1e-4)
        assert values["M0"]["bias"] == pytest.approx(0, abs=1e-5)  # M0 scale is removed


def test_timeout_is_a_failure_and_missing_labels_a_note(
    tiny: tuple[Path, Path], tmp_path: Path
) -> None:
    record = compare(tiny[1], ["fit"], tmp_path, timeout_s=0.2, progress=False)
    assert record["methods"]["fit"]["status"] == "failed"
    assert record["methods"]["fit"]["error"] == "timed out after 0.2 s"
    assert any("labels" in note for note in record["notes"])
    assert _record(tmp_path) == record and not (tmp_path / "compare.png").exists()


def test_unknown_method_is_one_line_before_any_output(
    tiny: tuple[Path, Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="unknown method.*nope.*known methods") as err:
        compare(tiny[0], ["fit", "nope"], out)
    assert all(name in str(err.value) for name in METHODS) and "\n" not in str(err.value)
    assert not out.exists()


def test_problem_without_truth_is_one_line_naming_it(
    tiny: tuple[Path, Path], tmp_path: Path
) -> None:
    path = tmp_path / "no_truth.h5"
    write_problem(path, read_problem(tiny[0]))
    with pytest.raises(ValueError, match="no_truth.h5: no truth/ group") as err:
        compare(path, ["fit"], tmp_path / "out")
    assert "\n" not in str(err.value) and not (tmp_path / "out").exists()


def test_missing_config_is_one_line_before_any_output(
    tiny: tuple[Path, Path], tmp_path: Path
) -> None:
    with pytest.raises(FileNotFoundError, match="nope.toml: configuration file not found"):
        compare(tiny[0], ["fit"], tmp_path / "out", config=tmp_path / "nope.toml")
    assert not (tmp_path / "out").exists()


def test_last_line_skips_progress_bars_and_blank_lines() -> None:
    text = "fit:  50%|#####     |\rfit: 100%|##########|\nlorein: error: bad value\n\n"
    assert last_line(text) == "lorein: error: bad value"
    assert last_line("") == ""


def test_compare_command_reads_methods_from_its_config_table(
    tiny: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "study.toml"
    config.write_text('[compare]\nmethods = "fit"\nquiet = true\n' + FAST_FIT_AND_BROKEN_SUMMIT)
    out = tmp_path / "out"
    assert main(["compare", str(tiny[0]), "-o", str(out), "--config", str(config)]) == 0
    assert list(_record(out)["methods"]) == ["fit"]
    assert "| fit |" in capsys.readouterr().out
    assert main(["compare", str(tiny[0]), "-o", str(tmp_path / "none")]) == 2
    assert "missing --methods" in capsys.readouterr().err


def test_reuse_scores_a_finished_run_without_running_it(
    compared: Path, tiny: tuple[Path, Path]
) -> None:
    before = _record(compared)["methods"]["fit"]
    again = compare(tiny[0], ["fit"], compared, progress=False, reuse=True)["methods"]["fit"]
    assert again["reused"] and not before["reused"]
    assert again["scores"] == before["scores"]
    assert again["process_seconds"] < 1.0
