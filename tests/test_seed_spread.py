"""The run-to-run spread table of benchmarks/seed_spread.py, on hand-made comparison records."""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from seed_spread import nrmse_by_seed, report, spread_cell, wins  # noqa: E402


def record(lorein: float, summit: float | None) -> dict:
    methods = {"lorein": {"status": "ok", "scores": {"T1": {"nrmse": lorein}}}}
    methods["summit"] = (
        {"status": "failed", "error": "boom"}
        if summit is None
        else {"status": "ok", "scores": {"T1": {"nrmse": summit}}}
    )
    return {"methods": methods}


RECORDS = {0: record(0.40, 0.38), 1: record(0.36, 0.39), 2: record(0.38, None)}


def test_cell_gives_mean_sd_range_and_failures() -> None:
    assert spread_cell(nrmse_by_seed(RECORDS, "lorein", "T1")) == "0.380 +- 0.020 (0.360 - 0.400)"
    summit = nrmse_by_seed(RECORDS, "summit", "T1")
    assert summit[2] is None
    assert spread_cell(summit).endswith(", 1 failed")
    assert spread_cell({0: None}) == "failed"
    assert nrmse_by_seed(RECORDS, "lorein", "T2star") == {}
    assert nrmse_by_seed({**RECORDS, 3: {"methods": {}}}, "summit", "T1") == summit  # not run
    assert spread_cell({}) == "-"


def test_wins_count_only_seeds_where_both_ran() -> None:
    lorein = nrmse_by_seed(RECORDS, "lorein", "T1")
    summit = nrmse_by_seed(RECORDS, "summit", "T1")
    assert wins(lorein, summit) == "1 / 2"
    assert wins(summit, lorein) == "1 / 2"


def _args(**kw) -> argparse.Namespace:
    """The command line of seed_spread.py as ``report`` reads it."""
    base = {"methods": ["lorein", "summit"], "seeds": [0, 1, 2], "problem_seed": 0}
    return argparse.Namespace(**{**base, "vary": "method", "device": "cpu", **kw})


def test_report_lists_every_method_and_pair() -> None:
    text = report(_args(preset="sim1-small", R=27.0), RECORDS)
    assert "| lorein | 0.380 +- 0.020 (0.360 - 0.400) | - |" in text
    assert "| summit | 0.385 +- 0.007 (0.380 - 0.390), 1 failed | failed |" in text
    assert "| lorein < summit | 1 / 2 | 0 / 0 |" in text


def test_report_over_problems_says_so() -> None:
    text = report(_args(preset="sim2-small", R=960.0, vary="problem"), RECORDS)
    assert text.startswith("## Spread over sampling draws: sim2-small, R = 960")
    assert "Problem seeds 0, 1, 2" in text
    assert "over the problems." in text
    assert "| lorein < summit | 1 / 2 | 0 / 0 | 0 / 0 |" in text


def test_report_says_when_seeds_have_no_run() -> None:
    records = {**RECORDS, 3: {"methods": {}}}
    text = report(_args(preset="sim1-small", R=27.0, seeds=[0, 1, 2, 3]), records)
    assert "runs per method: lorein 3 of 4, summit 3 of 4." in text
    assert "runs per method" not in report(_args(preset="sim1-small", R=27.0), RECORDS)


def test_interior_columns_appear_when_runs_have_them() -> None:
    inner = {
        s: {
            "methods": {
                "lorein": {"status": "ok", "scores": {"T1": {"nrmse": 0.4, "interior": v}}},
                "summit": {"status": "ok", "scores": {"T1": {"nrmse": 0.5}}},
            }
        }
        for s, v in ((0, 0.10), (1, 0.14))
    }
    assert nrmse_by_seed(inner, "lorein", "T1", "interior") == {0: 0.10, 1: 0.14}
    assert nrmse_by_seed(inner, "summit", "T1", "interior") == {}  # recorded without it
    text = report(_args(preset="sim1-small", R=27.0, seeds=[0, 1]), inner)
    assert "| method | T1 | T2* | T1 interior | T2* interior |" in text
    assert (
        "| lorein | 0.400 +- 0.000 (0.400 - 0.400) | - | 0.120 +- 0.028 (0.100 - 0.140) | - |"
        in text
    )
    assert "| lorein < summit | 2 / 2 | 0 / 0 | 0 / 0 | 0 / 0 |" in text
    assert "T1 interior" not in report(_args(preset="sim1-small", R=27.0), RECORDS)


def test_without_csf_columns_follow_the_interior_ones() -> None:
    scores = {"T1": {"nrmse": 0.4, "interior": 0.1, "without_csf": 0.3}}
    records = {s: {"methods": {"lorein": {"status": "ok", "scores": scores}}} for s in (0, 1)}
    text = report(_args(preset="sim1-small", R=27.0, seeds=[0, 1], methods=["lorein"]), records)
    assert "| method | T1 | T2* | T1 interior | T2* interior | T1 no CSF | T2* no CSF |" in text
    assert "| 0.300 +- 0.000 (0.300 - 0.300) | - |" in text
