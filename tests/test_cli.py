"""Command line: simulate -> info round trip; bad input gives one line and exit status 2."""

from pathlib import Path

import h5py
import pytest

from lorein.cli import main


@pytest.fixture(scope="module")
def problem_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "p.h5"
    assert main(["simulate", "--preset", "sim1-small", "--R", "27", "-o", str(out)]) == 0
    return out


def test_simulate_writes_only_acquired_lines(problem_file: Path) -> None:
    with h5py.File(problem_file, "r") as f:
        assert f.attrs["format"] == "lorein-problem"
        n_lines, n_coils, nx = f["kspace/data"].shape
        assert (n_coils, nx) == (24, 56)
        assert abs(60 * 56 * 8 / n_lines / 27 - 1) < 0.02
        assert "truth/T1" in f and "truth/mask" in f


def test_info_prints_the_summary(problem_file: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["info", str(problem_file)]) == 0
    out = capsys.readouterr().out
    assert "vfa_megre" in out and "56" in out


def test_missing_file_is_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["info", str(tmp_path / "nope.h5")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lorein: error:") and "nope.h5" in err and "\n" not in err


def test_unknown_preset_leaves_no_output(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "x.h5"
    assert main(["simulate", "--preset", "sim3", "--R", "4", "-o", str(out)]) == 2
    assert "sim1-small" in capsys.readouterr().err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_ismrmrd_round_trip(problem_file: Path, tmp_path: Path) -> None:
    raw, back = tmp_path / "raw.h5", tmp_path / "back.h5"
    assert (
        main(["export-ismrmrd", str(problem_file), "-o", str(raw), "--calibration", "12", "4"]) == 0
    )
    assert main(["import", str(raw), "-o", str(back)]) == 0
    with h5py.File(problem_file, "r") as a, h5py.File(back, "r") as b:
        assert (a["kspace/data"][()] == b["kspace/data"][()]).all()
        assert (a["kspace/ky"][()] == b["kspace/ky"][()]).all()


def test_import_reports_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["import", str(tmp_path / "raw.h5"), "-o", str(tmp_path / "p.h5")]) == 2
    assert "raw.h5" in capsys.readouterr().err
    assert not (tmp_path / "p.h5").exists()
