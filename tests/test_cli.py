"""Command line: simulate -> info -> ISMRMRD round trip, one config file for every command,
flags over the file, one-line errors with exit status 2, weighted images on request, checkpoints
refused when unsafe or of another run, one run per output folder."""

import dataclasses
import json
import math
import os
import shutil
import tomllib
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
import torch

from lorein.cli import build_parser, main, parse_args
from lorein.config import COMMANDS
from lorein.data.output import Maps, output_lock
from lorein.data.problem import Problem, read_problem, read_truth, write_problem
from lorein.methods.base import RunContext
from lorein.numerics.checkpoint import save_checkpoint
from lorein.numerics.optimisation import NonFiniteLossError
from lorein.run import METHODS, load_config, run_identity
from lorein.sim.presets import T2irProtocol
from lorein.sim.simulate import simulate
from tests.fake_cuda import fake_cuda
from tests.helpers import TINY, TINY_MEGRE
from tests.numerics.test_checkpoint import crafted_checkpoint

SHARED = """
# one file for every command
[simulate]
preset = "sim1-small"
R = 27
seed = 0

[info]

[import]
prewhitening = false

[export-ismrmrd]
calibration = [12, 4]

[eval]
label = "LoREIN"
"""

TINY_LOREIN = """
[recon]
save_images = true
quiet = true

[lorein]
rank = 4
dictionary_atoms = 200
iterations = 3
pretrain = 1
coil_warmup = 20
warm_start = 20
lrr_start = "cg"  # a 3-step run from scratch explains too little of the data (suspect)
pmr_start = "cg"
decay_every = 2
wnnm_start = 2
cnn_channels = 4
hidden = 8
layers = 1
basis_encoding = { n_levels = 2, n_features = 2, log2_table = 8, n_min = 4, growth = "auto" }
map_encoding = { n_levels = 2, n_features = 2, log2_table = 8, n_min = 4, growth = "auto" }
phase_encoding = { n_levels = 2, n_features = 2, log2_table = 8, n_min = 1, growth = "auto" }
coil_encoding = { n_levels = 2, n_features = 2, log2_table = 4, n_min = 1, growth = 1.5 }
"""
"""A [recon] table and a LoREIN run of a few seconds on the tiny problem."""


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _one_line_error(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err.strip()


@pytest.fixture(scope="module")
def shared_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write(tmp_path_factory.mktemp("config") / "study.toml", SHARED)


@pytest.fixture(scope="module")
def problem_file(tmp_path_factory: pytest.TempPathFactory, shared_config: Path) -> Path:
    out = tmp_path_factory.mktemp("cli") / "p.h5"
    assert main(["simulate", "--config", str(shared_config), "-o", str(out)]) == 0
    return out


def test_simulate_takes_its_settings_from_the_config(problem_file: Path) -> None:
    with h5py.File(problem_file, "r") as f:
        assert f.attrs["format"] == "lorein-problem"
        n_lines, n_coils, nx = f["kspace/data"].shape
        assert (n_coils, nx) == (24, 56)
        assert abs(60 * 56 * 8 / n_lines / 27 - 1) < 0.02
        assert "truth/T1" in f and "truth/mask" in f


def test_simulate_labels_the_simulation_and_paper_protocol_has_pure_voxels_only(
    problem_file: Path, tmp_path: Path
) -> None:
    with h5py.File(problem_file, "r") as f:
        assert f.attrs["simulation"] == "fine-grid"
        assert (f.attrs["oversampling"], f.attrs["slab_margin"]) == (2, 2)
        purity = f["truth/purity"][()]
        assert purity.dtype == np.float32 and purity.shape == (8, 56, 56) and purity.min() < 0.9
    out = tmp_path / "paper.h5"
    argv = ["simulate", "--preset", "sim1-small", "--R", "48", "--paper-protocol", "-o", str(out)]
    assert main(argv) == 0
    with h5py.File(out, "r") as f:
        assert f.attrs["simulation"] == "paper-protocol"
        assert (f.attrs["oversampling"], f.attrs["slab_margin"]) == (1, 0)
        assert (f["truth/purity"][()] == 1).all()


def test_simulate_makes_2d_and_single_coil_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "2d.h5"
    argv = ["simulate", "--preset", "sim1-small", "--R", "3", "--nz", "1", "--coils", "1"]
    assert main([*argv, "-o", str(out)]) == 0
    assert "56 x 56 x 1, 1 coil(s)" in capsys.readouterr().out
    problem = read_problem(out)
    assert problem.matrix == (56, 56, 1) and problem.n_coils == 1
    assert bool((problem.kz == 0).all()) and abs(problem.acceleration / 3 - 1) < 0.02
    assert main([*argv[:-1], "0", "-o", str(tmp_path / "no.h5")]) == 2
    assert _one_line_error(capsys) == "lorein: error: --coils = 0: expected at least 1"
    assert sorted(tmp_path.iterdir()) == [out]


def test_eval_leads_with_the_pure_tissue_errors(
    problem_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    truth = read_truth(problem_file)
    out = tmp_path / "out"
    out.mkdir()
    with h5py.File(out / "maps.h5", "w") as f:
        for name, m in truth.maps().items():
            f[name] = {"T1": 1.1 * m, "B0": m + 2.0}.get(name, m).numpy()
    assert main(["eval", str(out), "--truth", str(problem_file), "--maps", "T1", "B0"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["map", "pure", "paper", "protocol"]
    assert lines[3].startswith("pure: the errors in the") and "90% one tissue" in lines[3]
    assert lines[4].startswith("paper protocol: the errors in the")
    scores = json.loads((out / "eval.json").read_text())
    assert 0 < scores["T1"]["pure"] <= 0.1 + 1e-6 and scores["T1"]["nrmse"] > 0
    assert scores["B0"]["pure"] == pytest.approx(2.0, rel=1e-5)


def test_info_prints_the_summary(
    problem_file: Path, shared_config: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["info", str(problem_file), "--config", str(shared_config)]) == 0
    out = capsys.readouterr().out
    assert "vfa_megre" in out and "56" in out
    assert "empty_contrasts" in out and "none" in out


def test_index_ranges_summarise_long_lists() -> None:
    from lorein.cli.info import _index_ranges

    assert _index_ranges([], 60) == "none"
    assert _index_ranges([3], 60) == "1 of 60: 3"
    empty = [i for i in range(1280) if i % 12 in (4, 5, 6, 7)]
    assert _index_ranges(empty, 1280, shown=2) == "428 of 1280: 4-7, 16-19, ..."


def test_flags_override_the_config_which_overrides_the_defaults(
    shared_config: Path, tmp_path: Path
) -> None:
    out = str(tmp_path / "p.h5")
    args = parse_args(["simulate", "--config", str(shared_config), "--R", "12", "-o", out])
    assert (args.preset, args.R, args.seed, args.pattern) == ("sim1-small", 12.0, 0, "vd-random")
    args = parse_args(["import", "raw.h5", "-o", out, "--config", str(shared_config)])
    assert args.prewhitening is False and args.keep_oversampling is False
    args = parse_args(
        ["import", "raw.h5", "-o", out, "--config", str(shared_config), "--prewhitening"]
    )
    assert args.prewhitening is True
    assert parse_args(["import", "raw.h5", "-o", out]).prewhitening is True
    recon = _write(tmp_path / "r.toml", TINY_LOREIN)
    args = parse_args(["recon", "p.h5", "-o", "out", "--config", str(recon), "--no-save-images"])
    assert (args.save_images, args.quiet, args.method) == (False, True, "lorein")


def test_import_table_holds_sidecar_keys_and_the_sidecar_overrides_it(
    problem_file: Path, tmp_path: Path
) -> None:
    raw, back = tmp_path / "raw.h5", tmp_path / "back.h5"
    config = _write(tmp_path / "c.toml", "[import]\necho_time_ms = 3\n")
    assert main(["export-ismrmrd", str(problem_file), "-o", str(raw), "--config", str(config)]) == 0
    assert main(["import", str(raw), "-o", str(back), "--config", str(config)]) == 0
    assert np.allclose(read_problem(back).contrasts.echo_time, 3e-3)
    sidecar = _write(tmp_path / "seq.toml", "echo_time_ms = 4.5\n")
    command = ["import", str(raw), "-o", str(back), "--config", str(config)]
    assert main([*command, "--sidecar", str(sidecar)]) == 0
    assert np.allclose(read_problem(back).contrasts.echo_time, 4.5e-3)


def test_import_per_counter_sidecar_info_table_and_undersample(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The issue's VFA multi-echo file: a sidecar with 4 flips and 8 TEs in the [import] table
    and a [counters] subtable; info shows one row per contrast with its counters; undersample
    writes a valid problem and refuses an undersampled input without writing."""
    from tests.data.test_ismrmrd_io import VFA_FLIPS, VFA_TES, vfa_multi_echo

    raw, problem, kept = tmp_path / "raw.h5", tmp_path / "p.h5", tmp_path / "kept.h5"
    vfa_multi_echo(raw, TR=[25.0])
    config = _write(
        tmp_path / "c.toml",
        f'[import]\nsignal_model = "vfa_megre"\nflip_angle_deg = {VFA_FLIPS}\n'
        f'echo_time_ms = {VFA_TES}\n[import.counters]\nflip_angle_deg = "set"\n',
    )
    assert main(["import", str(raw), "-o", str(problem), "--config", str(config)]) == 0
    capsys.readouterr()
    assert main(["info", str(problem)]) == 0
    lines = capsys.readouterr().out.splitlines()
    start = lines.index("contrast table:")
    assert lines[start + 1].split() == [
        "row",
        "set",
        "contrast",
        "TE",
        "ms",
        "TR",
        "ms",
        "flip",
        "deg",
        "lines",
    ]
    assert lines[start + 2 + 13].split() == ["13", "1", "5", "14.5", "25", "10", "3"]
    assert len(lines) == start + 2 + 32  # all 32 rows (at most 40 without --all-contrasts)

    bad = ["undersample", str(problem), "-o", str(kept), "--R", "2"]
    assert main(bad) == 2  # ky 1 of 4 is missing: not fully sampled
    assert "expected a fully sampled problem" in capsys.readouterr().err
    assert not kept.exists()


def test_import_pulseq_twix_then_undersample(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A tiny Siemens file of a Pulseq sequence (all echoes in Lin), echoes per excitation from
    the sidecar, then R = 3 over its 3 echoes: a valid problem with every ky once."""
    from tests.data.test_twix_io import pulseq_file

    raw, problem, kept = tmp_path / "scan.dat", tmp_path / "p.h5", tmp_path / "kept.h5"
    pulseq_file(raw)
    sidecar = _write(
        tmp_path / "seq.toml",
        "echoes_per_excitation = 3\necho_time_ms = [2, 5, 8]\nrepetition_time_ms = 15\n"
        "flip_angle_deg = 9\n",
    )
    command = ["import", str(raw), "-o", str(problem), "--sidecar", str(sidecar)]
    assert main([*command, "--signal-model", "vfa_megre"]) == 0
    assert "matrix [8, 4, 1], 1 coil, 3 contrasts, R = 1.00" in capsys.readouterr().out
    assert main(["undersample", str(problem), "-o", str(kept), "--R", "3", "--seed", "2"]) == 0
    back = read_problem(kept)
    assert back.acceleration == pytest.approx(3.0)
    assert torch.equal(torch.sort(back.ky).values, torch.arange(4))
    assert main([*command, "--signal-model", "t1rho"]) == 2
    assert "signal_model: expected one of" in capsys.readouterr().err
    assert main([*command, "--seq", str(sidecar)]) == 2  # not a .seq file
    assert "expected Pulseq format 1.4" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("command", "text", "expected"),
    [
        (
            ["simulate", "-o", "p.h5"],
            "[simulate]\nsede = 1\n",
            "valid: R, coils, device, nz, pattern, preset, seed, snr",
        ),
        (["info", "p.h5"], "[info]\nverbose = true\n", "unknown key(s) verbose; valid: none"),
        (["eval", "out", "--truth", "p.h5"], "[eval]\nlabel = 3\n", "label = 3: expected a string"),
        (["simulate", "-o", "p.h5"], "[simulate]\nR = '27'\n", "expected a number"),
        (["simulate", "-o", "p.h5"], "simulate = 3\n", "simulate must be a table"),
    ],
)
def test_bad_config_keys_are_one_line_errors(
    command: list[str],
    text: str,
    expected: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    config = _write(tmp_path / "bad.toml", text)
    assert main([*command, "--config", str(config)]) == 2
    err = _one_line_error(capsys)
    assert err.startswith("lorein: error:") and str(config) in err and expected in err
    table = command[0]
    assert f"[{table}]" in err or "must be a table" in err
    assert list(tmp_path.iterdir()) == [config]


def test_unknown_method_setting_is_one_line_error_before_any_output(
    problem_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    config = _write(tmp_path / "bad.toml", "[lorein]\nrnk = 3\n")
    out = tmp_path / "out"
    assert main(["recon", str(problem_file), "-o", str(out), "--config", str(config)]) == 2
    err = _one_line_error(capsys)
    assert f"{config} [lorein]: unknown lorein setting(s) rnk; valid:" in err and "rank" in err
    assert not out.exists()


@pytest.mark.parametrize("path", sorted(Path("configs").glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_configuration_is_valid(path: Path) -> None:
    tables = tomllib.loads(path.read_text())
    methods = [name for name in tables if name in METHODS]
    assert methods, f"{path} sets no method"
    for name in methods:
        config = load_config(METHODS[name], path)
        for key, value in tables[name].items():
            assert getattr(config, key) == value or isinstance(value, dict), (name, key)


def test_method_settings_in_a_table_or_outside_the_tables(tmp_path: Path) -> None:
    lorein = METHODS["lorein"]
    assert load_config(lorein, Path("configs/sim1-small.toml")).iterations == 300
    loose = _write(tmp_path / "loose.toml", 'lr = 1\n[simulate]\npreset = "sim1"\n')
    assert load_config(lorein, loose).lr == 1.0
    both = _write(tmp_path / "both.toml", "lr = 1\n[lorein]\niterations = 5\n")
    with pytest.raises(ValueError, match=r"both.toml: key\(s\) lr outside any table"):
        load_config(lorein, both)
    with pytest.raises(ValueError, match=r"\[lorein\]: iterations = 5.5: expected an integer"):
        load_config(lorein, _write(tmp_path / "t.toml", "[lorein]\niterations = 5.5\n"))


def test_config_show_prints_tables_that_read_back(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["config", "show", *COMMANDS, "lorein"]) == 0
    text = capsys.readouterr().out
    shown = tomllib.loads(text)
    assert set(shown) == {*COMMANDS, "lorein"}
    assert shown["simulate"] == {"seed": 0, "pattern": "vd-random", "device": "cpu"}
    assert shown["import"] == {"keep_oversampling": False, "prewhitening": True}
    assert "# echo_time_ms = (unset)" in text
    config = _write(tmp_path / "all.toml", text)
    assert parse_args(["recon", "p.h5", "-o", "out", "--config", str(config)]).method == "lorein"
    assert load_config(METHODS["lorein"], config) == load_config(METHODS["lorein"], None)
    legacy = "configs/sim1-small.toml"
    assert main(["config", "show", "lorein", "--config", legacy]) == 0
    assert tomllib.loads(capsys.readouterr().out)["lorein"]["iterations"] == 300


def test_every_command_has_a_config_table_and_help(capsys: pytest.CaptureFixture) -> None:
    _, commands = build_parser()
    assert tuple(commands) == COMMANDS
    for name in (*COMMANDS, "config"):
        assert main([name, "--help"]) == 0
        assert "--config FILE.toml" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [["simulate", "--preset", "sim1"], ["recon", "p.h5", "-o", "o", "--bogus"], ["nope"]],
)
def test_usage_errors_are_one_line(argv: list[str], capsys: pytest.CaptureFixture) -> None:
    assert main(argv) == 2
    assert "error:" in _one_line_error(capsys)


def test_missing_file_is_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["info", str(tmp_path / "nope.h5")]) == 2
    err = _one_line_error(capsys)
    assert err.startswith("lorein: error:") and "nope.h5" in err


def test_missing_required_setting_names_flag_and_table(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["simulate", "--preset", "sim1-small", "-o", str(tmp_path / "x.h5")]) == 2
    assert "missing --R" in _one_line_error(capsys)
    assert list(tmp_path.iterdir()) == []


def test_unknown_preset_leaves_no_output(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "x.h5"
    assert main(["simulate", "--preset", "sim3", "--R", "4", "-o", str(out)]) == 2
    assert "sim1-small" in capsys.readouterr().err
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="checks the message on a machine without CUDA"
)
def test_cuda_without_a_gpu_is_one_line_error_and_no_output(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "x.h5"
    argv = ["simulate", "--preset", "sim1-small", "--R", "27", "--device", "cuda", "-o", str(out)]
    assert main(argv) == 2
    assert "no CUDA device is available here (use --device cpu)" in _one_line_error(capsys)
    assert list(tmp_path.iterdir()) == []


def test_ismrmrd_round_trip(problem_file: Path, shared_config: Path, tmp_path: Path) -> None:
    raw, back = tmp_path / "raw.h5", tmp_path / "back.h5"
    assert (
        main(["export-ismrmrd", str(problem_file), "-o", str(raw), "--calibration", "12", "4"]) == 0
    )
    assert main(["import", str(raw), "-o", str(back), "--config", str(shared_config)]) == 0
    with h5py.File(problem_file, "r") as a, h5py.File(back, "r") as b:
        assert (a["kspace/data"][()] == b["kspace/data"][()]).all()
        assert (a["kspace/ky"][()] == b["kspace/ky"][()]).all()


def test_import_reports_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["import", str(tmp_path / "raw.h5"), "-o", str(tmp_path / "p.h5")]) == 2
    assert "raw.h5" in capsys.readouterr().err
    assert not (tmp_path / "p.h5").exists()


def test_recon_saves_weighted_images_on_request_and_eval_scores_chosen_maps(
    tmp_path: Path,
) -> None:
    sim = simulate(TINY, 8, seed=1, snr=math.inf, progress=False)
    problem = tmp_path / "tiny.h5"
    write_problem(problem, sim.problem, truth=sim.truth)
    config = _write(tmp_path / "tiny.toml", TINY_LOREIN + '[eval]\nmaps = ["T1", "T2star"]\n')
    out = tmp_path / "out"
    assert main(["recon", str(problem), "-o", str(out), "--config", str(config)]) == 0
    t1 = nib.load(out / "nifti" / "T1map.nii.gz")
    for part, units in (("mag", "arbitrary"), ("phase", "rad")):
        img = nib.load(out / "nifti" / f"weighted_{part}.nii.gz")
        assert img.shape == (24, 24, 4, 60) and img.get_data_dtype() == np.float32
        assert nib.aff2axcodes(img.affine) == nib.aff2axcodes(t1.affine)
        assert np.allclose(img.affine, t1.affine)
        sidecar = json.loads((out / "nifti" / f"weighted_{part}.json").read_text())
        assert sidecar["Units"] == units and sidecar["Volumes"] == 60
        assert np.allclose(sidecar["EchoTime"], sim.problem.contrasts.echo_time, rtol=1e-5)
        assert sidecar["FlipAngle"][:13] == [5.0] * 12 + [10.0]
        assert sidecar["ContrastUnits"]["FlipAngle"] == "deg"
    phase = nib.load(out / "nifti" / "weighted_phase.nii.gz").get_fdata()
    assert np.abs(phase).max() <= math.pi + 1e-6
    assert json.loads((out / "report.json").read_text())["saved_images"] is True
    assert main(["eval", str(out), "--truth", str(problem), "--config", str(config)]) == 0
    scores = json.loads((out / "eval.json").read_text())
    assert set(scores) == {"T1", "T2star"}
    assert 0 < scores["T1"]["constant_map"] < 1  # the oracle level printed beside each error
    assert scores["T1"]["interior"] > 0  # the simulated truth has tissue labels
    assert scores["T1"]["without_csf"] > 0
    assert not (out / "checkpoint.pt").exists()  # a finished run leaves no checkpoint
    kept = tmp_path / "kept"
    argv = ["recon", str(problem), "-o", str(kept), "--config", str(config), "--keep-checkpoint"]
    assert main([*argv, "--iterations", "2"]) == 0
    assert main([*argv, "--iterations", "3", "--resume"]) == 0
    assert json.loads((kept / "report.json").read_text())["iterations"] == 3
    assert (kept / "checkpoint.pt").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CUDA tests run on the real GPU")
def test_recon_on_cuda_checkpoints_and_resumes(tmp_path: Path) -> None:
    sim = simulate(TINY, 8, seed=1, snr=math.inf, progress=False)
    problem = tmp_path / "tiny.h5"
    write_problem(problem, sim.problem, truth=sim.truth)
    config = _write(tmp_path / "tiny.toml", TINY_LOREIN)
    out = tmp_path / "out"
    argv = ["recon", str(problem), "-o", str(out), "--config", str(config), "--device", "cuda"]
    with fake_cuda():
        assert main([*argv, "--keep-checkpoint", "--iterations", "2"]) == 0
        assert main([*argv, "--iterations", "3", "--resume"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["device"] == "cuda" and report["iterations"] == 3
    assert report["device_name"].startswith("pretend GPU")
    assert nib.load(out / "nifti" / "T1map.nii.gz").shape == (24, 24, 4)


@pytest.mark.parametrize(
    ("error", "hint"),
    [
        (torch.OutOfMemoryError("CUDA out of memory.\nTried to allocate 2.00 GiB"), "--device cpu"),
        (NonFiniteLossError("loss not finite after 5 rollbacks"), "lower lr"),
    ],
)
def test_run_failures_are_one_line_with_a_hint(
    problem_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    error: RuntimeError,
    hint: str,
) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr(METHODS["fit"], "reconstruct", fail)
    out = tmp_path / "out"
    assert main(["recon", str(problem_file), "-o", str(out), "--method", "fit", "--quiet"]) == 2
    err = _one_line_error(capsys)
    assert err.startswith("lorein: error:") and hint in err
    assert not out.exists()


def test_unexpected_runtime_error_keeps_its_traceback(
    problem_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(METHODS["fit"], "reconstruct", fail)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["recon", str(problem_file), "-o", str(tmp_path / "out"), "--method", "fit"])


@pytest.fixture(scope="module")
def tiny_problem(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The TINY problem file and the TINY_LOREIN configuration."""
    folder = tmp_path_factory.mktemp("tiny")
    sim = simulate(TINY, 8, seed=1, snr=math.inf, progress=False)
    write_problem(folder / "tiny.h5", sim.problem)
    return folder / "tiny.h5", _write(folder / "tiny.toml", TINY_LOREIN)


def test_resume_refuses_a_checkpoint_that_would_run_code(
    tiny_problem: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    problem, config = tiny_problem
    out, marker = tmp_path / "out", tmp_path / "marker"
    out.mkdir()
    crafted_checkpoint(out / "checkpoint.pt", marker)
    assert main(["recon", str(problem), "-o", str(out), "--config", str(config), "--resume"]) == 2
    err = _one_line_error(capsys)
    assert str(out / "checkpoint.pt") in err and "refers to exec" in err
    assert not marker.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # lock released
    assert [p.name for p in out.iterdir()] == ["checkpoint.pt"]


def test_resume_refuses_a_checkpoint_of_another_run_in_one_line(
    tiny_problem: tuple[Path, Path],
    problem_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    problem, config = tiny_problem
    out = tmp_path / "out"
    out.mkdir()
    checkpoint = out / "checkpoint.pt"
    lorein = load_config(METHODS["lorein"], config, None, read_problem(problem))
    save_checkpoint(
        {"identity": run_identity("lorein", read_problem(problem), lorein, 0)}, checkpoint
    )
    faster = _write(tmp_path / "faster.toml", TINY_LOREIN.replace("[lorein]", "[lorein]\nlr = 0.1"))
    cases = [
        ([str(problem), "--config", str(config), "--seed", "1"], "seed 0 (this run: 1)"),
        ([str(problem), "--config", str(faster)], f"setting lr = {lorein.lr} (this run: 0.1)"),
        ([str(problem_file), "--config", str(config)], "problem '"),
        ([str(problem), "--config", str(config), "--method", "summit"], "method 'lorein'"),
    ]
    for argv, named in cases:
        assert main(["recon", *argv, "-o", str(out), "--resume"]) == 2
        err = _one_line_error(capsys)
        assert f"{checkpoint} belongs to another run" in err and named in err
    # only the iterations may change: the checkpoint passes the check (but holds no model)
    argv = ["recon", str(problem), "-o", str(out), "--config", str(config), "--resume"]
    assert main([*argv, "--iterations", "7"]) == 2
    assert "does not fit this run's model" in _one_line_error(capsys)
    checkpoint.write_bytes(b"PK\x03\x04 cut short")
    assert main(argv) == 2
    assert "truncated or damaged" in _one_line_error(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["faster.toml", "out"]


def test_a_second_run_into_a_folder_fails_at_once_and_the_results_stay(
    problem_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def constant(problem: Problem, config: object, context: RunContext) -> Maps:
        return Maps(values={"T1": torch.full(problem.grid.shape, context.seed + 1.0)})

    monkeypatch.setattr(METHODS["fit"], "reconstruct", constant)
    out = tmp_path / "out"
    argv = ["recon", str(problem_file), "-o", str(out), "--method", "fit", "--quiet"]
    assert main(argv) == 0
    with output_lock(out):  # another run holds the folder
        assert main([*argv, "--seed", "1"]) == 2
        err = _one_line_error(capsys)
        assert f"another lorein run (pid {os.getpid()})" in err and str(out) in err
    with h5py.File(out / "maps.h5") as f:
        assert (f["T1"][()] == 1.0).all()  # the first run's results
    assert main([*argv, "--seed", "1"]) == 0
    with h5py.File(out / "maps.h5") as f:
        assert (f["T1"][()] == 2.0).all()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no lock, no temporary folder


@pytest.mark.parametrize(
    ("args", "text", "expected"),
    [
        (["--method", "lrt", "--iterations", "-5"], None, "iterations = -5: expected at least 0"),
        ([], "[fit]\ncoil_compression = 99\n", "coil_compression = 99: expected 1 to"),
        ([], "[fit]\ncoil_compression = 0\n", "coil_compression = 0: expected at least 1"),
        (["--method", "lrt"], "[lrt]\nrank = 61\n", "rank = 61: expected 1 to 60, the"),
        (
            ["--model-option", "estimate_inversion=true"],
            None,
            "p.h5: signal model vfa_megre has no option 'estimate_inversion'; its options: none",
        ),
        (["--model-option", "estimate_inversion"], None, "estimate_inversion: expected NAME=VALUE"),
        ([], "[recon]\nmodel_options = 3\n", "[recon] model_options = 3: expected a table"),
    ],
)
def test_settings_no_run_can_use_are_refused_before_anything_is_written(
    problem_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    args: list[str],
    text: str | None,
    expected: str,
) -> None:
    out = tmp_path / "out"
    config = [] if text is None else ["--config", str(_write(tmp_path / "c.toml", text))]
    command = ["recon", str(problem_file), "-o", str(out), "--method", "fit", *config, *args]
    assert main(command) == 2
    err = _one_line_error(capsys)
    assert err.startswith("lorein: error:") and expected in err
    assert not out.exists()


@pytest.mark.parametrize("snr", ["-1", "0", "nan"])
def test_simulate_refuses_a_noise_level_that_is_not_positive(
    tmp_path: Path, capsys: pytest.CaptureFixture, snr: str
) -> None:
    out = tmp_path / "p.h5"
    command = ["simulate", "--preset", "sim1-small", "--R", "27", "--snr", snr, "-o", str(out)]
    assert main(command) == 2
    err = _one_line_error(capsys)
    assert f"snr = {float(snr)}: expected a positive number" in err
    assert not out.exists()


def test_unknown_device_and_signal_free_kspace_are_one_line_errors(
    problem_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "out"
    assert main(["recon", str(problem_file), "-o", str(out), "--device", "tpu"]) == 2
    assert "--device tpu: expected cpu, cuda or cuda:N" in _one_line_error(capsys)
    silent = tmp_path / "zero.h5"
    shutil.copy(problem_file, silent)
    with h5py.File(silent, "r+") as f:
        f["kspace/data"][...] = 0
    assert main(["recon", str(silent), "-o", str(out), "--method", "fit"]) == 2
    err = _one_line_error(capsys)
    assert f"{silent}: /kspace/data: the calibration region holds no signal" in err
    assert not out.exists()


def test_non_utf8_config_is_a_one_line_error(
    tiny_problem: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    problem, _ = tiny_problem
    config = tmp_path / "latin1.toml"
    config.write_bytes("[lorein]\n# Größe\nlr = 0.01\n".encode("latin-1"))
    argv = ["recon", str(problem), "-o", str(tmp_path / "out"), "--config", str(config)]
    assert main(argv) == 2
    err = _one_line_error(capsys)
    assert f"{config}: not UTF-8 text" in err
    assert not (tmp_path / "out").exists()


def test_eval_with_the_truth_of_another_grid_is_a_one_line_error(
    tiny_problem: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    problem, config = tiny_problem
    out = tmp_path / "out"
    assert main(["recon", str(problem), "-o", str(out), "--config", str(config)]) == 0
    other = dataclasses.replace(TINY, matrix=(20, 24, 4))
    sim = simulate(other, 8, seed=1, snr=math.inf, progress=False)
    truth_file = tmp_path / "other.h5"
    write_problem(truth_file, sim.problem, sim.truth)
    assert main(["eval", str(out), "--truth", str(truth_file)]) == 2
    err = _one_line_error(capsys)
    assert f"{out / 'maps.h5'}: /" in err and "does not match the truth's grid" in err
    assert not (out / "eval.json").exists()


def test_ctrl_c_exits_130_in_one_line_saying_how_to_resume(
    tiny_problem: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import lorein.run

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(lorein.run, "run", interrupted)
    problem, config = tiny_problem
    argv = ["recon", str(problem), "-o", str(tmp_path / "out"), "--config", str(config)]
    assert main(argv) == 130
    err = _one_line_error(capsys)
    assert "interrupted" in err and "--resume" in err


def test_megre_recon_writes_r2star_and_no_t1_and_t2ir_estimates_b_on_request(
    tmp_path: Path,
) -> None:
    megre = tmp_path / "megre.h5"
    sim = simulate(TINY_MEGRE, 4, seed=0, snr=math.inf, progress=False)
    write_problem(megre, sim.problem, truth=sim.truth)
    out = tmp_path / "megre"
    assert main(["recon", str(megre), "-o", str(out), "--method", "fit", "--quiet"]) == 0
    stems = sorted(p.name.removesuffix(".nii.gz") for p in (out / "nifti").glob("*.nii.gz"))
    assert stems == ["B0map", "M0map", "R2starmap", "T2starmap"]
    sidecar = json.loads((out / "nifti" / "R2starmap.json").read_text())
    assert sidecar["Units"] == "1/s" and sidecar["MapName"] == "R2star"
    r2star = nib.load(out / "nifti" / "R2starmap.nii.gz").get_fdata()
    t2star = nib.load(out / "nifti" / "T2starmap.nii.gz").get_fdata()
    fitted = t2star > 0
    assert fitted.any() and np.allclose(r2star[fitted] * t2star[fitted], 1.0, rtol=1e-5)
    assert main(["eval", str(out), "--truth", str(megre)]) == 0
    assert set(json.loads((out / "eval.json").read_text())) == {"M0", "T2star", "B0"}

    t2ir = tmp_path / "t2ir.h5"
    preset = dataclasses.replace(
        TINY, signal_model="t2ir_gre", shared_echo_lines=True, protocol=T2irProtocol(6)
    )
    sim = simulate(preset, 8, seed=0, snr=math.inf, progress=False)
    write_problem(t2ir, sim.problem, truth=sim.truth)
    config = _write(tmp_path / "b.toml", "[recon]\nmodel_options = { estimate_inversion = true }\n")
    for name, argv in (("fixed", []), ("estimated", ["--config", str(config)])):
        command = ["recon", str(t2ir), "-o", str(tmp_path / name), "--method", "fit", "--quiet"]
        assert main([*command, *argv]) == 0
    with h5py.File(tmp_path / "fixed" / "maps.h5") as fixed:
        assert "B" not in fixed
    with h5py.File(tmp_path / "estimated" / "maps.h5") as estimated:
        b = estimated["B"][()][estimated["mask"][()] > 0]
        assert ((b >= -1) & (b <= 0)).all() and b.std() > 0
    report = json.loads((tmp_path / "estimated" / "report.json").read_text())
    assert report["model_options"] == {"estimate_inversion": True}
