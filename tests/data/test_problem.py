"""Problem file: round trips, the DESIGN.md section 3 layout, and one test per validation rule."""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import torch

from lorein import __version__
from lorein.data.problem import (
    Problem,
    ProblemFileError,
    Truth,
    problem_summary,
    read_problem,
    read_truth,
    validate_problem,
    write_problem,
)
from lorein.physics.contrasts import ContrastTable
from tests.fake_cuda import fake_cuda
from tests.helpers import randn_complex, rng

NX, NY, NZ, N_COILS, N_CONTRASTS, N_LINES = 8, 6, 4, 3, 4, 20


def make_problem(signal_model: str = "t2ir_gre", seed: int = 0, coils: bool = True) -> Problem:
    """Small valid problem: random (ky, kz) lines, contrasts in turn, every contrast sampled."""
    g = rng(seed)
    columns: dict[str, torch.Tensor] = {
        "flip_angle": torch.tensor([0.05, 0.1, 0.15, 0.2]),
        "echo_time": torch.tensor([0.002, 0.004, 0.006, 0.008]),
        "repetition_time": torch.full((N_CONTRASTS,), 0.02),
    }
    if signal_model == "t2ir_gre":
        columns["prep_time"] = torch.tensor([0.0, 0.03, 0.06, 0.09])
        columns["segment"] = torch.tensor([1, 2, 3, 4])
    voxel_size = (1.0, 1.0, 2.5)
    affine = np.diag([*voxel_size, 1.0])
    affine[:3, 3] = [-4.0, -3.0, -5.0]
    return Problem(
        signal_model=signal_model,
        kspace=randn_complex(N_LINES, N_COILS, NX, seed=seed + 1),
        ky=torch.randint(0, NY, (N_LINES,), generator=g),
        kz=torch.randint(0, NZ, (N_LINES,), generator=g),
        contrast=torch.arange(N_LINES) % N_CONTRASTS,
        contrasts=ContrastTable(**columns),
        matrix=(NX, NY, NZ),
        voxel_size=voxel_size,
        affine=affine,
        coils=randn_complex(N_COILS, NZ, NY, NX, seed=seed + 2) if coils else None,
    )


def make_truth(seed: int = 0) -> Truth:
    g = rng(seed)
    shape = (NZ, NY, NX)
    return Truth(
        M0=torch.rand(shape, generator=g),
        T1=torch.rand(shape, generator=g) * 3,
        T2=torch.rand(shape, generator=g) * 0.2,
        T2star=torch.rand(shape, generator=g) * 0.1,
        B0=torch.randn(shape, generator=g) * 20,
        phase0=torch.rand(shape, generator=g) * 6,
        mask=torch.rand(shape, generator=g) > 0.5,
        coils=randn_complex(N_COILS, *shape, seed=seed + 3),
        extra={"labels": torch.randint(0, 9, shape, generator=g, dtype=torch.int16)},
    )


@pytest.fixture
def problem_file(tmp_path: Path) -> Path:
    path = tmp_path / "problem.h5"
    write_problem(path, make_problem(), make_truth(), attrs={"preset": "tiny", "seed": 0})
    return path


def _raises(path: str | Path, pattern: str) -> Any:
    """Expect a one-line ProblemFileError that starts with the file name, then ``pattern``."""
    return pytest.raises(ProblemFileError, match=f"^{re.escape(str(path))}: {pattern}")


def _assert_same_problem(a: Problem, b: Problem) -> None:
    for name in ("kspace", "ky", "kz", "contrast", "coils"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            assert y.dtype == x.dtype, name
            assert torch.equal(x, y), name
    assert a.contrasts.columns().keys() == b.contrasts.columns().keys()
    for name, col in a.contrasts.columns().items():
        other = b.contrasts.columns()[name]
        assert other.dtype == col.dtype, name
        assert torch.equal(col, other), name
    assert (a.signal_model, a.matrix, a.voxel_size) == (b.signal_model, b.matrix, b.voxel_size)
    assert np.array_equal(a.affine, b.affine)


# ---------------------------------------------------------------------------------------------
# round trips and the layout contract
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("signal_model", ["vfa_megre", "t2ir_gre"])
@pytest.mark.parametrize("coils", [True, False])
def test_round_trip(tmp_path: Path, signal_model: str, coils: bool) -> None:
    problem = make_problem(signal_model, seed=3, coils=coils)
    path = tmp_path / "p.h5"
    write_problem(path, problem)
    back = read_problem(path)
    _assert_same_problem(problem, back)
    assert back.source == str(path)
    assert back.kspace.dtype == torch.complex64
    assert back.ky.dtype == back.kz.dtype == back.contrast.dtype == torch.int64
    assert isinstance(back.matrix[0], int) and isinstance(back.voxel_size[0], float)
    assert back.affine.dtype == np.float64


def test_layout_matches_contract(problem_file: Path) -> None:
    with h5py.File(problem_file, "r") as f:
        assert f.attrs["format"] == "lorein-problem"
        assert f.attrs["format_version"] == 1
        assert f.attrs["signal_model"] == "t2ir_gre"
        assert f.attrs["preset"] == "tiny" and f.attrs["seed"] == 0
        assert f.attrs["lorein_version"] == __version__
        assert f["kspace/data"].dtype == np.complex64
        assert f["kspace/data"].shape == (N_LINES, N_COILS, NX)
        for name in ("ky", "kz", "contrast"):
            assert f[f"kspace/{name}"].dtype == np.int32
            assert f[f"kspace/{name}"].shape == (N_LINES,)
        assert sorted(f["contrasts"]) == sorted(
            ["flip_angle", "echo_time", "repetition_time", "prep_time", "segment"]
        )
        assert f["contrasts/segment"].dtype.kind == "i"
        assert f["contrasts/echo_time"].dtype == np.float32
        geometry = f["geometry"].attrs
        assert list(geometry["matrix"]) == [NX, NY, NZ]
        assert list(geometry["voxel_size"]) == [1.0, 1.0, 2.5]
        assert geometry["affine"].shape == (4, 4)
        assert f["coils"].dtype == np.complex64
        assert f["coils"].shape == (N_COILS, NZ, NY, NX)
        assert f["truth/T1"].dtype == np.float32 and f["truth/mask"].dtype == np.uint8
        assert f["kspace/data"].compression is None


def test_truth_round_trip(problem_file: Path) -> None:
    truth, back = make_truth(), read_truth(problem_file)
    for name, m in truth.maps().items():
        assert torch.equal(getattr(back, name), m), name
    assert back.mask.dtype == torch.uint8
    assert torch.equal(back.mask, truth.mask.to(torch.uint8))
    assert torch.equal(back.coils, truth.coils)
    assert back.extra.keys() == {"labels"}
    assert back.extra["labels"].dtype == torch.int16
    assert torch.equal(back.extra["labels"], truth.extra["labels"])


def test_truth_with_absent_maps(tmp_path: Path) -> None:
    path = tmp_path / "p.h5"
    truth = make_truth()
    write_problem(path, make_problem("vfa_megre"), Truth(T1=truth.T1, mask=truth.mask))
    back = read_truth(path)
    assert back.maps().keys() == {"T1"}
    assert back.T2 is None and back.coils is None and back.extra == {}


def test_truth_purity_round_trip_and_older_files_without_it(
    problem_file: Path, tmp_path: Path
) -> None:
    """``truth/purity`` is optional: written as float32 when known, None when a file lacks it."""
    assert read_truth(problem_file).purity is None  # written without purity
    purity = torch.rand(NZ, NY, NX, generator=rng(5), dtype=torch.float64)
    path = tmp_path / "p.h5"
    write_problem(path, make_problem(), dataclasses.replace(make_truth(), purity=purity))
    with h5py.File(path, "r") as f:
        assert f["truth/purity"].dtype == np.float32
    back = read_truth(path)
    assert back.purity is not None and back.purity.dtype == torch.float32
    assert torch.equal(back.purity, purity.float())
    assert back.extra.keys() == {"labels"}
    assert "purity" in problem_summary(path)["truth_maps"]


@pytest.mark.parametrize(
    ("data", "pattern"),
    [
        (np.full((NZ, NY, NX), 1.5, np.float32), r"expected fractions in \[0, 1\], found min 1.5"),
        (np.ones((NZ, NY, NX), np.uint8), r"expected floating-point"),
        (np.ones((NY, NX), np.float32), r"expected shape \[4, 6, 8\] \(nz, ny, nx\)"),
        (np.full((NZ, NY, NX), np.nan, np.float32), r"expected finite values"),
    ],
)
def test_purity_is_validated_on_reading_and_writing(
    problem_file: Path, tmp_path: Path, data: np.ndarray, pattern: str
) -> None:
    with h5py.File(problem_file, "r+") as f:
        f["truth/purity"] = data
    with _raises(problem_file, "/truth/purity: " + pattern):
        read_truth(problem_file)
    path = tmp_path / "p.h5"
    bad = dataclasses.replace(make_truth(), purity=torch.from_numpy(data))
    with pytest.raises(ProblemFileError, match="/truth/purity: " + pattern):
        write_problem(path, make_problem(), bad)
    reserved = dataclasses.replace(make_truth(), extra={"purity": make_truth().T1})
    with pytest.raises(ProblemFileError, match=r"/truth/purity: expected an extra map name"):
        write_problem(path, make_problem(), reserved)
    assert not path.exists()


def test_read_problem_does_not_touch_truth(problem_file: Path) -> None:
    with h5py.File(problem_file, "r+") as f:
        del f["truth/T1"]
        f["truth/T1"] = np.zeros((2, 2), np.float32)
    read_problem(problem_file)  # must not fail
    with _raises(problem_file, r"/truth/T1: expected shape \[4, 6, 8\] \(nz, ny, nx\), found"):
        read_truth(problem_file)


def test_read_truth_without_truth(tmp_path: Path) -> None:
    path = tmp_path / "p.h5"
    write_problem(path, make_problem())
    with _raises(path, r"/truth: expected a group, found none \(the file holds no ground truth\)"):
        read_truth(path)


@pytest.mark.parametrize(
    ("name", "data", "pattern"),
    [
        ("mask", np.full((NZ, NY, NX), 2, np.uint8), r"/truth/mask: expected values 0 or 1"),
        ("mask", np.zeros((NZ, NY, NX), np.float32), r"/truth/mask: expected integer"),
        ("T2", np.zeros((NZ, NY, NX), np.int32), r"/truth/T2: expected floating-point"),
        ("B0", np.full((NZ, NY, NX), np.nan, np.float32), r"/truth/B0: expected finite values"),
        ("coils", np.zeros((2, NZ, NY, NX), np.complex64), r"/truth/coils: expected shape \[3,"),
        (
            "labels",
            np.zeros((NY, NX), np.int16),
            r"/truth/labels: expected shape \[\.\.\., 4, 6, 8\]",
        ),
    ],
)
def test_read_truth_validates(
    problem_file: Path, name: str, data: np.ndarray, pattern: str
) -> None:
    with h5py.File(problem_file, "r+") as f:
        if name in f["truth"]:
            del f[f"truth/{name}"]
        f[f"truth/{name}"] = data
    with _raises(problem_file, pattern):
        read_truth(problem_file)


def test_big_endian_file_reads_native(problem_file: Path) -> None:
    with h5py.File(problem_file, "r+") as f:
        for name, dtype in (("kspace/data", ">c8"), ("kspace/ky", ">i4")):
            data = f[name][()].astype(dtype)
            del f[name]
            f.create_dataset(name, data=data, dtype=dtype)
    back = read_problem(problem_file)
    _assert_same_problem(make_problem(), back)


def test_unknown_additions_are_ignored(problem_file: Path) -> None:
    """Forward compatibility: extra columns, datasets and attrs may be added without a bump."""
    with h5py.File(problem_file, "r+") as f:
        f["contrasts/inversion_time"] = np.ones(N_CONTRASTS, np.float32) * 5
        f["kspace/weights"] = np.ones(N_LINES, np.float32)
        f.attrs["scanner"] = "simulated"
    _assert_same_problem(make_problem(), read_problem(problem_file))


def test_contrast_without_lines_is_allowed(tmp_path: Path) -> None:
    problem = make_problem()
    problem = dataclasses.replace(problem, contrast=torch.arange(N_LINES) % 3)
    path = tmp_path / "p.h5"
    write_problem(path, problem)
    assert read_problem(path).lines_per_contrast().tolist() == [7, 7, 6, 0]
    summary = problem_summary(path)
    assert summary["empty_contrasts"] == [3]
    assert (summary["lines_per_contrast_min"], summary["lines_per_contrast_max"]) == (0, 7)


def test_problem_properties() -> None:
    problem = make_problem()
    assert (problem.n_lines, problem.n_coils, problem.n_contrasts) == (N_LINES, N_COILS, 4)
    assert problem.acceleration == pytest.approx(N_CONTRASTS * NY * NZ / N_LINES)
    assert problem.lines_per_contrast().tolist() == [5, 5, 5, 5]
    expected = (
        N_LINES * N_COILS * NX * 8  # kspace complex64
        + 3 * N_LINES * 8  # ky, kz, contrast int64
        + 4 * N_CONTRASTS * 4  # float32 columns
        + N_CONTRASTS * 8  # segment int64
        + N_COILS * NZ * NY * NX * 8  # coils complex64
        + 16 * 8  # affine float64
    )
    assert problem.nbytes == expected
    assert problem.grid == (NZ, NY, NX) and problem.grid.shape == problem.coils.shape[1:]


def _tensors(problem: Problem) -> dict[str, torch.Tensor]:
    named = {n: getattr(problem, n) for n in ("kspace", "ky", "kz", "contrast", "coils")}
    named |= {f"contrasts.{n}": c for n, c in problem.contrasts.columns().items()}
    return {n: t for n, t in named.items() if t is not None}


@pytest.mark.parametrize("coils", [True, False])
def test_to_moves_every_tensor_and_keeps_the_original(coils: bool) -> None:
    """On the real GPU when there is one, else on the pretend GPU of tests/fake_cuda.py."""
    problem = make_problem(coils=coils)
    before = {n: t.clone() for n, t in _tensors(problem).items()}
    on_gpu = contextlib.nullcontext() if torch.cuda.is_available() else fake_cuda()
    with on_gpu:
        moved = problem.to("cuda")
        assert all(t.device.type == "cuda" for t in _tensors(moved).values())
        back = moved.to("cpu")
    assert (moved.coils is None) == (not coils)
    assert _tensors(moved).keys() == before.keys() == _tensors(problem).keys()
    for name, value in before.items():
        original = _tensors(problem)[name]
        assert original.device.type == "cpu" and torch.equal(original, value), name
    _assert_same_problem(problem, back)  # same values and dtypes, same geometry
    assert moved.source == problem.source and moved.affine is problem.affine


def test_to_the_same_device_shares_the_tensors() -> None:
    problem = make_problem()
    moved = problem.to(torch.device("cpu"))
    assert moved is not problem
    assert all(_tensors(moved)[n] is t for n, t in _tensors(problem).items())


def test_problem_summary(problem_file: Path) -> None:
    s = problem_summary(problem_file)
    assert s["path"] == str(problem_file)
    assert s["file_size"] == problem_file.stat().st_size
    assert s["data_size"] == N_LINES * N_COILS * NX * 8
    assert s["signal_model"] == "t2ir_gre" and s["format_version"] == 1
    assert s["matrix"] == [NX, NY, NZ] and s["voxel_size"] == [1.0, 1.0, 2.5]
    assert (s["n_coils"], s["has_coils"], s["n_contrasts"], s["n_lines"]) == (3, True, 4, 20)
    assert s["acceleration"] == pytest.approx(4.8)
    assert s["contrast_ranges"]["segment"] == [1, 4]
    assert s["contrast_ranges"]["echo_time"] == pytest.approx([0.002, 0.008])
    assert (s["lines_per_contrast_min"], s["lines_per_contrast_max"]) == (5, 5)
    assert s["empty_contrasts"] == []
    assert s["has_truth"] is True
    assert s["truth_maps"] == sorted([*make_truth().maps(), "mask", "coils", "labels"])
    assert s["attrs"] == {"preset": "tiny", "seed": 0, "lorein_version": __version__}


# ---------------------------------------------------------------------------------------------
# atomic writing
# ---------------------------------------------------------------------------------------------


def test_invalid_problem_leaves_no_file(tmp_path: Path) -> None:
    path = tmp_path / "p.h5"
    bad = dataclasses.replace(make_problem(), ky=make_problem().ky + NY)
    with pytest.raises(ProblemFileError, match=r"\(not written\): /kspace/ky: expected values"):
        write_problem(path, bad)
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_old_file_and_leaves_no_temporary(problem_file: Path) -> None:
    before = problem_file.read_bytes()
    with pytest.raises(TypeError):  # h5py cannot store an arbitrary object as an attribute
        write_problem(problem_file, make_problem(seed=5), attrs={"bad": object()})
    assert list(problem_file.parent.iterdir()) == [problem_file]
    assert problem_file.read_bytes() == before


def test_reserved_attr_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "p.h5"
    with pytest.raises(ProblemFileError, match=r"/@format: expected a provenance attribute"):
        write_problem(path, make_problem(), attrs={"format": "other"})
    assert not path.exists()


def test_write_creates_parent_directory(tmp_path: Path) -> None:
    path = tmp_path / "new" / "p.h5"
    write_problem(path, make_problem())
    assert read_problem(path).n_lines == N_LINES


# ---------------------------------------------------------------------------------------------
# validation of in-memory problems (the same checks as on reading)
# ---------------------------------------------------------------------------------------------


def _with_columns(**changes: torch.Tensor | None) -> Callable[[Problem], Problem]:
    def change(p: Problem) -> Problem:
        return dataclasses.replace(p, contrasts=dataclasses.replace(p.contrasts, **changes))

    return change


_SINGULAR = np.diag([1.0, 1.0, 2.5, 1.0])
_SINGULAR[:3, 1] = [1.0, 0.0, 0.0]

OBJECT_CASES: list[tuple[str, Callable[[Problem], Problem], str]] = [
    (
        "kspace real",
        lambda p: dataclasses.replace(p, kspace=p.kspace.real),
        r"/kspace/data: expected complex \(complex64\) dtype, found float32",
    ),
    (
        "kspace list",
        lambda p: dataclasses.replace(p, kspace=p.kspace.tolist()),
        r"/kspace/data: expected a torch.Tensor, found list",
    ),
    (
        "kz out of range",
        lambda p: dataclasses.replace(p, kz=p.kz + NZ),
        r"/kspace/kz: expected values in \[0, 4\) \(nz = 4\)",
    ),
    (
        "echo time in ms",
        lambda p: _with_columns(echo_time=p.contrasts.echo_time * 1000)(p),
        r"/contrasts/echo_time: expected seconds, found max 8 \(looks like milliseconds\)",
    ),
    (
        "t2ir without prep_time",
        _with_columns(prep_time=None),
        r"/contrasts/prep_time: expected a dataset \(required for signal_model 't2ir_gre'\)",
    ),
    (
        "coils shape",
        lambda p: dataclasses.replace(p, coils=p.coils[:, :2]),
        r"/coils: expected shape \[3, 4, 6, 8\] \(n_coils, nz, ny, nx\), found \[3, 2, 6, 8\]",
    ),
    (
        "affine singular",
        lambda p: dataclasses.replace(p, affine=_SINGULAR),
        r"/geometry@affine: expected an invertible matrix",
    ),
    (
        "signal model",
        lambda p: dataclasses.replace(p, signal_model="mp2rage"),
        r"/@signal_model: expected one of 'vfa_megre', 't2ir_gre', 'megre', found 'mp2rage'",
    ),
    (
        "matrix nx",
        lambda p: dataclasses.replace(p, matrix=(9, NY, NZ)),
        r"/kspace/data: expected nx = 9 readout samples \(geometry matrix\), found 8",
    ),
]


@pytest.mark.parametrize(
    ("change", "pattern"), [c[1:] for c in OBJECT_CASES], ids=[c[0] for c in OBJECT_CASES]
)
def test_write_validates_problem(
    tmp_path: Path, change: Callable[[Problem], Problem], pattern: str
) -> None:
    path = tmp_path / "p.h5"
    with _raises(f"{path} (not written)", pattern):
        write_problem(path, change(make_problem()))
    assert list(tmp_path.iterdir()) == []
    with _raises("<memory>", pattern):
        validate_problem(change(make_problem()))


def test_validate_problem_accepts_valid() -> None:
    validate_problem(make_problem("vfa_megre"))
    validate_problem(make_problem("t2ir_gre", coils=False))


def test_write_validates_truth(tmp_path: Path) -> None:
    path = tmp_path / "p.h5"
    truth = dataclasses.replace(make_truth(), T1=make_truth().T1[:2])
    with pytest.raises(ProblemFileError, match=r"/truth/T1: expected shape \[4, 6, 8\]"):
        write_problem(path, make_problem(), truth)
    reserved = dataclasses.replace(make_truth(), extra={"T2": make_truth().T1})
    with pytest.raises(ProblemFileError, match=r"/truth/T2: expected an extra map name"):
        write_problem(path, make_problem(), reserved)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# validation on reading: one corruption per rule
# ---------------------------------------------------------------------------------------------

Mutation = Callable[[h5py.File], None]


def _edit(name: str, change: Callable[[np.ndarray], np.ndarray]) -> Mutation:
    """Replace dataset ``name`` by ``change(old values)``."""

    def mutate(f: h5py.File) -> None:
        old = f[name][()]
        del f[name]
        f[name] = change(old.copy())

    return mutate


def _edit_attr(obj: str, key: str, change: Callable[[Any], Any]) -> Mutation:
    def mutate(f: h5py.File) -> None:
        f[obj].attrs[key] = change(f[obj].attrs[key])

    return mutate


def _delete(name: str) -> Mutation:
    def mutate(f: h5py.File) -> None:
        del f[name]

    return mutate


def _delete_attr(obj: str, key: str) -> Mutation:
    def mutate(f: h5py.File) -> None:
        del f[obj].attrs[key]

    return mutate


def _set_item(index: Any, value: Any) -> Callable[[np.ndarray], np.ndarray]:
    def change(v: np.ndarray) -> np.ndarray:
        v[index] = value
        return v

    return change


def _all(*mutations: Mutation) -> Mutation:
    def mutate(f: h5py.File) -> None:
        for m in mutations:
            m(f)

    return mutate


def _replace_with_group(name: str) -> Mutation:
    def mutate(f: h5py.File) -> None:
        del f[name]
        f.create_group(name)

    return mutate


_COLUMNS = ("flip_angle", "echo_time", "repetition_time", "prep_time", "segment")

FILE_CASES: list[tuple[str, Mutation, str]] = [
    # header
    ("format missing", _delete_attr("/", "format"), r"/@format: expected an attribute, found none"),
    (
        "format wrong",
        _edit_attr("/", "format", lambda _: "ismrmrd"),
        r"/@format: expected 'lorein-problem', found 'ismrmrd'",
    ),
    (
        "format array",
        _edit_attr("/", "format", lambda _: np.array([b"lorein-problem", b"x"])),
        r"/@format: expected 'lorein-problem', found array",
    ),
    (
        "version 2",
        _edit_attr("/", "format_version", lambda _: 2),
        r"/@format_version: expected 1 \(the version this reader supports\), found 2",
    ),
    (
        "version text",
        _edit_attr("/", "format_version", lambda _: "1"),
        r"/@format_version: expected integer 1, found '1'",
    ),
    (
        "signal model unknown",
        _edit_attr("/", "signal_model", lambda _: "mp2rage"),
        r"/@signal_model: expected one of 'vfa_megre', 't2ir_gre', 'megre', found 'mp2rage'",
    ),
    ("signal model missing", _delete_attr("/", "signal_model"), r"/@signal_model: expected an"),
    # missing groups and datasets
    ("kspace group", _delete("kspace"), r"/kspace: expected a group, found nothing"),
    ("contrasts group", _delete("contrasts"), r"/contrasts: expected a group, found nothing"),
    ("geometry group", _delete("geometry"), r"/geometry: expected a group, found nothing"),
    ("ky missing", _delete("kspace/ky"), r"/kspace/ky: expected a dataset, found nothing"),
    (
        "data is group",
        _replace_with_group("kspace/data"),
        r"/kspace/data: expected a dataset, found a group",
    ),
    ("matrix missing", _delete_attr("geometry", "matrix"), r"/geometry@matrix: expected an attr"),
    # dtypes
    ("kspace real", _edit("kspace/data", np.real), r"/kspace/data: expected complex"),
    (
        "ky float",
        _edit("kspace/ky", lambda v: v.astype(np.float64)),
        r"/kspace/ky: expected integer dtype, found float64",
    ),
    (
        "contrast float",
        _edit("kspace/contrast", lambda v: v.astype(np.float32)),
        r"/kspace/contrast: expected integer dtype, found float32",
    ),
    (
        "segment float",
        _edit("contrasts/segment", lambda v: v.astype(np.float32)),
        r"/contrasts/segment: expected integer dtype, found float32",
    ),
    (
        "flip angle int",
        _edit("contrasts/flip_angle", lambda v: np.arange(1, 5)),
        r"/contrasts/flip_angle: expected floating-point dtype, found int64",
    ),
    (
        "coils real",
        _edit("coils", np.abs),
        r"/coils: expected complex \(complex64\) dtype, found float32",
    ),
    # shapes
    (
        "kspace 2-D",
        _edit("kspace/data", lambda v: v[:, 0]),
        r"/kspace/data: expected shape \[\*, \*, \*\] \(n_lines, n_coils, nx\), found \[20, 8\]",
    ),
    (
        "ky length",
        _edit("kspace/ky", lambda v: v[:-1]),
        r"/kspace/ky: expected shape \[20\] \(n_lines\), found \[19\]",
    ),
    ("kz length", _edit("kspace/kz", lambda v: v[:-2]), r"/kspace/kz: expected shape \[20\]"),
    (
        "contrast 2-D",
        _edit("kspace/contrast", lambda v: v[:, None]),
        r"/kspace/contrast: expected shape \[20\] \(n_lines\), found \[20, 1\]",
    ),
    (
        "column length",
        _edit("contrasts/echo_time", lambda v: v[:-1]),
        r"/contrasts/echo_time: expected shape \[4\] \(n_contrasts, as /contrasts/flip_angle\)",
    ),
    (
        "no contrasts",
        _all(*(_edit(f"contrasts/{n}", lambda v: v[:0]) for n in _COLUMNS)),
        r"/contrasts: expected at least one contrast, found 0",
    ),
    (
        "coils shape",
        _edit("coils", lambda v: v[:2]),
        r"/coils: expected shape \[3, 4, 6, 8\] \(n_coils, nz, ny, nx\), found \[2, 4, 6, 8\]",
    ),
    (
        "nx mismatch",
        _edit_attr("geometry", "matrix", lambda _: [10, NY, NZ]),
        r"/kspace/data: expected nx = 10 readout samples \(geometry matrix\), found 8",
    ),
    (
        "zero lines",
        _all(*(_edit(f"kspace/{n}", lambda v: v[:0]) for n in ("data", "ky", "kz", "contrast"))),
        r"/kspace/data: expected at least one line, found 0",
    ),
    (
        "zero coils",
        _all(_edit("kspace/data", lambda v: v[:, :0]), _delete("coils")),
        r"/kspace/data: expected at least one coil, found 0",
    ),
    # index ranges
    (
        "ky >= ny",
        _edit("kspace/ky", _set_item(0, NY)),
        r"/kspace/ky: expected values in \[0, 6\) \(ny = 6\), found min 0, max 6",
    ),
    ("ky < 0", _edit("kspace/ky", _set_item(3, -1)), r"/kspace/ky: expected values in \[0, 6\)"),
    (
        "kz >= nz",
        _edit("kspace/kz", _set_item(0, NZ)),
        r"/kspace/kz: expected values in \[0, 4\) \(nz = 4\)",
    ),
    (
        "contrast >= n_contrasts",
        _edit("kspace/contrast", _set_item(0, N_CONTRASTS)),
        r"/kspace/contrast: expected values in \[0, 4\) \(n_contrasts = 4\), found min 0, max 4",
    ),
    (
        "contrast < 0",
        _edit("kspace/contrast", _set_item(0, -2)),
        r"/kspace/contrast: expected values in \[0, 4\) \(n_contrasts = 4\), found min -2",
    ),
    # units plausibility
    (
        "echo time ms",
        _edit("contrasts/echo_time", lambda v: v * 1000),
        r"/contrasts/echo_time: expected seconds, found max 8 \(looks like milliseconds\)",
    ),
    (
        "repetition time ms",
        _edit("contrasts/repetition_time", lambda v: v * 1000),
        r"/contrasts/repetition_time: expected seconds, found max 20 \(looks like milliseconds\)",
    ),
    (
        "prep time ms",
        _edit("contrasts/prep_time", lambda v: v * 1000),
        r"/contrasts/prep_time: expected seconds, found max 90 \(looks like milliseconds\)",
    ),
    (
        "flip angle degrees",
        _edit("contrasts/flip_angle", np.rad2deg),
        r"/contrasts/flip_angle: expected radians, found max 11\.\d* \(looks like degrees\)",
    ),
    (
        "flip angle whole degrees",
        _edit("contrasts/flip_angle", lambda v: np.array([2.0, 3.0, 4.0, 5.0], v.dtype)),
        r"/contrasts/flip_angle: expected radians, found whole numbers up to 5 \(looks like deg",
    ),
    (
        "flip angle zero",
        _edit("contrasts/flip_angle", _set_item(1, 0.0)),
        r"/contrasts/flip_angle: expected positive angles \[rad\], found min 0",
    ),
    (
        "echo time zero",
        _edit("contrasts/echo_time", _set_item(0, 0.0)),
        r"/contrasts/echo_time: expected positive times \[s\], found min 0",
    ),
    (
        "repetition time negative",
        _edit("contrasts/repetition_time", _set_item(2, -0.01)),
        r"/contrasts/repetition_time: expected positive times \[s\], found min -0\.01",
    ),
    (
        "prep time negative",
        _edit("contrasts/prep_time", _set_item(2, -0.01)),
        r"/contrasts/prep_time: expected times >= 0 s, found min -0\.01",
    ),
    (
        "echo time >= repetition time",
        _edit("contrasts/echo_time", _set_item(2, 0.02)),
        r"/contrasts/echo_time: expected echo_time < repetition_time, found 0\.02 s >= 0\.02 s "
        r"at contrast 2",
    ),
    (
        "segment zero",
        _edit("contrasts/segment", _set_item(0, 0)),
        r"/contrasts/segment: expected readout numbers >= 1, found min 0",
    ),
    (
        "t2ir without prep_time",
        _delete("contrasts/prep_time"),
        r"/contrasts/prep_time: expected a dataset \(required for signal_model 't2ir_gre'\), "
        r"found none",
    ),
    (
        "t2ir without segment",
        _delete("contrasts/segment"),
        r"/contrasts/segment: expected a dataset \(required for signal_model 't2ir_gre'\)",
    ),
    # non-finite values
    (
        "kspace NaN",
        _edit("kspace/data", _set_item((1, 2, 3), np.nan)),
        r"/kspace/data: expected finite values, found 1 NaN/Inf \(first at index \(1, 2, 3\)\)",
    ),
    (
        "kspace Inf",
        _edit("kspace/data", _set_item((4, 0, 0), np.inf)),
        r"/kspace/data: expected finite values, found 1 NaN/Inf \(first at index \(4, 0, 0\)\)",
    ),
    (
        "echo time NaN",
        _edit("contrasts/echo_time", _set_item(1, np.nan)),
        r"/contrasts/echo_time: expected finite values",
    ),
    ("coils NaN", _edit("coils", _set_item((0, 1, 2, 3), np.nan)), r"/coils: expected finite"),
    # geometry
    (
        "matrix length",
        _edit_attr("geometry", "matrix", lambda v: v[:2]),
        r"/geometry@matrix: expected shape \[3\] \(nx, ny, nz\), found \[2\]",
    ),
    (
        "matrix float",
        _edit_attr("geometry", "matrix", lambda v: v.astype(np.float64)),
        r"/geometry@matrix: expected integer dtype, found float64",
    ),
    (
        "matrix zero",
        _edit_attr("geometry", "matrix", lambda v: np.array([NX, 0, NZ])),
        r"/geometry@matrix: expected positive sizes, found \[8, 0, 4\]",
    ),
    (
        "voxel size zero",
        _edit_attr("geometry", "voxel_size", lambda v: np.array([1.0, 0.0, 2.5])),
        r"/geometry@voxel_size: expected positive sizes \[mm\]",
    ),
    (
        "voxel size vs affine",
        _edit_attr("geometry", "voxel_size", lambda v: np.array([1.0, 1.0, 2.0])),
        r"/geometry@affine: expected column lengths equal to voxel_size \[1\., 1\., 2\.\] mm",
    ),
    (
        "affine 3x3",
        _edit_attr("geometry", "affine", lambda v: v[:3, :3]),
        r"/geometry@affine: expected shape \[4, 4\] \(voxel to RAS mm\), found \[3, 3\]",
    ),
    (
        "affine singular",
        _edit_attr("geometry", "affine", lambda v: _SINGULAR),
        r"/geometry@affine: expected an invertible matrix, found singular",
    ),
    (
        "affine zero column",
        _edit_attr("geometry", "affine", lambda v: v * np.array([1.0, 0.0, 1.0, 1.0])),
        r"/geometry@affine: expected an invertible matrix, found singular",
    ),
    (
        "affine last row",
        _edit_attr("geometry", "affine", lambda v: np.vstack([v[:3], [0.5, 0.0, 0.0, 1.0]])),
        r"/geometry@affine: expected last row \[0, 0, 0, 1\], found",
    ),
    (
        "affine NaN",
        _edit_attr("geometry", "affine", lambda v: v * np.nan),
        r"/geometry@affine: expected finite values",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "pattern"), [c[1:] for c in FILE_CASES], ids=[c[0] for c in FILE_CASES]
)
def test_read_rejects_corrupt_file(problem_file: Path, mutate: Mutation, pattern: str) -> None:
    with h5py.File(problem_file, "r+") as f:
        mutate(f)
    with _raises(problem_file, pattern) as info:
        read_problem(problem_file)
    assert "\n" not in str(info.value)
    assert info.value.source == str(problem_file)


def test_vfa_megre_needs_no_t2ir_columns(tmp_path: Path) -> None:
    path = tmp_path / "p.h5"
    write_problem(path, make_problem("t2ir_gre"))
    with h5py.File(path, "r+") as f:
        f.attrs["signal_model"] = "vfa_megre"
        del f["contrasts/prep_time"], f["contrasts/segment"]
    assert read_problem(path).contrasts.prep_time is None


@pytest.mark.parametrize("kind", ["missing", "directory", "text"])
def test_read_rejects_non_hdf5(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "p.h5"
    pattern = {
        "missing": r"/: expected an HDF5 problem file, found no such file",
        "directory": r"/: expected an HDF5 problem file, found a directory",
        "text": r"/: expected an HDF5 file, found one HDF5 cannot open",
    }[kind]
    if kind == "directory":
        path.mkdir()
    elif kind == "text":
        path.write_text("format = lorein-problem\n")
    with _raises(path, pattern):
        read_problem(path)
