"""2D (one slice, nz = 1) and single-coil problems, end to end through ``lorein recon`` for every
method: finite maps of the problem's grid in maps.h5 and in NIfTI, a sanity accuracy bound for
the voxel fit and LoREIN on a 2D multi-coil problem, and a 3-echo protocol (fewer contrasts than
the default subspace rank)."""

import dataclasses
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
import torch

from lorein.cli import main
from lorein.data.problem import read_problem, read_truth, write_problem
from lorein.eval.evaluate import pure_voxels
from lorein.eval.metrics import constant_map, map_error
from lorein.methods.plausibility import SUSPECT_STATUS
from lorein.methods.registry import METHODS
from lorein.sim.presets import Preset, VfaProtocol
from lorein.sim.simulate import simulate
from tests.helpers import TINY

R = 3.0
"""Acceleration of every problem here (the 2D single-coil phantom scan of issue 22 is
reconstructed at R = 3)."""

FLAT = dataclasses.replace(
    TINY, matrix=(48, 48, 1), voxel_size=(4.5, 4.5, 9.0), calibration=(12, 1)
)
"""One 48 x 48 slice (as many voxels as :data:`TINY`'s 24 x 24 x 4), 4 coils."""

CASES: dict[str, Preset] = {
    "2d-multi-coil": FLAT,
    "3d-single-coil": TINY.resized(n_coils=1),
    "2d-single-coil": FLAT.resized(n_coils=1),
}

TINY_METHODS = """
[recon]
quiet = true

[lorein]
rank = 6
dictionary_atoms = 500
pretrain = 10
coil_warmup = 20
warm_start = 20
lr = 1e-2
decay_every = 40
wnnm_start = 60
lrr_start = "cg"  # a short run from scratch explains too little of the data
pmr_start = "cg"
cnn_channels = 4
hidden = 16
layers = 2
basis_encoding = { n_levels = 4, n_features = 2, log2_table = 10, n_min = 4, growth = "auto" }
map_encoding = { n_levels = 4, n_features = 2, log2_table = 10, n_min = 4, growth = "auto" }
phase_encoding = { n_levels = 4, n_features = 2, log2_table = 8, n_min = 1, growth = "auto" }
coil_encoding = { n_levels = 3, n_features = 2, log2_table = 4, n_min = 1, growth = 1.5 }

[summit]
dictionary_atoms = 500
coil_warmup = 20
warm_start = 20
lr = 1e-2
wnnm_start = 4
hidden = 16
layers = 2
map_encoding = { n_levels = 4, n_features = 2, log2_table = 10, n_min = 4, growth = "auto" }
phase_encoding = { n_levels = 4, n_features = 2, log2_table = 8, n_min = 1, growth = "auto" }
coil_encoding = { n_levels = 3, n_features = 2, log2_table = 4, n_min = 1, growth = 1.5 }

[lrt]
rank = 6
dictionary_atoms = 500
iterations = 3
cg_iterations = 3

[zero-deepsub]
rank = 6
dictionary_atoms = 500
epochs = 2
patience = 2
n_masks = 1
unrolls = 1
blocks = 1
channels = 4
cg_iterations = 2

[joint-maple]
unrolls = 1
channels = 4
blocks = 1
cg_iterations = 2
iterations = 4
validate_every = 2
map_iterations = 5
"""
"""Seconds-long settings of every method (``[fit]``: its defaults)."""

ITERATIONS = {"lorein": 6, "summit": 6}
"""``--iterations`` of the optimising methods (the others take theirs from the table)."""

ACCURATE_ITERATIONS = 150
"""LoREIN's steps on the 2D multi-coil problem, where its accuracy is checked (5-8 s; at 80 the
T2* of some seeds was barely below the constant map's)."""


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("shapes")
    (folder / "methods.toml").write_text(TINY_METHODS)
    for case, preset in CASES.items():
        sim = simulate(preset, R, seed=1, snr=40.0, progress=False)
        write_problem(folder / f"{case}.h5", sim.problem, truth=sim.truth)
    return folder


def _recon(
    workdir: Path, case: str, method: str, iterations: int | None, suspect: bool = True
) -> Path:
    """``lorein recon`` of ``case`` into ``workdir/case-method``; with ``suspect`` a short run may
    end with exit status 3 (written, marked suspect by the plausibility checks)."""
    out = workdir / f"{case}-{method}"
    argv = ["recon", str(workdir / f"{case}.h5"), "-o", str(out), "--method", method]
    argv += ["--config", str(workdir / "methods.toml")]
    if iterations is not None:
        argv += ["--iterations", str(iterations)]
    assert main(argv) in ((0, SUSPECT_STATUS) if suspect else (0,))
    return out


def _maps(out: Path) -> dict[str, torch.Tensor]:
    """M0, T1, T2* and B0 of ``out/maps.h5``, those the model estimates (``megre``: no T1)."""
    names = ("M0", "T1", "T2star", "B0")
    with h5py.File(out / "maps.h5", "r") as f:
        return {name: torch.from_numpy(f[name][()]) for name in names if name in f}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("method", METHODS)
def test_every_method_writes_finite_maps_of_the_grid(workdir: Path, case: str, method: str) -> None:
    iterations = ITERATIONS.get(method)
    accurate = case == "2d-multi-coil" and method in ("fit", "lorein")
    if accurate and method == "lorein":
        iterations = ACCURATE_ITERATIONS  # test_fit_and_lorein_know_the_anatomy reuses it
    out = _recon(workdir, case, method, iterations, suspect=not accurate)
    problem = read_problem(workdir / f"{case}.h5")
    nz, ny, nx = problem.grid
    for name, value in _maps(out).items():
        assert value.shape == (nz, ny, nx), name
        assert bool(value.isfinite().all()), name
    image = nib.load(out / "nifti" / "T1map.nii.gz")
    assert image.shape == (nx, ny, nz)
    np.testing.assert_allclose(image.affine, problem.affine, rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize("method", ["fit", "lorein"])
def test_fit_and_lorein_know_the_anatomy(workdir: Path, method: str) -> None:
    """2D multi-coil at R = 3, in the pure-tissue voxels: T1, T2* and B0 closer to the truth than
    the constant map at the brain's mean; M0 (after its scale) within 10 %. Pure tissue holds
    nearly uniform M0, so a constant map is within 4 % there and no bound against it; a fully
    sampled fit reaches 2-3 % (sim1-small), the unresolved aliasing of R = 3 gives 30-50 %."""
    out = workdir / f"2d-multi-coil-{method}"
    if not out.exists():  # run alone (-k): reconstruct here
        iterations = ACCURATE_ITERATIONS if method == "lorein" else None
        out = _recon(workdir, "2d-multi-coil", method, iterations, suspect=False)
    truth = read_truth(workdir / "2d-multi-coil.h5")
    pure = pure_voxels(truth)
    assert pure is not None and int(pure.sum()) > 100
    maps = _maps(out)
    assert map_error("M0", maps.pop("M0"), truth.M0, pure) < 0.1
    for name, x in maps.items():
        ref = getattr(truth, name)
        error = map_error(name, x, ref, pure)
        level = map_error(name, constant_map(name, ref, truth.mask), ref, pure)
        assert error < 0.8 * level, (method, name, error, level)


def test_a_three_echo_protocol_runs_at_a_rank_of_its_contrasts(
    workdir: Path, capsys: pytest.CaptureFixture
) -> None:
    """One flip angle, 3 echoes (the phantom scan's protocol), one slice, one coil: the default
    subspace rank (15) is lowered to the 3 contrasts; an explicit rank above them is refused in
    one line before any output."""
    protocol = VfaProtocol(flips_deg=(10.0,), first_echo_ms=4.0, echo_spacing_ms=5.5, n_echoes=3)
    preset = dataclasses.replace(
        FLAT.resized(n_coils=1), signal_model="megre", protocol=protocol, shared_echo_lines=True
    )
    sim = simulate(preset, R, seed=1, snr=30.0, progress=False)
    path = workdir / "3-echo.h5"
    write_problem(path, sim.problem, truth=sim.truth)
    for name, method in METHODS.items():
        rank = getattr(method.default_config(sim.problem, torch.device("cpu")), "rank", 3)
        assert rank <= 3, name
    (workdir / "no-rank.toml").write_text(TINY_METHODS.replace("rank = 6\n", "", 1))
    for method in ("lorein", "summit"):  # LoREIN's defaults and SUMMIT's LoREIN settings
        argv = ["recon", str(path), "-o", str(workdir / f"3-echo-{method}"), "--method", method]
        argv += ["--config", str(workdir / "no-rank.toml"), "--iterations", "6"]
        assert main(argv) in (0, SUSPECT_STATUS)  # 6 steps: may be marked suspect
        assert all(bool(v.isfinite().all()) for v in _maps(workdir / f"3-echo-{method}").values())
    capsys.readouterr()
    bad = workdir / "rank.toml"
    bad.write_text("[lrt]\nrank = 4\n")
    refused = workdir / "refused"
    argv = ["recon", str(path), "-o", str(refused), "--method", "lrt", "--config", str(bad)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "rank = 4: expected 1 to 3, the contrasts of" in err
    assert not refused.exists()
