"""Committed case records of benchmarks/records.py and the paper table drawn from them."""

import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from paper_table import preset_table  # noqa: E402
from records import RUN_COMMIT, case_path, commit, load, merge  # noqa: E402

from lorein.sim.presets import get_preset


def _method(t1: float) -> dict:
    return {
        "status": "ok",
        "scores": {"T1": {"nrmse": t1}, "T2star": {"nrmse": 0.3}},
        "wall_seconds": 9,
    }


def test_merge_keeps_other_methods_and_stamps_new_entries(tmp_path: Path) -> None:
    path = case_path(tmp_path, "sim1-small", 0, "R27")
    assert path == tmp_path / "sim1-small" / "seed0" / "R27.json"
    assert load(path) == {"methods": {}}
    first = merge(
        path, {"finished": "t0", "methods": {"lorein": _method(0.4), "lrt": _method(0.5)}}
    )
    assert first["methods"]["lrt"]["recorded"]["finished"] == "t0"
    assert first["methods"]["lrt"]["recorded"]["commit"] == RUN_COMMIT  # the code that ran
    second = merge(
        path,
        {"finished": "t1", "constant_map": {"T1": 0.5}, "methods": {"lrt": _method(0.45)}},
    )
    assert json.loads(path.read_text()) == second
    assert second["methods"]["lorein"] == first["methods"]["lorein"]
    assert second["methods"]["lrt"]["scores"]["T1"]["nrmse"] == 0.45
    assert second["methods"]["lrt"]["recorded"]["finished"] == "t1"
    assert second["constant_map"] == {"T1": 0.5}
    # an unchanged entry (a reused run) keeps the stamp of when it was first recorded
    third = merge(path, {"finished": "t2", "methods": {"lorein": _method(0.4)}})
    assert third["methods"]["lorein"]["recorded"]["finished"] == "t0"


def test_a_reused_run_scored_again_keeps_the_stamp_of_its_run(tmp_path: Path) -> None:
    path = case_path(tmp_path, "sim1-small", 0, "R27")
    merge(path, {"finished": "t0", "methods": {"lorein": _method(0.4), "lrt": _method(0.5)}})
    added = {**_method(0.4), "reused": True}
    added["scores"] = {"T1": {"nrmse": 0.4, "without_csf": 0.2}, "T2star": {"nrmse": 0.3}}
    merged = merge(path, {"finished": "t1", "methods": {"lorein": added}})
    lorein = merged["methods"]["lorein"]
    assert lorein["recorded"]["finished"] == "t0" and lorein["rescored"]["finished"] == "t1"
    assert lorein["scores"]["T1"]["without_csf"] == 0.2
    # scored once more with nothing new: the entry stays as it is (its scoring time aside)
    again = merge(path, {"finished": "t2", "methods": {"lorein": {**added, "process_seconds": 1}}})
    assert again["methods"]["lorein"] == lorein


def test_only_a_run_of_this_process_replaces_a_committed_run(tmp_path: Path) -> None:
    path = case_path(tmp_path, "sim1-small", 0, "R27")
    merge(path, {"finished": "t0", "methods": {"lrt": _method(0.5)}})
    committed = load(path)["methods"]["lrt"]
    other = {**_method(0.45), "reused": True}  # another output left in the work folder
    assert merge(path, {"finished": "t1", "methods": {"lrt": other}})["methods"]["lrt"] == committed
    read_back = _method(0.45)  # a finished comparison read back, not run now
    merged = merge(path, {"finished": "t2", "methods": {"lrt": read_back}}, new_runs=False)
    assert merged["methods"]["lrt"] == committed
    # a method the record lacks is added, with an unknown commit when it did not run here
    fit = merge(path, {"finished": "t3", "methods": {"fit": other}})["methods"]["fit"]
    assert fit["recorded"] == {
        "finished": "t3",
        "lorein_version": fit["recorded"]["lorein_version"],
        "commit": "unknown",
    }
    # scoring again only: nothing is added
    rescored = merge(
        path,
        {"finished": "t4", "methods": {"zero-deepsub": other}},
        new_runs=False,
        add_missing=False,
    )
    assert "zero-deepsub" not in rescored["methods"]
    # a run of this process replaces the committed one
    run = {**_method(0.5), "wall_seconds": 10}
    fresh = merge(path, {"finished": "t5", "methods": {"lrt": run}})["methods"]["lrt"]
    assert fresh["recorded"]["finished"] == "t5"


def test_table_is_drawn_from_records_with_their_constant_maps() -> None:
    scores = {"T1": {"nrmse": 0.4, "interior": 0.15, "without_csf": 0.2}}
    interior = {**_method(0.4), "scores": scores}
    records = {
        27.0: {
            "constant_map": {"T1": 0.524, "T2star": 0.302},
            "methods": {"lorein": interior},
            "problem": {"interior_voxels": {"WM": 10, "GM": 0}},
        },
        48.0: {"methods": {"lorein": {"status": "failed", "error": "boom"}, "lrt": _method(0.5)}},
    }
    reference = {"methods": {"fit": _method(0.322)}}
    lines = preset_table(get_preset("sim1-small"), records, reference, ["lorein", "lrt"])
    assert "| R = 27 | R = 48 |" in lines[4]
    assert "| constant map at the truth's mean (oracle) |  | 0.524 / 0.302 | - |" in lines
    assert "| lorein |  | 0.400 / - (9 s) | failed |" in lines
    assert "| lrt |  | - | 0.500 / 0.300 (9 s) |" in lines
    assert "| fit, fully sampled, noiseless, true coils | 0.322 / 0.300 (9 s) |  |  |" in lines
    # the interior table: its own values, '-' for runs recorded without them
    start = lines.index(next(x for x in lines if x.startswith("Tissue interiors")))
    without = lines.index(next(x for x in lines if x.startswith("Without CSF")))
    inner, outer = lines[start:without], lines[without:]
    assert inner[0].startswith("Tissue interiors (WM 10, GM 0): ")
    assert "| lorein |  | 0.150 / - | failed |" in inner
    assert "| lrt |  | - | - |" in inner
    assert "| fit, fully sampled, noiseless, true coils | - |  |  |" in inner
    # the table without CSF: the same layout with its own values
    assert "| lorein |  | 0.200 / - | failed |" in outer
    assert "| lrt |  | - | - |" in outer
    skipped = preset_table(get_preset("sim1-small"), records, "skipped: big", ["lrt"])
    assert (
        sum("| fit, fully sampled, noiseless, true coils | skipped: big |" in x for x in skipped)
        == 3
    )


def test_commit_names_the_checkout() -> None:
    assert re.fullmatch(r"[0-9a-f]{4,40}(-dirty)?|unknown", commit())
