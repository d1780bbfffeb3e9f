"""Siemens twix import: tiny files written with twixtools, the same acquisitions as ISMRMRD,
Pulseq layouts, the real Pulseq file of ../shared (skipped when absent) and the errors."""

from __future__ import annotations

import math
import struct
from pathlib import Path

import ismrmrd
import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from lorein.data.ismrmrd_io import import_ismrmrd
from lorein.data.problem import ProblemFileError
from lorein.data.twix_io import directions_from_quaternion, read_twix
from lorein.data.undersample import undersample
from lorein.physics.fft import centered_ifft
from tests.data.test_ismrmrd_io import acquisition, raw_header, write_raw
from tests.helpers import randn_complex

REAL = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "pulseq-gre-3echo"
"""The real Pulseq raw file: ../shared relative to the repository root."""

MULTI_ECHO_MODEL = "megre"
"""The single-flip-angle multi-echo model."""

# a transversal slice rotated 90 deg in plane, off centre (as stored: W, X, Y, Z)
QUATERNION = (math.sqrt(0.5), 0.0, 0.0, math.sqrt(0.5))
POSITION = (4.0, -6.0, 12.5)  # Sag, Cor, Tra = LPS [mm]


def ascconv(**entries: object) -> str:
    return "".join(f"{k} = {v}\n" for k, v in entries.items())


def write_twix(
    path: Path,
    protocol: str,
    lines: list[tuple[np.ndarray, dict[str, int], tuple[str, ...]]],
) -> None:
    """A VE twix file with one measurement: the ASCCONV ``protocol`` (buffer MeasYaps) and one
    MDB per ``(data [coils, samples], counters, flags)``."""
    import twixtools
    from twixtools.mdb import Mdb_local

    text = f"### ASCCONV BEGIN ###\n{protocol}### ASCCONV END ###\n".encode("latin1")
    body = b"MeasYaps\x00" + struct.pack("<I", len(text)) + text
    header = struct.pack("<II", 8 + len(body), 1) + body
    mdbs = []
    for data, counters, flags in lines:
        mdb = Mdb_local(data.astype(np.complex64))
        mdb.mdh.CenterCol = data.shape[1] // 2
        mdb.mdh.CenterLin = 2  # ky centre of the 4-line tests
        for name, value in counters.items():
            setattr(mdb.mdh.Counter, name, value)
        for flag in flags:
            mdb.add_flag(flag)
        mdb.mdh.SliceData.SlicePos.Sag, mdb.mdh.SliceData.SlicePos.Cor = POSITION[:2]
        mdb.mdh.SliceData.SlicePos.Tra = POSITION[2]
        for i, q in enumerate(QUATERNION):
            mdb.mdh.SliceData.Quaternion[i] = q
        mdbs.append(mdb)
    scan = {"hdr_str": np.frombuffer(header, dtype="S1"), "mdb": mdbs}
    twixtools.write_twix([scan], str(path))


PRODUCT = ascconv(
    **{
        "tSequenceFileName": '""%SiemensSeq%\\gre""',
        "sKSpace.lBaseResolution": 8,
        "sKSpace.lPhaseEncodingLines": 4,
        "sKSpace.lPartitions": 1,
        "sKSpace.ucDimension": "0x2",
        "sSliceArray.asSlice[0].dThickness": 3.0,
        "sSliceArray.asSlice[0].dPhaseFOV": 40.0,
        "sSliceArray.asSlice[0].dReadoutFOV": 80.0,
        "lContrasts": 2,
        "alTE[0]": 3000,
        "alTE[1]": 7500,
        "alTR[0]": 20000,
        "adFlipAngleDegree[0]": 12.0,
        "sRXSPEC.alDwellTime[0]": 5000,
    }
)


def test_directions_from_quaternion() -> None:
    """Columns of the quaternion's rotation (scipy, scalar last) are phase, read, slice."""
    np.testing.assert_allclose(
        directions_from_quaternion(np.array([1.0, 0, 0, 0])), [[0, 1, 0], [1, 0, 0], [0, 0, 1]]
    )
    q = np.array([0.3, -0.5, 0.6, 0.2])
    q /= np.linalg.norm(q)
    rotation = Rotation.from_quat([*q[1:], q[0]]).as_matrix()
    read, phase, slice_ = directions_from_quaternion(q)
    np.testing.assert_allclose(np.stack([phase, read, slice_], axis=1), rotation, atol=1e-12)
    # the real file's slice: read towards patient right (-x in LPS), phase posterior
    np.testing.assert_allclose(
        directions_from_quaternion(np.array(QUATERNION)),
        [[-1, 0, 0], [0, 1, 0], [0, 0, 1]],
        atol=1e-12,
    )


def test_product_file_equals_its_ismrmrd_conversion(tmp_path: Path) -> None:
    """Two echoes (Eco), 2 coils, 2x oversampled readout, a noise scan: the twix import equals
    the import of the same acquisitions written as ISMRMRD (siemens_to_ismrmrd's mapping)."""
    data = randn_complex(9, 2, 16, seed=3).numpy()
    noise = randn_complex(2, 64, seed=4).numpy()
    order = [(ky, echo) for ky in (0, 1, 2, 3) for echo in (0, 1)][:8]
    lines = [(noise, {}, ("NOISEADJSCAN",))]
    lines += [(data[i], {"Lin": ky, "Eco": e}, ()) for i, (ky, e) in enumerate(order)]
    write_twix(tmp_path / "scan.dat", PRODUCT, lines)
    twix = read_twix(tmp_path / "scan.dat", signal_model="vfa_megre").problem

    directions = directions_from_quaternion(np.array(QUATERNION))
    noise_flag = (ismrmrd.ACQ_IS_NOISE_MEASUREMENT,)
    acqs = [
        acquisition(noise, flags=noise_flag, dwell_us=5.0, position=POSITION, directions=directions)
    ] + [
        acquisition(
            data[i], ky, 0, dwell_us=5.0, position=POSITION, directions=directions, contrast=e
        )
        for i, (ky, e) in enumerate(order)
    ]
    header = raw_header(
        (16, 4, 1), (160.0, 40.0, 3.0), TE=[3.0, 7.5], TR=[20.0], flipAngle_deg=[12.0]
    )
    header.encoding[0].reconSpace.matrixSize.x = 8
    write_raw(tmp_path / "scan.h5", header, *acqs)
    converted = import_ismrmrd(tmp_path / "scan.h5", signal_model="vfa_megre")

    assert twix.matrix == (8, 4, 1) and twix.n_coils == 2 and twix.n_contrasts == 2
    for name in ("ky", "kz", "contrast"):
        assert torch.equal(getattr(twix, name), getattr(converted, name)), name
    torch.testing.assert_close(twix.kspace, converted.kspace)
    for name, column in converted.contrasts.columns().items():
        torch.testing.assert_close(twix.contrasts.columns()[name], column)
    np.testing.assert_allclose(twix.affine, converted.affine, atol=1e-6)
    torch.testing.assert_close(twix.contrasts.echo_time, torch.tensor([3e-3, 7.5e-3]))


PULSEQ = ascconv(
    **{
        "tSequenceFileName": '""%CustomerSeq%\\pulseq""',
        "sKSpace.lBaseResolution": 64,  # the interpreter's placeholders
        "sKSpace.lPhaseEncodingLines": 64,
        "sKSpace.ucDimension": "0x2",
        "sSliceArray.asSlice[0].dThickness": 3.0,
        "sSliceArray.asSlice[0].dPhaseFOV": 40.0,
        "sSliceArray.asSlice[0].dReadoutFOV": 80.0,
        "alTE[0]": 20000,
        "alTR[0]": 50000,
        "adFlipAngleDegree[0]": 15.0,
    }
)


def pulseq_file(path: Path, n_steps: int = 4, echoes: int = 3) -> np.ndarray:
    """All readouts in Lin, echo-major within each phase step; sample 0 of readout i is
    ``i + 1``. Returns the data ``[n_steps * echoes, 1, 8]``."""
    data = randn_complex(n_steps * echoes, 1, 8, seed=5).numpy()
    data[:, 0, 0] = np.arange(1, len(data) + 1)
    lines = [(data[i], {"Lin": i}, ()) for i in range(len(data))]
    write_twix(path, PULSEQ, lines)
    return data


def test_pulseq_echoes_per_excitation(tmp_path: Path) -> None:
    """Readout i is echo i % 3 of phase step i // 3, steps from -ny/2 upwards."""
    pulseq_file(tmp_path / "pulseq.dat")
    sidecar = {"echoes_per_excitation": 3, "echo_time_ms": [2.0, 5.0, 8.0], "flip_angle_deg": 9}
    sidecar["repetition_time_ms"] = 15.0
    imported = read_twix(tmp_path / "pulseq.dat", signal_model=MULTI_ECHO_MODEL, sidecar=sidecar)
    p = imported.problem
    readout = p.kspace[:, 0, 0].real.round().long() - 1
    assert torch.equal(p.contrast, readout % 3) and torch.equal(p.ky, readout // 3)
    assert p.matrix == (8, 4, 1) and p.voxel_size == (10.0, 10.0, 3.0)
    torch.testing.assert_close(p.contrasts.echo_time, torch.tensor([2e-3, 5e-3, 8e-3]))
    assert list(imported.counters.varying()) == ["contrast"]


@pytest.mark.parametrize(
    ("sidecar", "expected"),
    [
        ({}, r"protocol tSequenceFileName \(%CustomerSeq%\\pulseq\): expected the \.seq file"),
        (
            {"echoes_per_excitation": 5},
            r"sidecar\[echoes_per_excitation\]: expected a divisor of the 12 readouts, found 5",
        ),
        ({"echoes_per_excitation": 0}, r"expected an integer >= 1, found 0"),
        (
            {"echoes_per_excitation": 3, "flip_angle_deg": 9, "repetition_time_ms": 15.0},
            r"protocol sequenceParameters/TE: expected echo_time of 3 contrasts, found none; give "
            r"echo_time_ms",
        ),
    ],
)
def test_pulseq_refusals(tmp_path: Path, sidecar: dict[str, object], expected: str) -> None:
    pulseq_file(tmp_path / "pulseq.dat")
    with pytest.raises(ProblemFileError, match=expected) as err:
        read_twix(tmp_path / "pulseq.dat", signal_model="vfa_megre", sidecar=sidecar)
    assert "\n" not in str(err.value)


def test_not_a_twix_file(tmp_path: Path) -> None:
    text = tmp_path / "notes.dat"
    text.write_text("not raw data")
    with pytest.raises(ProblemFileError, match=r"notes\.dat: /: expected a Siemens twix file"):
        read_twix(text)
    with pytest.raises(ProblemFileError, match=r"/: expected a Siemens twix file .*no such file"):
        read_twix(tmp_path / "missing.dat")


# --------------------------------------------------------------------------------------------
# the real Pulseq file (../shared/data/pulseq-gre-3echo)
# --------------------------------------------------------------------------------------------

real_file = pytest.mark.skipif(
    not (REAL / "02_GRE_3echoes.dat").is_file(),
    reason=f"the real Pulseq raw file is not there ({REAL}); it lives in the project's shared "
    "folder beside the repository",
)


@pytest.fixture(scope="module")
def real_problem() -> object:
    return read_twix(
        REAL / "02_GRE_3echoes.dat", seq=REAL / "02_GRE_3echoes.seq", signal_model=MULTI_ECHO_MODEL
    )


@real_file
def test_real_pulseq_file(real_problem: object) -> None:
    """2D, one coil, fully sampled, 3 echoes of TE 4 / 9 / 15 ms; 256 samples over the 256 mm
    FOV (no oversampling to remove); the phantom centred, unwrapped, darker at later echoes."""
    p = real_problem.problem
    assert p.matrix == (256, 256, 1) and p.n_coils == 1 and p.n_contrasts == 3
    assert p.voxel_size == pytest.approx((1.0, 1.0, 3.0))
    assert p.acceleration == pytest.approx(1.0) and p.n_lines == 768
    torch.testing.assert_close(p.contrasts.echo_time, torch.tensor([4e-3, 9e-3, 15e-3]))
    torch.testing.assert_close(p.contrasts.repetition_time, torch.full((3,), 21.01e-3))
    torch.testing.assert_close(p.contrasts.flip_angle, torch.full((3,), math.radians(10)))
    kspace = torch.zeros(3, 256, 256, dtype=torch.complex64)
    kspace[p.contrast, p.ky] = p.kspace[:, 0]
    image = centered_ifft(kspace, dim=(-2, -1)).abs()
    mean = image.mean(dim=(-2, -1))
    assert mean[0] > mean[1] > mean[2]  # echoes in order: signal falls with TE
    inside = image[0] > 0.25 * torch.quantile(image[0], 0.99)
    rows, cols = torch.nonzero(inside, as_tuple=True)
    extent = torch.stack([rows.min(), rows.max(), cols.min(), cols.max()])
    assert 150 < extent[1] - extent[0] < 230 and 150 < extent[3] - extent[2] < 230
    centre = torch.stack([extent[:2].float().mean(), extent[2:].float().mean()])
    assert (centre - 128).abs().max() < 8  # the phantom's bounding box centred: not shifted
    edge = torch.cat([image[0, :8].flatten(), image[0, -8:].flatten(), image[0, :, :8].flatten()])
    assert edge.mean() < 0.1 * image[0][inside].mean()  # background at the edges: not wrapped


@real_file
def test_real_file_undersampled_complementary(real_problem: object) -> None:
    """R = 3 over 3 echoes: each echo a third of ky, together every ky once."""
    kept = undersample(real_problem.problem, 3.0, seed=1)
    assert kept.acceleration == pytest.approx(3.0) and (kept.kz == 0).all()
    assert torch.equal(torch.sort(kept.ky).values, torch.arange(256))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[VERSION]\nmajor 1\nminor 5\n", r"\[VERSION\]: expected Pulseq format 1\.4, found 1\.5"),
        ("[VERSION]\nmajor 1\nminor 4\n[DEFINITIONS]\nFOV 0.2 0.2\n", r"\[BLOCKS\]: expected"),
        (
            "[VERSION]\nmajor 1\nminor 4\n[DEFINITIONS]\nFOV 0.2 0.2\n[BLOCKS]\n[RF]\n[ADC]\n"
            "[SHAPES]\n",
            r"\[DEFINITIONS\] FOV: expected three numbers",
        ),
    ],
)
def test_bad_seq_file(tmp_path: Path, text: str, expected: str) -> None:
    from lorein.data.pulseq_seq import read_seq

    (tmp_path / "a.seq").write_text(text)
    with pytest.raises(ProblemFileError, match=expected):
        read_seq(tmp_path / "a.seq")
