"""ISMRMRD export/import: round trips, header and counter mapping, oversampling, noise
pre-whitening, geometry (LPS <-> RAS) and the error messages; every file is a real ISMRMRD
dataset written or read by the ``ismrmrd`` library."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path

import h5py
import ismrmrd
import nibabel
import numpy as np
import pytest
import torch
from ismrmrd import xsd

from lorein.data.ismrmrd_io import (
    export_ismrmrd,
    import_ismrmrd,
    noise_whitening_matrix,
    read_ismrmrd,
)
from lorein.data.problem import Problem, ProblemFileError, Truth, write_problem
from lorein.physics.contrasts import ContrastTable
from lorein.physics.fft import centered_fft
from tests.helpers import randn_complex, rng

NX, NY, NZ, N_COILS, N_LINES = 16, 12, 4, 3, 40
VOXEL = (1.5, 2.0, 3.0)


def rotation(ax: float, ay: float, az: float) -> np.ndarray:
    """Rotation matrix from angles [rad] about x, y, z."""
    (cx, cy, cz), (sx, sy, sz) = np.cos([ax, ay, az]), np.sin([ax, ay, az])
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def oblique_affine() -> np.ndarray:
    """RAS affine of an oblique grid (rotated 11-29 deg) with voxel n // 2 at (5, -7, 12) mm."""
    affine = np.eye(4)
    affine[:3, :3] = rotation(0.2, -0.35, 0.5) * np.asarray(VOXEL)
    affine[:3, 3] = np.array([5.0, -7.0, 12.0]) - affine[:3, :3] @ [NX // 2, NY // 2, NZ // 2]
    return affine


def table(signal_model: str) -> ContrastTable:
    """Four contrasts in SI units."""
    columns = {
        "flip_angle": torch.tensor([0.05, 0.1, 0.35, 0.7]),
        "echo_time": torch.tensor([0.00215, 0.0052, 0.00825, 0.0113]),
        "repetition_time": torch.full((4,), 0.046),
    }
    if signal_model == "t2ir_gre":
        columns["prep_time"] = torch.tensor([0.0, 0.025, 0.05, 0.09])
        columns["segment"] = torch.tensor([1, 2, 80, 3])
    return ContrastTable(**columns)


def make_problem(signal_model: str = "vfa_megre", **changes: object) -> Problem:
    """Random lines of contrasts 0-2; contrast 3 has no lines (an empty contrast)."""
    g = rng(0)
    fields = dict(
        signal_model=signal_model,
        kspace=randn_complex(N_LINES, N_COILS, NX, seed=1),
        ky=torch.randint(0, NY, (N_LINES,), generator=g),
        kz=torch.randint(0, NZ, (N_LINES,), generator=g),
        contrast=torch.arange(N_LINES) % 3,
        contrasts=table(signal_model),
        matrix=(NX, NY, NZ),
        voxel_size=VOXEL,
        affine=oblique_affine(),
    )
    fields.update(changes)
    return Problem(**fields)  # type: ignore[arg-type]


def edit_header(path: Path, edit: Callable[[xsd.ismrmrdHeader], None]) -> None:
    """Parse the file's XML header, change it in place and write it back (library calls)."""
    with ismrmrd.Dataset(str(path), create_if_needed=False) as dset:
        header = xsd.CreateFromDocument(dset.read_xml_header())
        edit(header)
        dset.write_xml_header(xsd.ToXML(header).encode("utf-8"))


def drop_user_parameters(*names: str) -> Callable[[xsd.ismrmrdHeader], None]:
    def edit(header: xsd.ismrmrdHeader) -> None:
        p = header.userParameters
        p.userParameterDouble = [u for u in p.userParameterDouble if u.name not in names]
        p.userParameterLong = [u for u in p.userParameterLong if u.name not in names]
        p.userParameterString = [u for u in p.userParameterString if u.name not in names]

    return edit


def acquisition(
    data: np.ndarray,
    ky: int = 0,
    kz: int = 0,
    flags: tuple[int, ...] = (),
    dwell_us: float = 0.0,
    position: tuple[float, float, float] = (0.0, 0.0, 0.0),
    directions: np.ndarray | None = None,
    head: dict[str, int] | None = None,
    **counters: int,
) -> ismrmrd.Acquisition:
    """A library Acquisition of ``data`` ``[coils, samples]`` with the given counters, flags
    and further header fields ``head`` (``center_sample`` defaults to ``samples // 2``)."""
    dirs = np.eye(3) if directions is None else directions
    acq = ismrmrd.Acquisition.from_array(
        data.astype(np.complex64),
        center_sample=data.shape[1] // 2,
        sample_time_us=dwell_us,
        position=position,
        read_dir=tuple(dirs[0]),
        phase_dir=tuple(dirs[1]),
        slice_dir=tuple(dirs[2]),
    )
    acq.idx.kspace_encode_step_1 = ky
    acq.idx.kspace_encode_step_2 = kz
    for name, value in counters.items():
        setattr(acq.idx, name, value)
    for flag in flags:
        acq.set_flag(flag)
    for name, value in (head or {}).items():
        setattr(acq, name, value)
    return acq


def append(path: Path, *acquisitions: ismrmrd.Acquisition) -> None:
    with ismrmrd.Dataset(str(path), create_if_needed=False) as dset:
        for acq in acquisitions:
            dset.append_acquisition(acq)


def raw_header(
    matrix: tuple[int, int, int], fov: tuple[float, float, float], **sequence: list[float]
) -> xsd.ismrmrdHeader:
    """A minimal scanner-like header: Cartesian, centred limits, no lorein user parameters."""

    def space() -> xsd.encodingSpaceType:
        return xsd.encodingSpaceType(
            matrixSize=xsd.matrixSizeType(x=matrix[0], y=matrix[1], z=matrix[2]),
            fieldOfView_mm=xsd.fieldOfViewMm(x=fov[0], y=fov[1], z=fov[2]),
        )

    ny, nz = matrix[1], matrix[2]
    limits = xsd.encodingLimitsType(
        kspace_encoding_step_1=xsd.limitType(minimum=0, maximum=ny - 1, center=ny // 2),
        kspace_encoding_step_2=xsd.limitType(minimum=0, maximum=nz - 1, center=nz // 2),
    )
    return xsd.ismrmrdHeader(
        experimentalConditions=xsd.experimentalConditionsType(H1resonanceFrequency_Hz=123_200_000),
        encoding=[
            xsd.encodingType(
                encodedSpace=space(),
                reconSpace=space(),
                encodingLimits=limits,
                trajectory=xsd.trajectoryType.CARTESIAN,
            )
        ],
        sequenceParameters=xsd.sequenceParametersType(**sequence),
    )


def write_raw(path: Path, header: xsd.ismrmrdHeader, *acquisitions: ismrmrd.Acquisition) -> None:
    """An ISMRMRD file written by the library alone."""
    with ismrmrd.Dataset(str(path), create_if_needed=True) as dset:
        dset.write_xml_header(xsd.ToXML(header).encode("utf-8"))
        for acq in acquisitions:
            dset.append_acquisition(acq)


# --------------------------------------------------------------------------------------------
# round trips and what the file holds
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("signal_model", ["vfa_megre", "t2ir_gre"])
def test_round_trip(tmp_path: Path, signal_model: str) -> None:
    problem = make_problem(signal_model)
    path = tmp_path / "raw.h5"
    export_ismrmrd(problem, path)
    back = import_ismrmrd(path)

    assert back.signal_model == signal_model
    assert back.source == str(path)
    for name in ("kspace", "ky", "kz", "contrast"):
        assert torch.equal(getattr(back, name), getattr(problem, name)), name
    assert back.kspace.dtype == torch.complex64
    original = problem.contrasts.columns()
    assert set(back.contrasts.columns()) == set(original)
    for name, column in original.items():
        assert torch.equal(back.contrasts.columns()[name], column), name
    assert back.n_contrasts == 4 and back.lines_per_contrast()[3] == 0  # empty contrast kept
    assert back.matrix == problem.matrix
    np.testing.assert_allclose(back.voxel_size, VOXEL, rtol=1e-12)
    np.testing.assert_allclose(back.affine, problem.affine, rtol=0, atol=1e-5)


def test_export_fields_read_by_the_library(tmp_path: Path) -> None:
    problem = make_problem("t2ir_gre")
    path = tmp_path / "raw.h5"
    export_ismrmrd(problem, path)
    with ismrmrd.Dataset(str(path), create_if_needed=False) as dset:
        header = xsd.CreateFromDocument(dset.read_xml_header())
        assert dset.number_of_acquisitions() == N_LINES
        acqs = [dset.read_acquisition(i) for i in (0, 7, N_LINES - 1)]

    enc = header.encoding[0]
    assert (enc.encodedSpace.matrixSize.x, enc.encodedSpace.matrixSize.y) == (NX, NY)
    assert enc.encodedSpace.matrixSize.z == NZ
    fov = enc.encodedSpace.fieldOfView_mm
    np.testing.assert_allclose([fov.x, fov.y, fov.z], [NX * 1.5, NY * 2.0, NZ * 3.0])
    assert enc.encodingLimits.kspace_encoding_step_1.center == NY // 2
    assert enc.encodingLimits.contrast.maximum == 3
    assert header.acquisitionSystemInformation.receiverChannels == N_COILS
    seq = header.sequenceParameters
    np.testing.assert_allclose(seq.TE, [2.15, 5.2, 8.25, 11.3], rtol=1e-6)  # ms
    np.testing.assert_allclose(seq.flipAngle_deg, np.degrees([0.05, 0.1, 0.35, 0.7]), rtol=1e-6)
    assert seq.TR == [46.0]  # constant: one value
    longs = [p.value for p in header.userParameters.userParameterLong if p.name == "lorein.segment"]
    assert longs == [1, 2, 80, 3]

    centre_ras = problem.affine @ [NX // 2, NY // 2, NZ // 2, 1]
    unit = problem.affine[:3, :3] / np.asarray(VOXEL)
    lps = np.diag([-1.0, -1.0, 1.0])
    for i, acq in zip((0, 7, N_LINES - 1), acqs, strict=True):
        assert acq.idx.kspace_encode_step_1 == problem.ky[i]
        assert acq.idx.kspace_encode_step_2 == problem.kz[i]
        assert acq.idx.contrast == problem.contrast[i]
        assert acq.center_sample == NX // 2
        np.testing.assert_array_equal(acq.data, problem.kspace[i].numpy())
        np.testing.assert_allclose(acq.position, lps @ centre_ras[:3], atol=1e-5)
        np.testing.assert_allclose(acq.read_dir, lps @ unit[:, 0], atol=1e-6)
        np.testing.assert_allclose(acq.slice_dir, lps @ unit[:, 2], atol=1e-6)
    assert acqs[-1].is_flag_set(ismrmrd.ACQ_LAST_IN_MEASUREMENT)
    assert not acqs[0].is_flag_set(ismrmrd.ACQ_LAST_IN_MEASUREMENT)


def test_truth_written_as_images(tmp_path: Path) -> None:
    g = rng(3)
    truth = Truth(
        T1=torch.rand(NZ, NY, NX, generator=g),
        mask=(torch.rand(NZ, NY, NX, generator=g) > 0.5).to(torch.uint8),
        coils=randn_complex(N_COILS, NZ, NY, NX, seed=4),
        extra={"labels": torch.randint(0, 9, (NZ, NY, NX), generator=g, dtype=torch.int16)},
    )
    path = tmp_path / "raw.h5"
    export_ismrmrd(make_problem(), path, truth)
    with ismrmrd.Dataset(str(path), create_if_needed=False) as dset:
        t1, coils, labels = (dset.read_image(f"truth_{n}", 0) for n in ("T1", "coils", "labels"))
        mask = dset.read_image("truth_mask", 0)
        first = dset.read_acquisition(0)
    np.testing.assert_array_equal(t1.data[0], truth.T1.numpy())
    assert t1.meta["lorein.unit"] == "s" and t1.meta["lorein.map"] == "T1"
    np.testing.assert_array_equal(coils.data, truth.coils.numpy())
    assert coils.image_type == ismrmrd.IMTYPE_COMPLEX
    np.testing.assert_array_equal(mask.data[0], truth.mask.numpy())
    np.testing.assert_array_equal(labels.data[0], truth.extra["labels"].numpy())
    np.testing.assert_allclose(t1.position, first.position)
    np.testing.assert_allclose(t1.field_of_view, [NX * 1.5, NY * 2.0, NZ * 3.0], rtol=1e-6)


def test_truth_purity_written_as_an_image(tmp_path: Path) -> None:
    purity = torch.rand(NZ, NY, NX, generator=rng(5))
    path = tmp_path / "raw.h5"
    export_ismrmrd(make_problem(), path, Truth(mask=purity > 0.5, purity=purity))
    with ismrmrd.Dataset(str(path), create_if_needed=False) as dset:
        image = dset.read_image("truth_purity", 0)
    np.testing.assert_array_equal(image.data[0], purity.numpy())
    assert image.meta["lorein.unit"] == "1" and image.meta["lorein.map"] == "purity"


def test_parameters_from_header_sequence_parameters(tmp_path: Path) -> None:
    problem = make_problem("vfa_megre")
    path = tmp_path / "raw.h5"
    export_ismrmrd(problem, path)
    edit_header(
        path,
        drop_user_parameters(
            "lorein.signal_model",
            "lorein.flip_angle_rad",
            "lorein.echo_time_s",
            "lorein.repetition_time_s",
        ),
    )
    back = import_ismrmrd(path, signal_model="vfa_megre")
    for name, column in problem.contrasts.columns().items():
        torch.testing.assert_close(back.contrasts.columns()[name], column, rtol=1e-6, atol=0)


# --------------------------------------------------------------------------------------------
# sequence parameters: missing, sidecar
# --------------------------------------------------------------------------------------------


def test_missing_echo_time_names_field_and_sidecar_key(tmp_path: Path) -> None:
    problem = make_problem("vfa_megre")
    path = tmp_path / "raw.h5"
    export_ismrmrd(problem, path)

    def drop_te(header: xsd.ismrmrdHeader) -> None:
        drop_user_parameters("lorein.echo_time_s")(header)
        header.sequenceParameters.TE = []

    edit_header(path, drop_te)
    with pytest.raises(ProblemFileError) as err:
        import_ismrmrd(path)
    message = str(err.value)
    assert message.startswith(f"{path}: /dataset/xml sequenceParameters/TE: ")
    assert "expected echo_time of 4 contrasts, found none" in message
    assert "give echo_time_ms in the TOML sidecar" in message and "echo_time_ms = [" in message
    assert "\n" not in message

    te_ms = [3.0, 6.0, 9.0, 12.0]
    back = import_ismrmrd(path, sidecar={"echo_time_ms": te_ms})
    torch.testing.assert_close(back.contrasts.echo_time, torch.tensor(te_ms) * 1e-3)
    assert torch.equal(back.contrasts.flip_angle, problem.contrasts.flip_angle)
    # a scalar is broadcast to every contrast
    back = import_ismrmrd(path, sidecar={"echo_time_ms": 4.0})
    torch.testing.assert_close(back.contrasts.echo_time, torch.full((4,), 4e-3))


def test_sidecar_overrides_file_values(tmp_path: Path) -> None:
    path = tmp_path / "raw.h5"
    export_ismrmrd(make_problem("t2ir_gre"), path)
    back = import_ismrmrd(path, sidecar={"prep_time_ms": [0, 10, 20, 30], "segment": 5})
    torch.testing.assert_close(back.contrasts.prep_time, torch.tensor([0.0, 0.01, 0.02, 0.03]))
    assert back.contrasts.segment.tolist() == [5, 5, 5, 5]
    assert back.contrasts.segment.dtype == torch.int64


@pytest.mark.parametrize(
    ("sidecar", "expected"),
    [
        ({"echo_time": [1.0]}, r"sidecar: expected keys among .*found unknown echo_time"),
        (
            {"echo_time_ms": [1.0, 2.0]},
            r"sidecar\[echo_time_ms\]: expected one value, one per contrast row \(4\) or one per "
            r"value of a counter \(repetition 1, set 1, segment 1, contrast 4\), found 2$",
        ),
        ({"counters": {"echo_time": "set"}}, r"sidecar\[counters\]\[echo_time\]: expected a key"),
        ({"counters": {"echo_time_ms": "eco"}}, r"\[echo_time_ms\]: expected one of repetition, "),
        ({"counters": "set"}, r"sidecar\[counters\]: expected a table"),
        (
            {"echo_time_ms": [1.0, 2.0], "counters": {"echo_time_ms": "contrast"}},
            r"expected one value or one per contrast \(4\), as sidecar\[counters\]\[echo_time_ms",
        ),
        ({"flip_angle_deg": "ten"}, r"sidecar\[flip_angle_deg\]: expected a number or a list"),
        ({"signal_model": "mese"}, r"sidecar\[signal_model\]: expected one of"),
    ],
)
def test_bad_sidecar(tmp_path: Path, sidecar: dict[str, object], expected: str) -> None:
    path = tmp_path / "raw.h5"
    export_ismrmrd(make_problem(), path)
    with pytest.raises(ProblemFileError, match=expected):
        import_ismrmrd(path, sidecar=sidecar)


def set_trajectory(header: xsd.ismrmrdHeader) -> None:
    header.encoding[0].trajectory = xsd.trajectoryType.RADIAL


def zero_fov(header: xsd.ismrmrdHeader) -> None:
    header.encoding[0].encodedSpace.fieldOfView_mm.y = 0.0


def drop_one_echo_time(header: xsd.ismrmrdHeader) -> None:
    doubles = header.userParameters.userParameterDouble
    doubles.remove(next(p for p in doubles if p.name == "lorein.echo_time_s"))


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (set_trajectory, r"/dataset/xml encoding/trajectory: expected cartesian, found radial"),
        (zero_fov, r"encodedSpace: expected positive matrix and field of view"),
        (
            drop_one_echo_time,
            r"userParameters/lorein\.echo_time_s: expected one value per contrast \(4\), found 3",
        ),
    ],
)
def test_bad_header(
    tmp_path: Path, edit: Callable[[xsd.ismrmrdHeader], None], expected: str
) -> None:
    path = tmp_path / "raw.h5"
    export_ismrmrd(make_problem(), path)
    edit_header(path, edit)
    with pytest.raises(ProblemFileError, match=expected):
        import_ismrmrd(path)


def test_missing_signal_model(tmp_path: Path) -> None:
    path = tmp_path / "raw.h5"
    export_ismrmrd(make_problem("t2ir_gre"), path)
    edit_header(path, drop_user_parameters("lorein.signal_model"))
    with pytest.raises(
        ProblemFileError, match=r"userParameters/lorein\.signal_model: .*--signal-model"
    ):
        import_ismrmrd(path)
    assert import_ismrmrd(path, sidecar={"signal_model": "t2ir_gre"}).signal_model == "t2ir_gre"
    # a t2ir_gre problem without T2-preparation times anywhere
    edit_header(path, drop_user_parameters("lorein.prep_time_s"))
    with pytest.raises(
        ProblemFileError, match=r"userParameters/lorein\.prep_time_s: .*prep_time_ms"
    ):
        import_ismrmrd(path, signal_model="t2ir_gre")


# --------------------------------------------------------------------------------------------
# scanner-like files: counters, calibration, skipped and unsupported lines
# --------------------------------------------------------------------------------------------


def test_counter_combinations_map_to_rows(tmp_path: Path) -> None:
    """set x contrast -> row = set * n_contrast + contrast; TE indexed by the contrast counter."""
    nx, ny, nz = 8, 4, 2
    data = randn_complex(7, 2, nx, seed=5).numpy()
    lines = [  # (ky, kz, set, contrast, average)
        (0, 0, 0, 0, 0),
        (1, 1, 0, 1, 0),
        (2, 0, 0, 2, 0),
        (3, 1, 1, 0, 0),
        (2, 1, 1, 2, 0),
        (2, 1, 1, 2, 1),  # repeated average: a second row of the same contrast
        (1, 0, 1, 1, 0),
    ]
    acqs = [
        acquisition(data[i], ky, kz, set=s, contrast=c, average=a)
        for i, (ky, kz, s, c, a) in enumerate(lines)
    ]
    header = raw_header((nx, ny, nz), (80.0, 40.0, 10.0), TE=[2.0, 4.0, 6.0], TR=[20.0])
    write_raw(tmp_path / "raw.h5", header, *acqs)

    flips = [5.0, 5.0, 5.0, 15.0, 15.0, 15.0]  # per row: set 0, then set 1
    back = import_ismrmrd(
        tmp_path / "raw.h5", signal_model="vfa_megre", sidecar={"flip_angle_deg": flips}
    )
    assert back.contrast.tolist() == [0, 1, 2, 3, 5, 5, 4]
    assert back.ky.tolist() == [ky for ky, *_ in lines]
    assert back.kz.tolist() == [kz for _, kz, *_ in lines]
    np.testing.assert_array_equal(back.kspace.numpy(), data)
    torch.testing.assert_close(back.contrasts.echo_time, torch.tensor([2.0, 4, 6, 2, 4, 6]) * 1e-3)
    torch.testing.assert_close(back.contrasts.flip_angle, torch.tensor(flips) * math.pi / 180)
    torch.testing.assert_close(back.contrasts.repetition_time, torch.full((6,), 0.02))
    assert back.voxel_size == (10.0, 10.0, 5.0)

    edit_header(tmp_path / "raw.h5", lambda h: setattr(h.sequenceParameters, "TE", [2.0, 4, 6, 8]))
    with pytest.raises(
        ProblemFileError,
        match=r"sequenceParameters/TE: expected one value, one per contrast row \(6\) or one per "
        r"value of a counter \(repetition 1, set 2, segment 1, contrast 3\), found 4$",
    ):
        import_ismrmrd(tmp_path / "raw.h5", signal_model="vfa_megre", sidecar={"flip_angle_deg": 5})


def test_encoding_limits_centre_and_discarded_samples(tmp_path: Path) -> None:
    """Steps are centred at encodingLimits center (here 2 of 6 -> ky = step + 1);
    discard_pre / discard_post samples are dropped."""
    nx, ny = 8, 6
    data = randn_complex(2, 2, nx + 4, seed=6).numpy()
    acqs = [
        acquisition(data[0, :, :nx], 0),
        acquisition(
            data[1], 4, head={"discard_pre": 3, "discard_post": 1, "center_sample": 3 + nx // 2}
        ),
    ]
    header = raw_header((nx, ny, 1), (8.0, 6.0, 2.0), TE=[3.0], TR=[20.0], flipAngle_deg=[9])
    header.encoding[0].encodingLimits.kspace_encoding_step_1.center = 2
    write_raw(tmp_path / "raw.h5", header, *acqs)
    back = import_ismrmrd(tmp_path / "raw.h5", signal_model="vfa_megre")
    assert back.ky.tolist() == [1, 5]
    np.testing.assert_array_equal(back.kspace[0].numpy(), data[0, :, :nx])
    np.testing.assert_array_equal(back.kspace[1].numpy(), data[1, :, 3 : 3 + nx])


def test_calibration_flags_and_extra_lines(tmp_path: Path) -> None:
    problem = make_problem()
    path = tmp_path / "raw.h5"
    export_ismrmrd(problem, path, calibration=(4, 2))
    with ismrmrd.Dataset(str(path), create_if_needed=False) as dset:
        flagged = [
            dset.read_acquisition(i).is_flag_set(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING)
            for i in range(N_LINES)
        ]
    ky, kz = problem.ky.numpy(), problem.kz.numpy()
    inside = (ky >= NY // 2 - 2) & (ky < NY // 2 + 2) & (kz >= NZ // 2 - 1) & (kz < NZ // 2 + 1)
    assert 0 < inside.sum() < N_LINES
    assert flagged == inside.tolist()

    duplicate = acquisition(
        problem.kspace[5].numpy(),
        int(ky[5]),
        int(kz[5]),
        flags=(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION,),
        contrast=int(problem.contrast[5]),
    )
    navigator = acquisition(np.ones((N_COILS, NX)), flags=(ismrmrd.ACQ_IS_NAVIGATION_DATA,))
    append(path, navigator, duplicate)
    back = import_ismrmrd(path)
    assert back.n_lines == N_LINES + 1  # navigator skipped, calibration-only line kept
    torch.testing.assert_close(back.kspace[:N_LINES], problem.kspace, rtol=0, atol=0)
    torch.testing.assert_close(back.kspace[N_LINES], problem.kspace[5], rtol=0, atol=0)
    assert (back.ky[N_LINES], back.kz[N_LINES]) == (problem.ky[5], problem.kz[5])
    assert back.contrast[N_LINES] == problem.contrast[5]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"flags": (ismrmrd.ACQ_IS_REVERSE,)}, r"/dataset/data\[40\]: expected forward readouts"),
        ({"samples": NX - 4}, r"/dataset/data\[40\]: expected 16 readout samples .*partial-echo"),
        ({"slice": 1}, r"/dataset/data idx\.slice: expected one slice .*found values \[0, 1\]"),
        ({"ky": NY + 3}, r"idx\.kspace_encode_step_1: expected steps in \[0, 12\)"),
        ({"head": {"center_sample": 3}}, r"\[40\]: expected the readout centre at sample 8"),
        ({"head": {"encoding_space_ref": 1}}, r"\[40\]: expected lines of encoding 0"),
        (
            {"coils": 2, "flags": (ismrmrd.ACQ_IS_NOISE_MEASUREMENT,)},
            r"/dataset/data\[40\]: expected noise scans with the 3 channels .*found 2",
        ),
    ],
)
def test_unsupported_lines(tmp_path: Path, change: dict[str, object], expected: str) -> None:
    path = tmp_path / "raw.h5"
    export_ismrmrd(make_problem(), path)
    change = dict(change)
    shape = (change.pop("coils", N_COILS), change.pop("samples", NX))
    append(path, acquisition(np.ones(shape), **change))  # type: ignore[arg-type]
    with pytest.raises(ProblemFileError, match=expected):
        import_ismrmrd(path)


# --------------------------------------------------------------------------------------------
# readout oversampling
# --------------------------------------------------------------------------------------------


def test_readout_oversampling(tmp_path: Path) -> None:
    """Lines of a known image, and of the same image zero-padded to 2 nx along x."""
    image = randn_complex(N_COILS, NZ, NY, NX, seed=7)
    padded = torch.zeros(N_COILS, NZ, NY, 2 * NX, dtype=torch.complex64)
    start = NX - NX // 2  # voxel NX // 2 of the image sits at voxel NX of the padded one
    padded[..., start : start + NX] = image
    base = make_problem()
    ky, kz = base.ky, base.kz

    def lines(x: torch.Tensor) -> torch.Tensor:
        return centered_fft(x)[:, kz, ky, :].permute(1, 0, 2).contiguous()

    affine_os = base.affine.copy()
    affine_os[:3, 3] -= base.affine[:3, 0] * (NX - NX // 2)
    oversampled = make_problem(kspace=lines(padded), matrix=(2 * NX, NY, NZ), affine=affine_os)
    path = tmp_path / "raw.h5"
    export_ismrmrd(oversampled, path, recon_nx=NX)

    back = import_ismrmrd(path)
    assert back.matrix == (NX, NY, NZ)
    scale = float(lines(image).abs().max())
    torch.testing.assert_close(back.kspace, lines(image), rtol=0, atol=1e-5 * scale)
    np.testing.assert_allclose(back.affine, base.affine, atol=1e-5)
    assert back.voxel_size == pytest.approx(VOXEL)

    kept = import_ismrmrd(path, remove_oversampling=False)
    assert kept.matrix == (2 * NX, NY, NZ)
    assert torch.equal(kept.kspace, oversampled.kspace)
    np.testing.assert_allclose(kept.affine, affine_os, atol=1e-5)


# --------------------------------------------------------------------------------------------
# noise pre-whitening
# --------------------------------------------------------------------------------------------

PSI_TOL = 0.2
"""Max |entry| deviation from identity of a sample covariance of 640 whitened samples per coil
(entry standard error about 0.04, plus the noise-scan estimate's about 0.02)."""


def correlated_noise(psi: np.ndarray, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Complex Gaussian ``[..., coils, n]`` noise with coil covariance ``psi``."""
    g = np.random.default_rng(seed)
    z = (g.standard_normal(shape) + 1j * g.standard_normal(shape)) / math.sqrt(2)
    return np.linalg.cholesky(psi) @ z


def coil_covariance(x: torch.Tensor) -> np.ndarray:
    """Sample coil covariance of ``[n_lines, coils, nx]`` zero-mean data."""
    flat = x.permute(1, 0, 2).reshape(x.shape[1], -1).numpy().astype(np.complex128)
    return flat @ flat.conj().T / flat.shape[1]


@pytest.fixture
def psi() -> np.ndarray:
    """A correlated 3-coil noise covariance with unequal coil variances."""
    g = np.random.default_rng(11)
    a = g.standard_normal((N_COILS, N_COILS)) + 1j * g.standard_normal((N_COILS, N_COILS))
    return a @ a.conj().T / 2 + np.diag([0.5, 1.0, 2.0])


def noisy_pair(
    tmp_path: Path, psi: np.ndarray, noise_scans: np.ndarray, dwell: tuple[float, float]
) -> tuple[Problem, Path, Path]:
    """Export the same problem clean and with imaging noise of covariance ``psi``; both files
    get the noise scans ``[n_scans, coils, n]``; ``dwell`` = (imaging, noise) sample times."""
    clean = make_problem()
    noise = correlated_noise(psi, (N_LINES, N_COILS, NX), seed=13)
    noisy = make_problem(kspace=clean.kspace + torch.from_numpy(noise.astype(np.complex64)))
    paths = []
    for name, problem in (("clean", clean), ("noisy", noisy)):
        path = tmp_path / f"{name}.h5"
        export_ismrmrd(problem, path)
        with h5py.File(path, "r+") as f:  # set the imaging dwell time in all headers at once
            records = f["dataset/data"][()]
            records["head"]["sample_time_us"] = dwell[0]
            f["dataset/data"][...] = records
        scans = [
            acquisition(s, flags=(ismrmrd.ACQ_IS_NOISE_MEASUREMENT,), dwell_us=dwell[1])
            for s in noise_scans
        ]
        append(path, *scans)
        paths.append(path)
    return clean, paths[0], paths[1]


def test_noise_whitening_matrix(psi: np.ndarray) -> None:
    noise = correlated_noise(psi, (N_COILS, 4096), seed=12)
    w = noise_whitening_matrix(noise)
    sample_psi = noise @ noise.conj().T / noise.shape[1]
    np.testing.assert_allclose(w @ sample_psi @ w.conj().T, np.eye(N_COILS), atol=1e-10)
    np.testing.assert_array_equal(np.triu(w, 1), 0)  # inverse Cholesky factor: lower triangular
    assert np.abs(w @ psi @ w.conj().T - np.eye(N_COILS)).max() < 0.1
    with pytest.raises(ValueError, match="not positive definite"):
        noise_whitening_matrix(noise[:, :2])  # fewer samples than coils
    copied = noise.copy()
    copied[1] = copied[0] * (1 + 1e-14)  # two channels record the same noise: rank n_coils - 1
    with pytest.raises(ValueError, match="eigenvalue ratio"):
        noise_whitening_matrix(copied)


def test_noise_prewhitening(tmp_path: Path, psi: np.ndarray) -> None:
    scans = correlated_noise(psi, (4, N_COILS, 1024), seed=12)
    clean, clean_path, noisy_path = noisy_pair(tmp_path, psi, scans, dwell=(5.0, 5.0))
    w = noise_whitening_matrix(np.concatenate(list(scans), axis=1))

    clean_back, noisy_back = import_ismrmrd(clean_path), import_ismrmrd(noisy_path)
    # image data transformed by the same matrix: y -> W y per readout sample
    expected = np.einsum("ij,ljx->lix", w, clean.kspace.numpy().astype(np.complex128))
    np.testing.assert_allclose(clean_back.kspace.numpy(), expected, rtol=0, atol=1e-5)
    # whitened imaging noise: identity covariance
    whitened = coil_covariance(noisy_back.kspace - clean_back.kspace)
    assert np.abs(whitened - np.eye(N_COILS)).max() < PSI_TOL
    # without whitening the same noise keeps its correlations
    raw = import_ismrmrd(noisy_path, noise_prewhitening=False).kspace
    assert torch.equal(import_ismrmrd(clean_path, noise_prewhitening=False).kspace, clean.kspace)
    assert np.abs(coil_covariance(raw - clean.kspace) - np.eye(N_COILS)).max() > 1.0


def test_noise_scaled_by_dwell_time(tmp_path: Path, psi: np.ndarray) -> None:
    """Noise scans at twice the imaging dwell time have half the noise variance."""
    scans = correlated_noise(psi / 2, (4, N_COILS, 1024), seed=12)
    _, clean_path, noisy_path = noisy_pair(tmp_path, psi, scans, dwell=(4.0, 8.0))
    whitened = import_ismrmrd(noisy_path).kspace - import_ismrmrd(clean_path).kspace
    assert np.abs(coil_covariance(whitened) - np.eye(N_COILS)).max() < PSI_TOL


def test_singular_noise_covariance(tmp_path: Path) -> None:
    path = tmp_path / "raw.h5"
    export_ismrmrd(make_problem(), path)
    dead = np.ones((N_COILS, 32))
    dead[2] = 0  # a dead channel
    append(path, acquisition(dead, flags=(ismrmrd.ACQ_IS_NOISE_MEASUREMENT,)))
    with pytest.raises(ProblemFileError, match=r"noise acquisitions.*noise_prewhitening=False"):
        import_ismrmrd(path)
    assert import_ismrmrd(path, noise_prewhitening=False).n_lines == N_LINES


# --------------------------------------------------------------------------------------------
# geometry
# --------------------------------------------------------------------------------------------

C20, S20 = math.cos(math.radians(20)), math.sin(math.radians(20))


@pytest.mark.parametrize(
    ("directions", "codes"),
    [
        (np.eye(3), ("L", "P", "S")),  # LPS axes: x to patient left, y posterior, z head
        (np.array([[0, C20, -S20], [0, S20, C20], [1, 0, 0]]), ("P", "S", "L")),  # oblique sag.
    ],
)
def test_geometry_lps_to_ras(
    tmp_path: Path, directions: np.ndarray, codes: tuple[str, str, str]
) -> None:
    nx, ny, nz = 8, 6, 4
    position = (10.0, -20.0, 30.0)  # LPS [mm]
    acqs = [
        acquisition(np.ones((2, nx)), ky, kz, position=position, directions=directions)
        for ky in range(ny)
        for kz in range(nz)
    ]
    header = raw_header((nx, ny, nz), (96.0, 60.0, 20.0), TE=[3.0], TR=[20.0], flipAngle_deg=[9])
    write_raw(tmp_path / "raw.h5", header, *acqs)
    back = import_ismrmrd(tmp_path / "raw.h5", signal_model="vfa_megre")

    assert nibabel.aff2axcodes(back.affine) == codes
    assert back.voxel_size == (12.0, 10.0, 5.0)
    np.testing.assert_allclose(nibabel.affines.voxel_sizes(back.affine), (12.0, 10.0, 5.0))
    centre = back.affine @ [nx // 2, ny // 2, nz // 2, 1]
    np.testing.assert_allclose(centre[:3], (-10.0, 20.0, 30.0), atol=1e-5)
    ras_read = np.diag([-1.0, -1.0, 1.0]) @ directions[0]
    np.testing.assert_allclose(back.affine[:3, 0], 12.0 * ras_read, atol=1e-5)


def test_unset_directions_assume_lps_axes(tmp_path: Path) -> None:
    acq = acquisition(np.ones((2, 8)), 1, 0, directions=np.zeros((3, 3)))
    header = raw_header((8, 2, 1), (8.0, 2.0, 3.0), TE=[3.0], TR=[20.0], flipAngle_deg=[9])
    write_raw(tmp_path / "raw.h5", header, acq)
    with pytest.warns(UserWarning, match="slice_dir are unset; assuming the LPS axes"):
        back = import_ismrmrd(tmp_path / "raw.h5", signal_model="vfa_megre")
    assert nibabel.aff2axcodes(back.affine) == ("L", "P", "S")


# --------------------------------------------------------------------------------------------
# files that are not ISMRMRD data, and problems that cannot be exported
# --------------------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.h5"
    with pytest.raises(ProblemFileError, match=rf"^{re.escape(str(path))}: /: .*no such file"):
        import_ismrmrd(path)


def test_not_ismrmrd(tmp_path: Path) -> None:
    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as f:
        f["x"] = np.arange(3)
    with pytest.raises(ProblemFileError, match=r"/dataset: expected the ISMRMRD group 'dataset'"):
        import_ismrmrd(plain)

    problem_file = tmp_path / "problem.h5"  # a lorein problem file is not ISMRMRD either
    write_problem(problem_file, make_problem())
    with pytest.raises(ProblemFileError, match=r"not an ISMRMRD dataset"):
        import_ismrmrd(problem_file)

    text = tmp_path / "notes.h5"
    text.write_text("not hdf5")
    with pytest.raises(ProblemFileError, match=r"/: expected an HDF5 file"):
        import_ismrmrd(text)

    broken = tmp_path / "broken.h5"
    export_ismrmrd(make_problem(), broken)
    with ismrmrd.Dataset(str(broken), create_if_needed=False) as dset:
        dset.write_xml_header(b"<ismrmrdHeader/>")
    with pytest.raises(ProblemFileError, match=r"/dataset/xml: expected a valid ISMRMRD header"):
        import_ismrmrd(broken)

    header_only = tmp_path / "header_only.h5"
    write_raw(header_only, raw_header((8, 2, 1), (8.0, 2.0, 3.0)))
    with pytest.raises(ProblemFileError, match=r"/dataset/data: expected acquisitions, found none"):
        import_ismrmrd(header_only)


def test_export_refusals(tmp_path: Path) -> None:
    path = tmp_path / "raw.h5"
    sheared = oblique_affine()
    sheared[:3, 1] += 0.3 * sheared[:3, 0] / np.linalg.norm(sheared[:3, 0])
    sheared[:3, 1] *= 2.0 / np.linalg.norm(sheared[:3, 1])  # keep |column| = voxel size
    with pytest.raises(ProblemFileError, match=r"/geometry@affine: expected orthogonal voxel axes"):
        export_ismrmrd(make_problem(affine=sheared), path)
    with pytest.raises(ProblemFileError, match=r"recon_nx: expected 1 <= recon_nx <= nx = 16"):
        export_ismrmrd(make_problem(), path, recon_nx=17)
    with pytest.raises(ProblemFileError, match=r"calibration: expected a region"):
        export_ismrmrd(make_problem(), path, calibration=(NY + 1, 2))
    assert list(tmp_path.iterdir()) == []  # nothing written, no temporary left


# --------------------------------------------------------------------------------------------
# value lists per counter (issue 22): VFA multi-echo with echoes in contrast, flips in set
# --------------------------------------------------------------------------------------------

VFA_FLIPS = [4.0, 10.0, 18.0, 30.0]  # deg, one per set
VFA_TES = [2.0, 4.5, 7.0, 9.5, 12.0, 14.5, 17.0, 19.5]  # ms, one per contrast


def vfa_multi_echo(path: Path, n_sets: int = 4, n_echoes: int = 8, **sequence: list[float]) -> None:
    """A 2D single-coil VFA multi-echo file: every (set, contrast) pair has 3 lines whose
    samples are the constant ``100 * set + contrast + 1``, so each line names its counters."""
    nx, ny = 8, 4
    acqs = [
        acquisition(np.full((1, nx), 100 * s + c + 1.0), ky, 0, set=s, contrast=c)
        for ky in (0, 2, 3)
        for s in range(n_sets)
        for c in range(n_echoes)
    ]
    write_raw(path, raw_header((nx, ny, 1), (80.0, 40.0, 3.0), **sequence), *acqs)


def assert_pairing(back: Problem, flips: list[float], tes: list[float]) -> None:
    """Each line's contrast row holds the flip angle of its set and the TE of its contrast."""
    code = back.kspace[:, 0, 0].real.round().long() - 1
    set_of, echo_of = code // 100, code % 100
    flip = back.contrasts.flip_angle[back.contrast]
    te = back.contrasts.echo_time[back.contrast]
    torch.testing.assert_close(flip, torch.tensor(flips)[set_of] * math.pi / 180)
    torch.testing.assert_close(te, torch.tensor(tes)[echo_of] * 1e-3)
    assert back.n_contrasts == len(flips) * len(tes)
    assert back.matrix == (8, 4, 1) and back.n_coils == 1


def test_header_te_per_contrast_and_flip_per_set(tmp_path: Path) -> None:
    """The issue's failing example: 8 TEs and 4 flip angles in the header."""
    path = tmp_path / "vfa.h5"
    vfa_multi_echo(path, TE=VFA_TES, TR=[25.0], flipAngle_deg=VFA_FLIPS)
    imported = read_ismrmrd(path, signal_model="vfa_megre")
    assert_pairing(imported.problem, VFA_FLIPS, VFA_TES)
    varying = imported.counters.varying()
    assert set(varying) == {"set", "contrast"}
    row = np.arange(32)
    np.testing.assert_array_equal(varying["set"], row // 8)
    np.testing.assert_array_equal(varying["contrast"], row % 8)


def test_sidecar_lists_per_counter(tmp_path: Path) -> None:
    """The natural sidecar (4 flips, 8 TEs) pairs by counter size, with or without [counters]."""
    path = tmp_path / "vfa.h5"
    vfa_multi_echo(path, TR=[25.0])
    sidecar = {"flip_angle_deg": VFA_FLIPS, "echo_time_ms": VFA_TES}
    assert_pairing(
        import_ismrmrd(path, signal_model="vfa_megre", sidecar=sidecar), *sidecar.values()
    )
    named = {**sidecar, "counters": {"flip_angle_deg": "set", "echo_time_ms": "contrast"}}
    assert_pairing(import_ismrmrd(path, signal_model="vfa_megre", sidecar=named), *sidecar.values())
    # one value per row, in the row order of the module docstring (set outer, contrast inner)
    per_row = {
        "flip_angle_deg": [f for f in VFA_FLIPS for _ in VFA_TES],
        "echo_time_ms": VFA_TES * 4,
        "counters": {"echo_time_ms": "row"},
    }
    assert_pairing(
        import_ismrmrd(path, signal_model="vfa_megre", sidecar=per_row), *sidecar.values()
    )


def test_counter_named_in_sidecar_overrides_the_header_default(tmp_path: Path) -> None:
    """Flip angles in the contrast counter and echoes in set: [counters] says so."""
    path = tmp_path / "swapped.h5"
    vfa_multi_echo(path, n_sets=3, n_echoes=4, TE=[3.0, 6.0, 9.0], flipAngle_deg=[5, 10, 15, 20])
    sidecar = {
        "repetition_time_ms": 30.0,
        "counters": {"echo_time_ms": "set", "flip_angle_deg": "contrast"},
    }
    back = import_ismrmrd(path, signal_model="vfa_megre", sidecar=sidecar)
    code = back.kspace[:, 0, 0].real.round().long() - 1
    torch.testing.assert_close(
        back.contrasts.echo_time[back.contrast], torch.tensor([3.0, 6, 9])[code // 100] * 1e-3
    )
    torch.testing.assert_close(
        back.contrasts.flip_angle[back.contrast],
        torch.tensor([5.0, 10, 15, 20])[code % 100] * math.pi / 180,
    )


@pytest.mark.parametrize(
    ("sidecar", "expected"),
    [
        (
            {"flip_angle_deg": [5.0, 10, 15]},
            r"^\S+: sidecar\[flip_angle_deg\]: expected one value, one per contrast row \(16\) or "
            r"one per value of a counter \(repetition 1, set 4, segment 1, contrast 4\), found 3$",
        ),
        (
            {"flip_angle_deg": [5.0, 10, 15, 20]},
            r"sidecar\[flip_angle_deg\]: found 4 values, as many as the values of counters set "
            r'and contrast; say which in the sidecar, e.g. \[counters\] flip_angle_deg = "set"$',
        ),
    ],
)
def test_value_list_fitting_no_counter_or_several(
    tmp_path: Path, sidecar: dict[str, object], expected: str
) -> None:
    path = tmp_path / "square.h5"
    vfa_multi_echo(path, n_sets=4, n_echoes=4, TE=[2.0, 4, 6, 8], TR=[25.0])
    with pytest.raises(ProblemFileError, match=expected) as err:
        import_ismrmrd(path, signal_model="vfa_megre", sidecar=sidecar)
    assert "\n" not in str(err.value)
    # the header's TE runs over contrast (its ISMRMRD meaning) although set has 4 values too
    back = import_ismrmrd(path, signal_model="vfa_megre", sidecar={"flip_angle_deg": 12.0})
    code = back.kspace[:, 0, 0].real.round().long() - 1
    torch.testing.assert_close(
        back.contrasts.echo_time[back.contrast], torch.tensor([2.0, 4, 6, 8])[code % 100] * 1e-3
    )
