"""Siemens raw data (twix ``.dat``, VB and VD/VE) -> :class:`~lorein.data.problem.Problem`.

The file is read with twixtools (PyPI ``twixtools``, see docs/IMPORT.md for why this reader);
its measurement data headers (MDH) become ISMRMRD acquisition records and its protocol an
ISMRMRD header, as ``siemens_to_ismrmrd`` converts them, and
:func:`lorein.data.ismrmrd_io.problem_from_lines` builds the problem: counters, sidecar and
contrast rows, noise pre-whitening, readout oversampling and geometry are those of the
ISMRMRD import.

Mapping
-------
* Lines: the last measurement of the file; imaging lines are twixtools' image scans plus
  calibration-only lines (``PATREFSCAN``), noise scans are ``NOISEADJSCAN`` lines. Counters
  ``Lin``, ``Par``, ``Eco``, ``Set``, ``Rep``, ``Seg``, ``Ave``, ``Sli``, ``Phs`` become
  ``kspace_encode_step_1``, ``_2``, ``contrast``, ``set``, ``repetition``, ``segment``,
  ``average``, ``slice``, ``phase``; ``CutOff`` the discarded samples, ``CenterCol`` the readout
  centre, ``REFLECT`` a reversed line. Dwell time: protocol ``sRXSPEC.alDwellTime[0]`` [ns].
* Encoding (Siemens product sequences): readout samples after the cut-off as encoded x, field
  of view ``dReadoutFOV`` times samples / ``lBaseResolution`` (reconstructed x:
  ``lBaseResolution``, so 2x oversampling is removed), y ``lPhaseEncodingLines`` x
  ``dPhaseFOV`` with the k-space centre at ``CenterLin``, z ``lPartitions`` x slab thickness
  for 3D (``ucDimension`` 4), else one slice of ``dThickness``; ``alTE`` [us] (one per
  ``lContrasts``), ``alTR[0]``, ``adFlipAngleDegree[0]`` as ``sequenceParameters``.
* Pulseq sequences (protocol ``tSequenceFileName`` containing ``pulseq``, or a ``.seq`` file or
  ``echoes_per_excitation`` given): every readout is numbered in ``Lin`` and the protocol's
  matrix, TE, TR and flip angle are the interpreter's placeholders. With the ``.seq`` file
  (:func:`lorein.data.pulseq_seq.read_seq`) each readout's ky, kz and echo come from its
  gradient areas and position among its excitation's readouts; matrix and field of view
  from the sequence (readout oversampling = encoded readout FOV / ``FOV`` x); TE per echo, TR
  and flip angle from its timing and RF pulses. Without it, the sidecar's
  ``echoes_per_excitation`` E orders them: readout i is echo ``i % E`` of phase-encoding step
  ``i // E`` (linear order from ``-ny/2``), one slice, field of view from the protocol
  (``sSliceArray``), no oversampling; the sidecar gives TE, TR and flip angle.
* Geometry: ``SliceData`` of the first imaging line: position (Sag, Cor, Tra) is LPS [mm];
  the quaternion (stored W, X, Y, Z) is the rotation whose columns are phase, read and slice
  directions, as ``siemens_to_ismrmrd`` reads it.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NoReturn

import ismrmrd
import numpy as np
from ismrmrd import xsd
from ismrmrd.hdf5 import acquisition_header_dtype

from lorein.data.ismrmrd_io import (
    SIDECAR_KEYS,
    ImportedProblem,
    RawFields,
    Sidecar,
    collect_lines,
    problem_from_lines,
)
from lorein.data.problem import ProblemFileError
from lorein.data.pulseq_seq import SeqReadouts, read_seq

TWIX_SIDECAR_KEYS: dict[str, str] = {
    **SIDECAR_KEYS,
    "echoes_per_excitation": "Siemens files of Pulseq sequences without the .seq file: readouts "
    "per excitation (readout i is echo i % E of phase-encoding step i // E)",
}
"""Keys of the import sidecar for Siemens files: those of ISMRMRD files and
``echoes_per_excitation``."""

TWIX_FIELDS = RawFields(header="protocol", data="MDH")
"""How error messages name the parts of a twix file."""

_COUNTERS = {
    "Lin": "kspace_encode_step_1",
    "Par": "kspace_encode_step_2",
    "Eco": "contrast",
    "Set": "set",
    "Rep": "repetition",
    "Seg": "segment",
    "Ave": "average",
    "Sli": "slice",
    "Phs": "phase",
}
"""Siemens line counters -> ISMRMRD encoding counters."""


def _fail(source: str, where: str, message: str) -> NoReturn:
    raise ProblemFileError(source, where, message)


def _bit(flag: int) -> np.uint64:
    return np.uint64(1) << np.uint64(flag - 1)


def directions_from_quaternion(quaternion: np.ndarray) -> np.ndarray:
    """Read, phase and slice direction cosines (LPS) of a Siemens slice quaternion.

    Parameters
    ----------
    quaternion
        ``[4]`` as stored in the MDH: W (scalar), X, Y, Z.

    Returns
    -------
    ``[3, 3]`` rows read_dir, phase_dir, slice_dir: the rotation's columns are phase, read and
    slice (``siemens_to_ismrmrd``'s reading).
    """
    w, x, y, z = (float(v) for v in quaternion)
    rotation = np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )
    phase, read, slice_ = rotation.T
    return np.stack([read, phase, slice_])


def _read_file(path: Path, source: str) -> dict[str, Any]:
    """The last measurement of a twix file (twixtools' messages are not shown)."""
    if not path.is_file():
        found = "a directory" if path.is_dir() else "no such file"
        _fail(source, "/", f"expected a Siemens twix file (.dat), found {found}; check the path")
    import twixtools

    messages = io.StringIO()
    try:
        with contextlib.redirect_stdout(messages):
            measurements = twixtools.read_twix(
                str(path), verbose=False, parse_pmu=False, parse_geometry=False
            )
    except Exception as e:  # noqa: BLE001 - any failure of the reader means "not a twix file"
        _fail(source, "/", f"expected a Siemens twix file, found one twixtools cannot read ({e})")
    # twixtools reports an MDB it cannot parse (a truncated or damaged file) and goes on
    stopped = re.search(r"error at file position (\d+)/(\d+)", messages.getvalue())
    if stopped:
        _fail(
            source,
            "MDH",
            f"expected measurement data up to byte {stopped[2]}, found an MDB twixtools cannot "
            f"parse at byte {stopped[1]} (file of {path.stat().st_size} bytes): truncated or "
            "damaged",
        )
    if not measurements or not measurements[-1].get("mdb"):
        _fail(source, "/", "expected a Siemens twix file with measurement data, found none")
    return measurements[-1]


def _protocol(meas: Mapping[str, Any], key: str, source: str, default: Any = None) -> Any:
    """A ``MeasYaps`` (ASCCONV) entry by dotted path, e.g. ``sKSpace.lBaseResolution``;
    ``default`` when it is absent (an error without one)."""
    value: Any = meas.get("hdr", {}).get("MeasYaps", {})
    for part in key.split("."):
        if isinstance(value, list):
            value = value[int(part)] if part.isdigit() and int(part) < len(value) else None
        elif isinstance(value, Mapping):
            value = value.get(part)
        else:
            value = None
        if value is None:
            if default is not None:
                return default
            _fail(source, f"protocol {key}", "expected a value, found none")
    return value


def _number(
    meas: Mapping[str, Any],
    key: str,
    source: str,
    default: float | None = None,
    low: float = 0.0,
) -> float:
    """A numeric ``MeasYaps`` entry: finite and above ``low`` (a size or a count: above 0)."""
    value = _protocol(meas, key, source, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        _fail(source, f"protocol {key}", f"expected a finite number, found {value!r}")
    if not value > low:
        _fail(source, f"protocol {key}", f"expected a number above {low:g}, found {value!r}")
    return float(value)


def _heads(mdbs: list[Any], dwell_us: float) -> np.ndarray:
    """ISMRMRD acquisition headers of twix MDBs (as ``siemens_to_ismrmrd`` fills them)."""
    heads = np.zeros(len(mdbs), dtype=acquisition_header_dtype)
    heads["version"] = 1
    heads["sample_time_us"] = dwell_us
    for i, mdb in enumerate(mdbs):
        mdh = mdb.mdh
        head = heads[i]
        head["scan_counter"] = mdh.ScanCounter
        head["number_of_samples"] = mdh.SamplesInScan
        head["active_channels"] = head["available_channels"] = mdh.UsedChannels
        head["discard_pre"] = mdh.CutOff.Pre
        head["discard_post"] = mdh.CutOff.Post
        head["center_sample"] = mdh.CenterCol
        position = mdh.SliceData.SlicePos
        head["position"] = (position.Sag, position.Cor, position.Tra)
        quaternion = np.asarray(list(mdh.SliceData.Quaternion), dtype=np.float64)
        if np.any(quaternion):
            head["read_dir"], head["phase_dir"], head["slice_dir"] = directions_from_quaternion(
                quaternion
            )
        for siemens, name in _COUNTERS.items():
            head["idx"][name] = getattr(mdh.Counter, siemens)
        flags = np.uint64(0)
        if mdb.is_flag_set("NOISEADJSCAN"):
            flags |= _bit(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)
        if mdb.is_flag_set("REFLECT"):
            flags |= _bit(ismrmrd.ACQ_IS_REVERSE)
        if mdb.is_flag_set("PATREFSCAN"):
            calibration = (
                ismrmrd.ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING
                if mdb.is_flag_set("PATREFANDIMASCAN")
                else ismrmrd.ACQ_IS_PARALLEL_CALIBRATION
            )
            flags |= _bit(calibration)
        head["flags"] = flags
    return heads


def _limit(n: int, center: int) -> xsd.limitType:
    return xsd.limitType(minimum=0, maximum=n - 1, center=center)


def _space(matrix: tuple[int, int, int], fov_mm: tuple[float, float, float]) -> Any:
    return xsd.encodingSpaceType(
        matrixSize=xsd.matrixSizeType(x=matrix[0], y=matrix[1], z=matrix[2]),
        fieldOfView_mm=xsd.fieldOfViewMm(x=fov_mm[0], y=fov_mm[1], z=fov_mm[2]),
    )


def _header(
    encoded: tuple[int, int, int],
    fov_mm: tuple[float, float, float],
    recon_nx: int,
    centres: tuple[int, int],
    sequence: xsd.sequenceParametersType | None,
) -> xsd.ismrmrdHeader:
    recon_fov = (fov_mm[0] * recon_nx / encoded[0], fov_mm[1], fov_mm[2])
    return xsd.ismrmrdHeader(
        # the problem has no field strength; 0 Hz stands for unknown, as in the export
        experimentalConditions=xsd.experimentalConditionsType(H1resonanceFrequency_Hz=0),
        encoding=[
            xsd.encodingType(
                encodedSpace=_space(encoded, fov_mm),
                reconSpace=_space((recon_nx, encoded[1], encoded[2]), recon_fov),
                encodingLimits=xsd.encodingLimitsType(
                    kspace_encoding_step_1=_limit(encoded[1], centres[0]),
                    kspace_encoding_step_2=_limit(encoded[2], centres[1]),
                ),
                trajectory=xsd.trajectoryType.CARTESIAN,
            )
        ],
        sequenceParameters=sequence,
    )


def _product_header(meas: Mapping[str, Any], first: Any, n_samples: int, source: str) -> Any:
    """The ISMRMRD header of a Siemens product sequence, from its protocol."""
    base = int(_number(meas, "sKSpace.lBaseResolution", source))
    lines = int(_number(meas, "sKSpace.lPhaseEncodingLines", source))
    three_d = int(_number(meas, "sKSpace.ucDimension", source)) == 4
    partitions = int(_number(meas, "sKSpace.lPartitions", source)) if three_d else 1
    fov = _slab_fov(meas, source)
    fov = (fov[0] * n_samples / base, fov[1], fov[2])
    n_contrasts = int(_number(meas, "lContrasts", source, default=1))
    # the sequence parameters' plausibility is checked with the sidecar's (problem_from_lines)
    sequence = xsd.sequenceParametersType(
        TE=[_number(meas, f"alTE.{i}", source, low=-math.inf) / 1e3 for i in range(n_contrasts)],
        TR=[_number(meas, "alTR.0", source, low=-math.inf) / 1e3],
        flipAngle_deg=[_number(meas, "adFlipAngleDegree.0", source, low=-math.inf)],
    )
    centres = (int(first.mdh.CenterLin), int(first.mdh.CenterPar) if three_d else 0)
    return _header((n_samples, lines, partitions), fov, min(base, n_samples), centres, sequence)


def _slab_fov(meas: Mapping[str, Any], source: str) -> tuple[float, float, float]:
    """Readout and phase field of view and thickness of the first slice [mm]."""
    slab = "sSliceArray.asSlice.0"
    return (
        _number(meas, f"{slab}.dReadoutFOV", source),
        _number(meas, f"{slab}.dPhaseFOV", source),
        _number(meas, f"{slab}.dThickness", source),
    )


def _pulseq_layout(
    heads: np.ndarray,
    imaging: np.ndarray,
    seq: SeqReadouts | None,
    echoes: int | None,
    sidecar: Sidecar,
    meas: Mapping[str, Any],
    n_samples: int,
) -> xsd.ismrmrdHeader:
    """Renumber the imaging lines of a Pulseq file (ky, kz, contrast) in place; its header."""
    source = sidecar.raw
    n_lines = int(imaging.sum())
    idx = heads["idx"]
    if seq is not None:
        if len(seq.echo) != n_lines or seq.n_samples != n_samples:
            _fail(
                source,
                "MDH",
                f"expected the {len(seq.echo)} readouts of {seq.n_samples} samples of the .seq "
                f"file, found {n_lines} of {n_samples}: raw data of another sequence?",
            )
        extent = np.maximum(-seq.k_index.min(axis=0), seq.k_index.max(axis=0) + 1)
        ny, nz = (int(2 * e) if e > 1 else 1 for e in extent[1:])
        idx["kspace_encode_step_1"][imaging] = seq.k_index[:, 1] + ny // 2
        idx["kspace_encode_step_2"][imaging] = seq.k_index[:, 2] + nz // 2
        idx["contrast"][imaging] = seq.echo
        fov = (seq.readout_fov * 1e3, seq.fov[1] * 1e3, seq.fov[2] * 1e3)
        recon_nx = int(round(n_samples * seq.fov[0] / seq.readout_fov))
        sequence = xsd.sequenceParametersType(
            TE=[float(t) * 1e3 for t in seq.echo_time],
            TR=[seq.repetition_time * 1e3],
            flipAngle_deg=[float(np.degrees(seq.flip_angle))],
        )
    else:
        assert echoes is not None
        if n_lines % echoes:
            _fail(
                *sidecar.place("echoes_per_excitation"),
                f"expected a divisor of the {n_lines} readouts, found {echoes}",
            )
        ny, nz = n_lines // echoes, 1
        order = np.arange(n_lines)
        idx["kspace_encode_step_1"][imaging] = order // echoes
        idx["kspace_encode_step_2"][imaging] = 0
        idx["contrast"][imaging] = order % echoes
        fov = _slab_fov(meas, source)
        recon_nx, sequence = n_samples, None
    for name in ("set", "repetition", "segment", "average", "slice", "phase"):
        idx[name][imaging] = 0
    return _header((n_samples, ny, nz), fov, recon_nx, (ny // 2, nz // 2), sequence)


def read_twix(
    path: str | os.PathLike[str],
    *,
    seq: str | os.PathLike[str] | None = None,
    signal_model: str | None = None,
    sidecar: Mapping[str, Any] | None = None,
    sidecar_origin: Mapping[str, str] | None = None,
    remove_oversampling: bool = True,
    noise_prewhitening: bool = True,
) -> ImportedProblem:
    """Read Cartesian Siemens raw data (twix) as a validated problem.

    Parameters
    ----------
    path
        Siemens ``.dat`` file (VB or VD/VE; of a multi-measurement file the last measurement).
    seq
        The Pulseq ``.seq`` file of a Pulseq acquisition (see the module docstring).
    signal_model, sidecar, sidecar_origin, remove_oversampling, noise_prewhitening
        As :func:`lorein.data.ismrmrd_io.import_ismrmrd`; the sidecar takes
        :data:`TWIX_SIDECAR_KEYS` (those of ISMRMRD files and ``echoes_per_excitation``).
        Sequence parameters from the protocol, the ``.seq`` file or the sidecar must be
        plausible (:data:`~lorein.data.problem.SEQUENCE_RANGES`).

    Returns
    -------
    The problem (``source`` = ``path``) and the counters of its contrast rows.

    Raises
    ------
    ProblemFileError
        One line naming the file, the field and what was expected: not a twix file, a Pulseq
        file without its ``.seq`` or ``echoes_per_excitation``, a ``.seq`` of another
        acquisition, and everything :func:`~lorein.data.ismrmrd_io.import_ismrmrd` refuses.
    """
    source = str(path)
    given = Sidecar(dict(sidecar or {}), dict(sidecar_origin or {}), source)
    echoes = given.values.pop("echoes_per_excitation", None)
    if echoes is not None and (
        isinstance(echoes, bool) or not isinstance(echoes, int) or echoes < 1
    ):
        _fail(*given.place("echoes_per_excitation"), f"expected an integer >= 1, found {echoes!r}")
    seq_readouts = None if seq is None else read_seq(seq)
    meas = _read_file(Path(path), source)
    mdbs = [
        m
        for m in meas["mdb"]
        if m.is_image_scan() or m.is_flag_set("PATREFSCAN") or m.is_flag_set("NOISEADJSCAN")
    ]
    if not mdbs:
        _fail(source, "MDH", "expected imaging lines, found none")
    dwell_ns = _number(meas, "sRXSPEC.alDwellTime.0", source, default=0, low=-math.inf)
    heads = _heads(mdbs, dwell_ns / 1e3)
    noise = (heads["flags"] & _bit(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)) != 0
    imaging = ~noise
    if not imaging.any():
        _fail(source, "MDH", "expected imaging lines, found only noise scans")
    first = int(np.flatnonzero(imaging)[0])
    n_samples = int(
        heads["number_of_samples"][first]
        - heads["discard_pre"][first]
        - heads["discard_post"][first]
    )
    sequence_file = str(meas.get("hdr", {}).get("MeasYaps", {}).get("tSequenceFileName", ""))
    pulseq = seq_readouts is not None or echoes is not None or "pulseq" in sequence_file.lower()
    if pulseq:
        if seq_readouts is None and echoes is None:
            _fail(
                source,
                f"protocol tSequenceFileName ({sequence_file})",
                "expected the .seq file of this Pulseq acquisition (lorein import --seq "
                "FILE.seq), or echoes_per_excitation in the sidecar: the protocol's matrix, TE, "
                "TR and flip angle are the interpreter's, not the sequence's",
            )
        header = _pulseq_layout(heads, imaging, seq_readouts, echoes, given, meas, n_samples)
    else:
        header = _product_header(meas, mdbs[first], n_samples, source)

    def read(wanted: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
        for i in wanted:
            yield int(i), np.atleast_2d(mdbs[i].data)

    raw = collect_lines(heads, read, n_samples, source, TWIX_FIELDS)
    # with a .seq file, the sequence parameters and the encoding are the sequence's
    fields = TWIX_FIELDS if seq is None else RawFields(header=f"protocol of {seq}", data="MDH")
    return problem_from_lines(
        header,
        raw,
        source=source,
        fields=fields,
        signal_model=signal_model,
        sidecar=given.values,
        sidecar_origin=given.origin,
        remove_oversampling=remove_oversampling,
        noise_prewhitening=noise_prewhitening,
    )
