"""ISMRMRD raw data <-> :class:`~lorein.data.problem.Problem`.

:func:`export_ismrmrd` writes a problem as an ISMRMRD dataset (group ``dataset``: XML header plus
one acquisition per readout line); :func:`import_ismrmrd` reads Cartesian ISMRMRD raw data
(ours or a scanner's; 3D, or 2D with one slice) into a validated problem. The import is split so
that other raw formats reuse it: a reader turns its file into an ISMRMRD header and ISMRMRD
acquisition records (:func:`collect_lines`), and :func:`problem_from_lines` builds the problem
(:mod:`lorein.data.twix_io` reads Siemens files this way).

Mapping
-------
* Lines: ``idx.kspace_encode_step_1`` / ``_2`` are ky / kz, shifted so that the
  ``encodingLimits`` centre lands on ``n // 2`` (our k-space centre). Readout samples keep their
  order; the readout centre is sample ``n // 2`` (``center_sample``). Data are ``[coils, nx]``.
* Contrast rows: on import every combination of the counters ``repetition``, ``set``,
  ``segment`` and ``contrast`` (:data:`ROW_COUNTERS`) is one row of the contrast table,
  numbered ``row = ((repetition * n_set + set) * n_segment + segment) * n_contrast + contrast``,
  where each counter runs over ``0 .. max(encodingLimits maximum, largest value found)``; rows
  without lines are kept (empty contrasts). ``average`` repeats and calibration-only lines
  (``ACQ_IS_PARALLEL_CALIBRATION``) are kept as further rows of their contrast. More than one
  ``slice`` or ``phase`` value is refused. The export writes our contrast index into
  ``idx.contrast`` and leaves the other counters 0, so rows map one to one.
* Sequence parameters, per column, first found wins: the TOML ``sidecar`` (an explicit choice
  overrides the file), the ``lorein.*`` user parameters our export writes (one entry per row,
  exact SI values), the header's ``sequenceParameters`` (``TE``, ``TR`` [ms], ``flipAngle_deg``
  [deg]). ``prep_time`` and ``segment`` exist only in the first two. ``TI`` has no column in the
  problem contract and is not read.
* Value lists (sidecar or header) become one value per row (:func:`_per_row`): one value is
  broadcast; a list named in the sidecar's ``counters`` table runs over that counter's values;
  otherwise a list with one value per row is taken as is, the header's ``TE`` runs over
  ``contrast`` and ``flipAngle_deg`` over ``set`` when their lengths are those counters'
  sizes, and any list runs over the one counter with as many values as it has. A length that
  fits no counter, or several, is an error naming the counters and their sizes.
* Geometry: ISMRMRD positions and direction cosines are in the patient LPS system; the problem's
  affine is RAS, so x and y change sign. ``position`` is the world position of voxel
  ``(nx // 2, ny // 2, nz // 2)`` (the centre of the centred FFT); voxel x, y, z increase along
  ``read_dir``, ``phase_dir``, ``slice_dir``; voxel size = encoded field of view / encoded
  matrix.
"""

from __future__ import annotations

import logging
import math
import os
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import ismrmrd
import numpy as np
import scipy.linalg
import torch
from ismrmrd import xsd
from ismrmrd.hdf5 import acquisition_dtype, acquisition_header_dtype
from xsdata.exceptions import ConverterWarning

from lorein import __version__
from lorein.data.hdf5_input import dataset_size, get, open_file, read_dataset, reading
from lorein.data.hdf5_input import fail as _fail
from lorein.data.problem import (
    REQUIRED_COLUMNS,
    SI_UNITS,
    UNITS,
    Problem,
    Truth,
    sequence_range_error,
    validate_problem,
)
from lorein.physics.contrasts import ContrastTable
from lorein.physics.fft import centered_fft, centered_ifft
from lorein.physics.models.registry import MODEL_CLASSES, SIGNAL_MODELS

DATASET = "dataset"
"""Name of the ISMRMRD group inside the HDF5 file (the library's default)."""

ROW_COUNTERS = ("repetition", "set", "segment", "contrast")
"""ISMRMRD counters that index contrast rows, outermost first."""


def _needing(column: str) -> str:
    """The registered signal models whose contrast table needs ``column``, comma-separated."""
    return ", ".join(name for name, cls in MODEL_CLASSES.items() if column in cls.required_columns)


SIDECAR_KEYS: dict[str, str] = {
    "signal_model": f"signal model, one of {', '.join(SIGNAL_MODELS)} (docs/SIGNAL_MODELS.md; "
    "else the raw file's lorein.signal_model)",
    "flip_angle_deg": "flip angle [deg]: one value, one per contrast row or one per value of a "
    "counter (else the header's)",
    "echo_time_ms": "echo time [ms]: one value, one per contrast row or per counter value (else "
    "the header's)",
    "repetition_time_ms": "repetition time [ms]: one value, one per contrast row or per counter "
    "value (else the header's)",
    "prep_time_ms": f"models with a prep_time column ({_needing('prep_time')}): "
    "T2-preparation time tau [ms]: one value, one per contrast row or per counter value",
    "segment": f"models with a segment column ({_needing('segment')}): readout index n after "
    "the inversion (from 1): one value, one per contrast row or per counter value",
    "counters": 'table: which counter each value list runs over, e.g. {flip_angle_deg = "set", '
    'echo_time_ms = "contrast"}; counters repetition, set, segment, contrast, or "row" (one '
    "per contrast row); default: the list's length decides",
}
"""Keys accepted in the TOML sidecar of :func:`import_ismrmrd`, with what they give."""

SIGNAL_MODEL_PARAMETER = "lorein.signal_model"
"""``userParameterString`` holding the signal model."""

TRUTH_UNITS = {
    "M0": "a.u.",
    "T1": "s",
    "T2": "s",
    "T2star": "s",
    "B0": "Hz",
    "phase0": "rad",
    "mask": "1",
    "purity": "1",
    "coils": "a.u.",
}
"""Units written into the ``lorein.unit`` meta attribute of exported truth images."""

_LPS_RAS = np.diag([-1.0, -1.0, 1.0])  # RAS <-> LPS (its own inverse)
_MAX_COUNTER = 65535  # ISMRMRD counters are uint16
_READ_CHUNK = 4096  # acquisitions read per HDF5 call
_ARRAY_BYTES = 256  # memory of one (empty) numpy array of a variable-length field

# flags of acquisitions that carry no imaging data for this problem
_SKIPPED_FLAGS = (
    ismrmrd.ACQ_IS_NAVIGATION_DATA,
    ismrmrd.ACQ_IS_PHASECORR_DATA,
    ismrmrd.ACQ_IS_HPFEEDBACK_DATA,
    ismrmrd.ACQ_IS_DUMMYSCAN_DATA,
    ismrmrd.ACQ_IS_RTFEEDBACK_DATA,
    ismrmrd.ACQ_IS_SURFACECOILCORRECTIONSCAN_DATA,
    ismrmrd.ACQ_IS_PHASE_STABILIZATION_REFERENCE,
    ismrmrd.ACQ_IS_PHASE_STABILIZATION,
)


@dataclass(frozen=True)
class _Column:
    """Where one contrast-table column is found, and in which unit."""

    sidecar_key: str
    unit: str | None  # of the sidecar key and the header field (ms, deg; a key of UNITS)
    user_parameter: str  # lorein.* user parameter (SI)
    header_field: str | None  # sequenceParameters list
    header_counter: str | None  # counter a header list runs over when its length fits
    example: str  # sidecar example in error messages


_COLUMN_SOURCES = {
    "flip_angle": _Column(
        sidecar_key="flip_angle_deg",
        unit="deg",
        user_parameter="lorein.flip_angle_rad",
        header_field="flipAngle_deg",
        header_counter="set",
        example="flip_angle_deg = [5.0, 10.0, 20.0]",
    ),
    "echo_time": _Column(
        sidecar_key="echo_time_ms",
        unit="ms",
        user_parameter="lorein.echo_time_s",
        header_field="TE",
        header_counter="contrast",
        example="echo_time_ms = [2.15, 5.2, 8.25]",
    ),
    "repetition_time": _Column(
        sidecar_key="repetition_time_ms",
        unit="ms",
        user_parameter="lorein.repetition_time_s",
        header_field="TR",
        header_counter=None,
        example="repetition_time_ms = 46.0",
    ),
    "prep_time": _Column(
        sidecar_key="prep_time_ms",
        unit="ms",
        user_parameter="lorein.prep_time_s",
        header_field=None,
        header_counter=None,
        example="prep_time_ms = [25.0, 50.0, 70.0]",
    ),
    "segment": _Column(
        sidecar_key="segment",
        unit=None,
        user_parameter="lorein.segment",
        header_field=None,
        header_counter=None,
        example="segment = [1, 2, 3]",
    ),
}


@dataclass(frozen=True)
class Sidecar:
    """Sequence parameters given beside a raw file, and where each was given.

    Attributes
    ----------
    values
        The sidecar's keys and values (:data:`SIDECAR_KEYS`).
    origin
        Key -> the file (and table) that gave it, e.g. ``"seq.toml"``, ``"study.toml [import]"``.
    raw
        The raw file, named for a key of unknown origin.
    """

    values: dict[str, Any]
    origin: Mapping[str, str]
    raw: str

    def place(self, key: str, item: str | None = None) -> tuple[str, str]:
        """``(source, field)`` naming ``key`` (or its table's entry ``item``) in messages: the
        sidecar file and the key, or the raw file and ``sidecar[key]``."""
        if key in self.origin:
            return self.origin[key], key if item is None else f"{key}.{item}"
        return self.raw, f"sidecar[{key}]" + ("" if item is None else f"[{item}]")


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().resolve_conj().resolve_neg().numpy()


def _bit(flag: int) -> np.uint64:
    """Bit mask of an ISMRMRD flag (flags count from 1)."""
    return np.uint64(1) << np.uint64(flag - 1)


# --------------------------------------------------------------------------------------------
# geometry
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Geometry:
    """ISMRMRD geometry: LPS position [mm] of voxel ``n // 2`` and unit direction cosines."""

    position: np.ndarray  # [3]
    directions: np.ndarray  # [3, 3] rows read_dir, phase_dir, slice_dir


def _geometry_from_problem(problem: Problem, source: str) -> _Geometry:
    """LPS geometry of the problem's RAS affine; the voxel axes must be orthogonal."""
    affine = np.asarray(problem.affine, dtype=np.float64)
    linear = affine[:3, :3]
    unit = linear / np.linalg.norm(linear, axis=0)
    gram = unit.T @ unit
    if not np.allclose(gram, np.eye(3), atol=1e-4):
        cosines = np.round(gram[np.triu_indices(3, 1)], 4).tolist()
        _fail(
            source,
            "/geometry@affine",
            f"expected orthogonal voxel axes (ISMRMRD stores three direction cosines), found "
            f"axis cosines {cosines} (xy, xz, yz); resample the problem onto an orthogonal grid",
        )
    centre = affine @ np.array([*(n // 2 for n in problem.matrix), 1.0])
    return _Geometry(position=_LPS_RAS @ centre[:3], directions=(_LPS_RAS @ unit).T)


def _affine_from_geometry(
    geometry: _Geometry, matrix: tuple[int, int, int], voxel_size: tuple[float, float, float]
) -> np.ndarray:
    """RAS affine [mm] of the grid ``matrix`` whose voxel ``n // 2`` sits at ``position``."""
    linear = _LPS_RAS @ geometry.directions.T * np.asarray(voxel_size)
    affine = np.eye(4)
    affine[:3, :3] = linear
    affine[:3, 3] = _LPS_RAS @ geometry.position - linear @ np.array([n // 2 for n in matrix])
    return affine


# --------------------------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------------------------


def _compact(values: np.ndarray) -> list[float]:
    """A header list: one value when all are equal, else one per contrast (6 decimals)."""
    values = np.round(values.astype(np.float64), 6)
    if np.all(values == values[0]):
        return [float(values[0])]
    return [float(v) for v in values]


def _limit(n: int, center: int) -> xsd.limitType:
    return xsd.limitType(minimum=0, maximum=n - 1, center=center)


def _space(matrix: Sequence[int], voxel_size: Sequence[float]) -> xsd.encodingSpaceType:
    fov = [float(n * d) for n, d in zip(matrix, voxel_size, strict=True)]
    return xsd.encodingSpaceType(
        matrixSize=xsd.matrixSizeType(x=matrix[0], y=matrix[1], z=matrix[2]),
        fieldOfView_mm=xsd.fieldOfViewMm(x=fov[0], y=fov[1], z=fov[2]),
    )


def _export_header(problem: Problem, recon_nx: int) -> xsd.ismrmrdHeader:
    """The XML header of an exported problem."""
    nx, ny, nz = problem.matrix
    columns = {n: _numpy(c) for n, c in problem.contrasts.columns().items()}
    doubles, longs = [], []
    for name, values in columns.items():
        parameter = _COLUMN_SOURCES[name].user_parameter
        if name == "segment":
            longs += [xsd.userParameterLongType(name=parameter, value=int(v)) for v in values]
        else:
            doubles += [xsd.userParameterDoubleType(name=parameter, value=float(v)) for v in values]
    strings = [
        xsd.userParameterStringType(name=SIGNAL_MODEL_PARAMETER, value=problem.signal_model),
        xsd.userParameterStringType(name="lorein.version", value=__version__),
    ]
    encoding = xsd.encodingType(
        encodedSpace=_space(problem.matrix, problem.voxel_size),
        reconSpace=_space((recon_nx, ny, nz), problem.voxel_size),
        encodingLimits=xsd.encodingLimitsType(
            kspace_encoding_step_0=_limit(nx, nx // 2),
            kspace_encoding_step_1=_limit(ny, ny // 2),
            kspace_encoding_step_2=_limit(nz, nz // 2),
            contrast=_limit(problem.n_contrasts, 0),
        ),
        trajectory=xsd.trajectoryType.CARTESIAN,
    )
    return xsd.ismrmrdHeader(
        acquisitionSystemInformation=xsd.acquisitionSystemInformationType(
            receiverChannels=problem.n_coils
        ),
        # the problem carries no field strength: 0 Hz stands for unknown
        experimentalConditions=xsd.experimentalConditionsType(H1resonanceFrequency_Hz=0),
        encoding=[encoding],
        sequenceParameters=xsd.sequenceParametersType(
            TR=_compact(columns["repetition_time"] * 1e3),
            TE=_compact(columns["echo_time"] * 1e3),
            flipAngle_deg=_compact(np.degrees(columns["flip_angle"].astype(np.float64))),
        ),
        userParameters=xsd.userParametersType(
            userParameterLong=longs, userParameterDouble=doubles, userParameterString=strings
        ),
    )


def _channel_mask(n_coils: int) -> np.ndarray:
    """``[16]`` uint64 ISMRMRD channel mask with channels ``0 .. n_coils - 1`` active."""
    mask = np.zeros(16, dtype=np.uint64)
    for c in range(n_coils):
        mask[c // 64] |= np.uint64(1) << np.uint64(c % 64)
    return mask


def _calibration_lines(problem: Problem, calibration: tuple[int, int], source: str) -> np.ndarray:
    """``[n_lines]`` bool: line inside the central ``(ccy, ccz)`` region at ``(ny//2, nz//2)``."""
    ny, nz = problem.grid.phase_encodes
    ccy, ccz = calibration
    if not (1 <= ccy <= ny and 1 <= ccz <= nz):
        _fail(
            source,
            "calibration",
            f"expected a region (ccy, ccz) within 1..{ny} x 1..{nz}, found {calibration}",
        )
    y0, z0 = ny // 2 - ccy // 2, nz // 2 - ccz // 2
    ky, kz = _numpy(problem.ky), _numpy(problem.kz)
    return (ky >= y0) & (ky < y0 + ccy) & (kz >= z0) & (kz < z0 + ccz)


def _export_heads(
    problem: Problem, geometry: _Geometry, calibration: tuple[int, int] | None, source: str
) -> np.ndarray:
    """``[n_lines]`` ISMRMRD acquisition headers (structured array) of the problem's lines."""
    nx = problem.grid.nx
    heads = np.zeros(problem.n_lines, dtype=acquisition_header_dtype)
    heads["version"] = 1
    heads["scan_counter"] = np.arange(problem.n_lines)
    heads["number_of_samples"] = nx
    heads["available_channels"] = problem.n_coils
    heads["active_channels"] = problem.n_coils
    heads["channel_mask"] = _channel_mask(problem.n_coils)
    heads["center_sample"] = nx // 2
    heads["position"] = geometry.position
    heads["read_dir"], heads["phase_dir"], heads["slice_dir"] = geometry.directions
    idx = heads["idx"]
    idx["kspace_encode_step_1"] = _numpy(problem.ky)
    idx["kspace_encode_step_2"] = _numpy(problem.kz)
    idx["contrast"] = _numpy(problem.contrast)
    flags = heads["flags"]
    if calibration is not None:
        calib = _calibration_lines(problem, calibration, source)
        flags[calib] |= _bit(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING)
    flags[-1] |= _bit(ismrmrd.ACQ_LAST_IN_MEASUREMENT)
    return heads


def _write_acquisitions(group: h5py.Group, heads: np.ndarray, kspace: np.ndarray) -> None:
    """Write all acquisitions in one HDF5 call (the library appends one at a time, ~8 ms each)."""
    n = len(heads)
    records = np.empty(n, dtype=acquisition_dtype)
    records["head"] = heads
    samples = kspace.astype(np.complex64, copy=False).view(np.float32).reshape(n, -1)
    no_trajectory = np.zeros(0, dtype=np.float32)
    for i in range(n):
        records["data"][i] = samples[i]
        records["traj"][i] = no_trajectory
    group.create_dataset("data", data=records, maxshape=(None,))


def _truth_images(
    truth: Truth, problem: Problem, geometry: _Geometry, source: str
) -> list[tuple[str, ismrmrd.Image]]:
    """Truth maps as ISMRMRD images ``(impath, image)``: real maps float32, complex complex64."""
    shape = problem.grid.shape
    named: dict[str, torch.Tensor] = {**truth.maps(), **truth.extra}
    if truth.purity is not None:
        named["purity"] = truth.purity
    if truth.mask is not None:
        named["mask"] = truth.mask
    if truth.coils is not None:
        named["coils"] = truth.coils
    fov = tuple(float(n * d) for n, d in zip(problem.matrix, problem.voxel_size, strict=True))
    images = []
    for series, (name, m) in enumerate(named.items()):
        array = _numpy(m)
        if array.ndim not in (3, 4) or array.shape[-3:] != shape:
            _fail(
                source,
                f"truth.{name}",
                f"expected shape [nz, ny, nx] or [channels, nz, ny, nx] with (nz, ny, nx) = "
                f"{shape}, found {list(array.shape)}",
            )
        is_complex = np.iscomplexobj(array)
        array = array.astype(np.complex64 if is_complex else np.float32)
        image = ismrmrd.Image.from_array(
            array,
            image_type=ismrmrd.IMTYPE_COMPLEX if is_complex else ismrmrd.IMTYPE_REAL,
            image_series_index=series,
            field_of_view=fov,
            position=tuple(geometry.position),
            read_dir=tuple(geometry.directions[0]),
            phase_dir=tuple(geometry.directions[1]),
            slice_dir=tuple(geometry.directions[2]),
        )
        meta = {"lorein.map": name}
        if name in TRUTH_UNITS:
            meta["lorein.unit"] = TRUTH_UNITS[name]
        image.meta = meta
        images.append((f"truth_{name}", image))
    return images


def export_ismrmrd(
    problem: Problem,
    path: str | os.PathLike[str],
    truth: Truth | None = None,
    *,
    calibration: tuple[int, int] | None = None,
    recon_nx: int | None = None,
) -> None:
    """Write a problem as an ISMRMRD dataset (HDF5 group ``dataset``), atomically.

    The header holds encoded/recon space (matrix, field of view [mm]), encoding limits,
    ``sequenceParameters`` (``TR``, ``TE`` [ms], ``flipAngle_deg`` [deg]; one value when constant,
    else one per contrast), ``receiverChannels``, and ``userParameters``: the string
    ``lorein.signal_model`` and every contrast-table column, one entry per contrast in order
    (doubles ``lorein.flip_angle_rad``, ``lorein.echo_time_s``, ``lorein.repetition_time_s``,
    ``lorein.prep_time_s``; longs ``lorein.segment``). Each line becomes one acquisition:
    data ``[n_coils, nx]`` complex64 in the problem's sample order, ``center_sample = nx // 2``,
    ``idx.kspace_encode_step_1 = ky``, ``idx.kspace_encode_step_2 = kz``,
    ``idx.contrast = contrast``, geometry in LPS (see the module docstring).
    ``sample_time_us`` is 0 (unknown) and ``H1resonanceFrequency_Hz`` 0 (unknown). Known coil
    sensitivities (``problem.coils``) have no ISMRMRD field and are not written.

    Parameters
    ----------
    problem
        The problem; its affine must have orthogonal voxel axes.
    path
        Target HDF5 file; replaced if it exists.
    truth
        Optional ground truth, written as ISMRMRD images ``truth_<name>`` (image series in
        order of :data:`~lorein.data.problem.TRUTH_MAPS`, extras, purity, mask, coils): real maps
        float32 ``[1, nz, ny, nx]``, coils complex64 ``[n_coils, nz, ny, nx]``, with meta
        attributes ``lorein.map`` and ``lorein.unit``.
    calibration
        ``(ccy, ccz)``: flag lines inside the central ``ccy x ccz`` region (starting at
        ``ny // 2 - ccy // 2``, ``nz // 2 - ccz // 2``) ``ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING``.
    recon_nx
        Reconstructed readout size when the problem's readout is oversampled: ``reconSpace``
        x matrix (field of view ``recon_nx * dx``) while ``encodedSpace`` keeps ``nx``. Default
        ``nx`` (no oversampling).

    Raises
    ------
    ProblemFileError
        If the problem breaks the problem-file contract, its axes are not orthogonal, a size
        exceeds the uint16 ISMRMRD counters, or ``calibration`` / ``recon_nx`` do not fit.
    """
    path = Path(path)
    source = f"{path} (not written)"
    validate_problem(problem, source)
    nx, ny, nz = problem.matrix
    for name, n in (("nx", nx), ("ny", ny), ("nz", nz), ("n_contrasts", problem.n_contrasts)):
        if n > _MAX_COUNTER + 1:
            _fail(source, name, f"expected at most {_MAX_COUNTER + 1} (uint16 counter), found {n}")
    recon_nx = nx if recon_nx is None else recon_nx
    if not 1 <= recon_nx <= nx:
        _fail(source, "recon_nx", f"expected 1 <= recon_nx <= nx = {nx}, found {recon_nx}")
    geometry = _geometry_from_problem(problem, source)
    header = _export_header(problem, recon_nx)
    heads = _export_heads(problem, geometry, calibration, source)
    images = [] if truth is None else _truth_images(truth, problem, geometry, source)

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with ismrmrd.Dataset(str(tmp), DATASET, create_if_needed=True) as dset:
            dset.write_xml_header(xsd.ToXML(header).encode("utf-8"))
            for impath, image in images:
                dset.append_image(impath, image)
        with h5py.File(tmp, "a") as f:
            _write_acquisitions(f[DATASET], heads, _numpy(problem.kspace))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------------------------
# import
# --------------------------------------------------------------------------------------------


WHITENING_RCOND = 1e-10
"""Smallest accepted ratio of the noise covariance's smallest to largest eigenvalue: below it
the covariance counts as singular (a dead channel, fewer samples than coils)."""


def noise_whitening_matrix(noise: np.ndarray) -> np.ndarray:
    """Whitening matrix of coil noise: the inverse Cholesky factor of its covariance.

    Parameters
    ----------
    noise
        ``[n_coils, n_samples]`` complex noise-only samples (zero mean).

    Returns
    -------
    ``[n_coils, n_coils]`` complex128 lower-triangular ``W = L^-1`` with
    ``Psi = noise @ noise^H / n_samples = L L^H``, so that ``W Psi W^H = I``; whiten coil data
    ``[..., n_coils, n]`` as ``W @ data``.

    Raises
    ------
    ValueError
        If the covariance is not positive definite (fewer samples than coils, a dead channel):
        its eigenvalue ratio is at most ``WHITENING_RCOND``.
    """
    n_coils, n_samples = noise.shape
    noise = noise.astype(np.complex128)
    psi = noise @ noise.conj().T / n_samples
    # rank checked explicitly: whether Cholesky fails on a singular matrix is rounding luck
    eigenvalues = np.linalg.eigvalsh(psi)
    if n_samples < n_coils or not eigenvalues[0] > WHITENING_RCOND * eigenvalues[-1]:
        raise ValueError(
            f"noise covariance of {n_coils} coils from {n_samples} samples is not positive "
            f"definite (eigenvalue ratio {eigenvalues[0] / max(eigenvalues[-1], 1e-300):.1e}, "
            f"expected > {WHITENING_RCOND:.0e}; diagonal "
            f"{np.round(psi.diagonal().real, 6).tolist()})"
        )
    lower = np.linalg.cholesky(psi)
    return scipy.linalg.solve_triangular(lower, np.eye(n_coils), lower=True)


def _check_sidecar(
    sidecar: Mapping[str, Any] | None, origin: Mapping[str, str] | None, source: str
) -> Sidecar:
    """The sidecar's keys, and its ``counters`` table: value keys -> counter names."""
    checked = Sidecar(dict(sidecar or {}), dict(origin or {}), source)
    unknown = sorted(set(checked.values) - set(SIDECAR_KEYS))
    if unknown:
        where = checked.place(unknown[0])
        _fail(
            where[0],
            "sidecar" if where[0] == source else unknown[0],
            f"expected keys among {', '.join(SIDECAR_KEYS)}, found unknown {', '.join(unknown)}",
        )
    counters = checked.values.get("counters", {})
    if not isinstance(counters, Mapping):
        _fail(
            *checked.place("counters"),
            f'expected a table such as {{flip_angle_deg = "set"}}, found {counters!r}',
        )
    value_keys = [c.sidecar_key for c in _COLUMN_SOURCES.values()]
    for key, counter in counters.items():
        if key not in value_keys:
            _fail(
                *checked.place("counters", key),
                f"expected a key among {', '.join(value_keys)}, found {key!r}",
            )
        if counter not in (*ROW_COUNTERS, "row"):
            _fail(
                *checked.place("counters", key),
                f"expected one of {', '.join(ROW_COUNTERS)} or row, found {counter!r}",
            )
    return checked


def _read_header(f: h5py.File, source: str) -> xsd.ismrmrdHeader:
    """Check the file's ISMRMRD layout and parse its XML header (read with bounded memory)."""
    group = get(f, DATASET, source, f"/{DATASET}")
    if not isinstance(group, h5py.Group):
        _fail(
            source,
            f"/{DATASET}",
            f"expected the ISMRMRD group '{DATASET}', found none: this HDF5 file is not an "
            f"ISMRMRD dataset (convert scanner raw data with e.g. siemens_to_ismrmrd)",
        )
    for name, what in (("xml", "the XML header"), ("data", "acquisitions")):
        if get(group, name, source, f"/{DATASET}/{name}") is None:
            _fail(source, f"/{DATASET}/{name}", f"expected {what}, found none")
    xml = read_dataset(group, "xml", source, f"/{DATASET}/xml").reshape(-1)
    if xml.size == 0 or not isinstance(xml[0], bytes | str):
        found = "no element" if xml.size == 0 else f"{xml.dtype} data"
        _fail(source, f"/{DATASET}/xml", f"expected the XML header as text, found {found}")
    try:
        with _strict_xsdata() as logged:
            header = xsd.CreateFromDocument(xml[0])
    except (ValueError, TypeError, SyntaxError, ConverterWarning) as e:  # ParserError: ValueError
        logged = [str(e)]
    if logged:
        text = " ".join(logged[0].split())
        _fail(source, f"/{DATASET}/xml", f"expected a valid ISMRMRD header, found: {text}")
    return header


@contextmanager
def _strict_xsdata() -> Iterator[list[str]]:
    """Parse with xsdata strictly: a value it cannot convert (``TE = "2u.5"``, which it would
    keep as text) raises its ``ConverterWarning``; what it logs (an element it could not place)
    is collected in the list yielded instead of printed."""
    logged: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: logged.append(record.getMessage())  # type: ignore[method-assign]
    log = logging.getLogger("xsdata")
    propagate = log.propagate
    log.addHandler(handler)
    log.propagate = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", ConverterWarning)
            yield logged
    finally:
        log.removeHandler(handler)
        log.propagate = propagate


@dataclass(frozen=True)
class RawFields:
    """How error messages name the parts of a raw-data file.

    Attributes
    ----------
    header
        The header holding encoding and sequence parameters (``/dataset/xml`` in ISMRMRD).
    data
        The acquisitions, indexed ``[i]`` in messages (``/dataset/data`` in ISMRMRD).
    """

    header: str
    data: str


ISMRMRD_FIELDS = RawFields(header=f"/{DATASET}/xml", data=f"/{DATASET}/data")
"""Field names of an ISMRMRD file."""


@dataclass(frozen=True)
class RawLines:
    """Acquisitions of a raw-data file as ISMRMRD records, readout discards removed.

    Attributes
    ----------
    heads
        ``[n_lines]`` ISMRMRD acquisition headers (``acquisition_header_dtype``) of the imaging
        lines, in file order.
    kspace
        ``[n_lines, n_coils, n_samples]`` complex64 readouts.
    noise
        Noise scans: ``([n_coils, n] samples, sample_time_us)`` each.
    """

    heads: np.ndarray
    kspace: np.ndarray
    noise: list[tuple[np.ndarray, float]]


def collect_lines(
    heads: np.ndarray,
    read: Callable[[np.ndarray], Iterator[tuple[int, np.ndarray]]],
    n_samples: int,
    source: str,
    fields: RawFields,
) -> RawLines:
    """Sort acquisitions into imaging lines and noise scans, check them and read their samples.

    Imaging lines are all acquisitions except noise scans (``ACQ_IS_NOISE_MEASUREMENT``) and
    the flags of data without imaging lines (navigators, phase correction, feedback, dummy
    scans, ...); calibration lines are imaging lines.

    Parameters
    ----------
    heads
        ``[n_acquisitions]`` ISMRMRD acquisition headers of the file.
    read
        Called once with the indices of the acquisitions wanted (increasing); yields
        ``(index, samples)`` for each, samples complex ``[active_channels, number_of_samples]``.
    n_samples
        Encoded readout length (after ``discard_pre`` / ``discard_post``).
    source, fields
        Names for error messages.
    """
    where = fields.data
    flags = heads["flags"]
    active = heads["active_channels"].astype(np.int64)
    total = heads["number_of_samples"].astype(np.int64)
    pre = heads["discard_pre"].astype(np.int64)
    post = heads["discard_post"].astype(np.int64)
    noise = (flags & _bit(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)) != 0
    skipped = np.zeros(len(heads), dtype=bool)
    for flag in _SKIPPED_FLAGS:
        skipped |= (flags & _bit(flag)) != 0
    imaging = ~noise & ~skipped
    lines = np.flatnonzero(imaging)
    if len(lines) == 0:
        _fail(source, where, "expected imaging acquisitions, found none")
    _check_lines(heads[lines], lines, n_samples, source, fields)
    n_coils = int(active[lines[0]])
    if noise.any() and (active[noise] != n_coils).any():
        bad = int(np.flatnonzero(noise & (active != n_coils))[0])
        _fail(
            source,
            f"{where}[{bad}]",
            f"expected noise scans with the {n_coils} channels of the imaging lines, "
            f"found {active[bad]}",
        )
    row_of = np.full(len(heads), -1)
    row_of[lines] = np.arange(len(lines))
    kspace = np.empty((len(lines), n_coils, n_samples), dtype=np.complex64)
    scans = []
    for i, acq in read(np.flatnonzero(imaging | noise)):
        kept = acq[:, pre[i] : total[i] - post[i]]
        if imaging[i]:
            kspace[row_of[i]] = kept
        else:
            scans.append((kept, float(heads["sample_time_us"][i])))
    return RawLines(heads=heads[lines], kspace=kspace, noise=scans)


def _read_acquisitions(f: h5py.File, n_samples: int, source: str) -> RawLines:
    """Read every acquisition header, then the data of imaging and noise acquisitions (each
    read bounded by the sizes the headers declare, which the file must be able to hold)."""
    where = ISMRMRD_FIELDS.data
    data = get(f, f"{DATASET}/data", source, where)
    if not isinstance(data, h5py.Dataset):
        _fail(source, where, "expected a dataset of acquisitions, found a group")
    with reading(source, where):
        dtype = data.dtype
    if dtype.names is None or not {"head", "data"} <= set(dtype.names):
        _fail(source, where, f"expected ISMRMRD acquisition records, found {dtype}")
    with reading(source, where, dataset_size(data, source, where)):
        heads = data.fields("head")[()]
    try:
        active = heads["active_channels"].astype(np.int64)
        total = heads["number_of_samples"].astype(np.int64)
        for name in ("flags", "discard_pre", "discard_post"):
            heads[name]
    except (KeyError, ValueError) as e:
        _fail(source, where, f"expected ISMRMRD acquisition records, found {dtype} ({e})")
    # samples are variable-length arrays: the heads declare their sizes, the file holds them
    sample_bytes = 8 * active * total
    file_size = os.path.getsize(f.filename)
    if sample_bytes.sum() > file_size:
        _fail(
            source,
            where,
            f"expected samples the file can hold ({file_size} bytes), found heads declaring "
            f"{sample_bytes.sum()} bytes (active_channels x number_of_samples): truncated "
            "or damaged",
        )
    samples = data.fields("data")

    def read(wanted: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
        for lo in range(0, len(heads), _READ_CHUNK):
            chunk = wanted[(wanted >= lo) & (wanted < lo + _READ_CHUNK)]
            declared = int(sample_bytes[lo : lo + _READ_CHUNK].sum()) + _READ_CHUNK * _ARRAY_BYTES
            with reading(source, where, declared):
                block = samples[lo : lo + _READ_CHUNK]
            for i in chunk:
                values = block[i - lo]
                if values.size != 2 * active[i] * total[i]:
                    _fail(
                        source,
                        f"{where}[{i}]",
                        f"expected {2 * active[i] * total[i]} floats (channels x samples x "
                        f"2), found {values.size}",
                    )
                yield int(i), values.view(np.complex64).reshape(active[i], total[i])

    return collect_lines(heads, read, n_samples, source, ISMRMRD_FIELDS)


def _check_lines(
    heads: np.ndarray, index: np.ndarray, n_samples: int, source: str, fields: RawFields
) -> None:
    """Refuse imaging lines (``heads``, acquisitions ``index``) this importer cannot map."""
    where = fields.data
    pre = heads["discard_pre"].astype(np.int64)
    kept = heads["number_of_samples"].astype(np.int64) - pre - heads["discard_post"]
    center = heads["center_sample"].astype(np.int64)
    checks = (
        (
            kept != n_samples,
            f"expected {n_samples} readout samples after discard_pre/discard_post "
            f"(encodedSpace matrix x); partial-echo readouts are not supported",
            kept,
        ),
        (
            heads["active_channels"] != heads["active_channels"][0],
            f"expected every imaging line to have {heads['active_channels'][0]} channels",
            heads["active_channels"],
        ),
        (
            (center != 0) & (center - pre != n_samples // 2),
            f"expected the readout centre at sample {n_samples // 2} (center_sample, after "
            f"discard_pre); asymmetric echoes are not supported",
            center,
        ),
        (
            (heads["flags"] & _bit(ismrmrd.ACQ_IS_REVERSE)) != 0,
            "expected forward readouts; reverse them (ACQ_IS_REVERSE) when converting",
            heads["flags"],
        ),
        (
            heads["encoding_space_ref"] != 0,
            "expected lines of encoding 0; only one encoding space is supported",
            heads["encoding_space_ref"],
        ),
        (
            heads["trajectory_dimensions"] != 0,
            "expected Cartesian lines without a trajectory",
            heads["trajectory_dimensions"],
        ),
    )
    for bad, message, found in checks:
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            _fail(source, f"{where}[{index[k]}]", f"{message}, found {found[k]}")
    for counter in ("slice", "phase"):
        values = np.unique(heads["idx"][counter])
        if len(values) > 1:
            _fail(
                source,
                f"{where} idx.{counter}",
                f"expected one {counter} (one image volume per contrast), found values "
                f"{values.tolist()}",
            )


def _centred_index(
    steps: np.ndarray,
    n: int,
    limit: xsd.limitType | None,
    name: str,
    source: str,
    fields: RawFields,
) -> np.ndarray:
    """Encoding steps -> 0-based grid index with the k-space centre at ``n // 2``."""
    center = n // 2 if limit is None else limit.center
    index = steps.astype(np.int64) - center + n // 2
    if index.min() < 0 or index.max() >= n:
        _fail(
            source,
            f"{fields.data} idx.kspace_encode_{name}",
            f"expected steps in [{center - n // 2}, {center - n // 2 + n}) (encoded matrix {n}, "
            f"centre {center}), found {steps.min()} .. {steps.max()}",
        )
    return index


@dataclass(frozen=True)
class ContrastCounters:
    """The counter values of each contrast row.

    Rows enumerate every combination of :data:`ROW_COUNTERS`, the last one fastest:
    ``row = ((repetition * n_set + set) * n_segment + segment) * n_contrast + contrast``.

    Attributes
    ----------
    sizes
        Counter name -> number of values (``0 .. size - 1``), in :data:`ROW_COUNTERS` order.
    """

    sizes: dict[str, int]

    @property
    def n_rows(self) -> int:
        """Number of contrast rows (the product of the sizes)."""
        return math.prod(self.sizes.values())

    def values(self, counter: str) -> np.ndarray:
        """``[n_rows]`` int64: the value of ``counter`` in each row."""
        names = list(self.sizes)
        index = np.unravel_index(np.arange(self.n_rows), tuple(self.sizes.values()))
        return index[names.index(counter)].astype(np.int64)

    def varying(self) -> dict[str, np.ndarray]:
        """The value per row of each counter with more than one value, by name."""
        return {c: self.values(c) for c, n in self.sizes.items() if n > 1}


def _contrast_rows(
    heads: np.ndarray, limits: xsd.encodingLimitsType
) -> tuple[np.ndarray, ContrastCounters]:
    """Row of each line and the counters of the rows (see the module docstring)."""
    row = np.zeros(len(heads), dtype=np.int64)
    sizes = {}
    for counter in ROW_COUNTERS:
        values = heads["idx"][counter].astype(np.int64)
        limit = getattr(limits, counter)
        sizes[counter] = max(int(values.max()) + 1, 0 if limit is None else limit.maximum + 1)
        row = row * sizes[counter] + values
    return row, ContrastCounters(sizes)


def _user_parameters(header: xsd.ismrmrdHeader) -> tuple[dict[str, list[float]], dict[str, str]]:
    """Numeric user parameters (repeated names collected in order) and strings (first value)."""
    numbers: dict[str, list[float]] = {}
    strings: dict[str, str] = {}
    params = header.userParameters
    if params is not None:
        for p in [*params.userParameterDouble, *params.userParameterLong]:
            numbers.setdefault(p.name, []).append(p.value)
        for s in params.userParameterString:
            strings.setdefault(s.name, s.value)
    return numbers, strings


def _sidecar_numbers(sidecar: Sidecar, key: str) -> np.ndarray:
    """A sidecar entry (number or list of numbers) as ``[n]`` float64."""
    value = sidecar.values[key]
    items = value if isinstance(value, list | tuple) else [value]
    if not items or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in items):
        _fail(*sidecar.place(key), f"expected a number or a list of numbers, found {value!r}")
    return np.asarray(items, dtype=np.float64)


def _per_row(
    values: np.ndarray,
    counters: ContrastCounters,
    counter: str | None,
    preferred: str | None,
    place: tuple[str, str],
    key: str,
) -> np.ndarray:
    """A value list as one value per contrast row ``[n_rows]``.

    One value is broadcast. With ``counter`` (the sidecar's ``[counters]`` choice) the list
    runs over that counter's values (or over the rows, ``"row"``). Otherwise a list with one
    value per row is taken as is, then a list as long as the ``preferred`` counter runs over
    it, then over the one counter of that size; several counters of that size are ambiguous.
    ``place`` is the ``(source, field)`` named in errors.
    """
    n, n_rows = len(values), counters.n_rows
    sizes = ", ".join(f"{c} {s}" for c, s in counters.sizes.items())
    if counter is not None:
        size = n_rows if counter == "row" else counters.sizes[counter]
        if n not in (1, size):
            what = f"per contrast row ({n_rows})" if counter == "row" else f"per {counter} ({size})"
            _fail(
                *place,
                f"expected one value or one {what}, as sidecar[counters][{key}] says, found {n}",
            )
        if n == 1:
            return np.full(n_rows, values[0])
        return values if counter == "row" else values[counters.values(counter)]
    if n == 1:
        return np.full(n_rows, values[0])
    if n == n_rows:
        return values
    if preferred is not None and counters.sizes[preferred] == n:
        return values[counters.values(preferred)]
    matches = [c for c, size in counters.sizes.items() if size == n]
    if len(matches) == 1:
        return values[counters.values(matches[0])]
    if matches:
        _fail(
            *place,
            f"found {n} values, as many as the values of counters {' and '.join(matches)}; "
            f'say which in the sidecar, e.g. [counters] {key} = "{matches[0]}"',
        )
    _fail(
        *place,
        f"expected one value, one per contrast row ({n_rows}) or one per value of a counter "
        f"({sizes}), found {n}",
    )


def _in_si(name: str, values: np.ndarray, unit: str | None, place: tuple[str, str]) -> np.ndarray:
    """Column ``name``'s values given in ``unit`` (None: a count), in SI units, after checking
    that they are plausible (:data:`~lorein.data.problem.SEQUENCE_RANGES`); ``place`` is the
    ``(source, field)`` named when they are not."""
    if unit is None:
        return values
    implausible = sequence_range_error(name, values, unit)
    if implausible is not None:
        _fail(*place, implausible)
    return values * UNITS[unit][1]


def _resolve_column(
    name: str,
    sidecar: Sidecar,
    user: Mapping[str, list[float]],
    sequence: xsd.sequenceParametersType | None,
    counters: ContrastCounters,
    source: str,
    fields: RawFields,
) -> np.ndarray:
    """One contrast-table column ``[n_rows]`` float64 in SI units, from the first source found,
    its values checked for plausibility in the unit that source gives them."""
    spec = _COLUMN_SOURCES[name]
    key = spec.sidecar_key
    n_rows = counters.n_rows
    counter = sidecar.values.get("counters", {}).get(key)
    if key in sidecar.values:
        place = sidecar.place(key)
        values = _per_row(_sidecar_numbers(sidecar, key), counters, counter, None, place, key)
        return _in_si(name, values, spec.unit, place)
    if spec.user_parameter in user:
        values = np.asarray(user[spec.user_parameter], dtype=np.float64)
        where = f"{fields.header} userParameters/{spec.user_parameter}"
        if len(values) != n_rows:
            _fail(
                source,
                where,
                f"expected one value per contrast ({n_rows}), found {len(values)}; give "
                f"{key} in the TOML sidecar, e.g. {spec.example}",
            )
        return _in_si(name, values, SI_UNITS.get(name), (source, where))
    header_values: list[float] = []
    if sequence is not None and spec.header_field is not None:
        header_values = getattr(sequence, spec.header_field)
    if header_values:
        values = np.asarray(header_values, dtype=np.float64)
        place = (source, f"{fields.header} sequenceParameters/{spec.header_field}")
        values = _per_row(values, counters, counter, spec.header_counter, place, key)
        return _in_si(name, values, spec.unit, place)
    field = (
        f"sequenceParameters/{spec.header_field}"
        if spec.header_field
        else f"userParameters/{spec.user_parameter}"
    )
    _fail(
        source,
        f"{fields.header} {field}",
        f"expected {name} of {n_rows} contrasts, found none; give {key} in the TOML sidecar "
        f"as one value, one per contrast row ({n_rows}) or one per value of a counter, e.g. "
        f"{spec.example}",
    )


def _signal_model(
    argument: str | None,
    sidecar: Sidecar,
    strings: Mapping[str, str],
    source: str,
    fields: RawFields,
) -> str:
    given = sidecar.values.get("signal_model")
    model = argument or given or strings.get(SIGNAL_MODEL_PARAMETER)
    known = ", ".join(SIGNAL_MODELS)
    if model is None:
        _fail(
            source,
            f"{fields.header} userParameters/{SIGNAL_MODEL_PARAMETER}",
            f"expected the signal model, found none; pass --signal-model (one of {known}) or "
            f'give signal_model = "{SIGNAL_MODELS[0]}" in the TOML sidecar',
        )
    if model not in SIGNAL_MODELS:
        from_sidecar = given is not None and not argument
        place = sidecar.place("signal_model") if from_sidecar else (source, "signal_model")
        _fail(*place, f"expected one of {known}, found {model!r}")
    return model


def _prewhiten(raw: RawLines, source: str, fields: RawFields) -> np.ndarray:
    """Whiten the coil data with the noise scans, scaled to the imaging dwell time."""
    dwell = np.unique(raw.heads["sample_time_us"])
    imaging_dwell = float(dwell[0]) if len(dwell) == 1 else 0.0
    scaled = []
    for samples, noise_dwell in raw.noise:
        # noise variance is proportional to bandwidth = 1 / dwell time
        known = imaging_dwell > 0 and noise_dwell > 0
        scaled.append(samples * math.sqrt(noise_dwell / imaging_dwell) if known else samples)
    try:
        w = noise_whitening_matrix(np.concatenate(scaled, axis=1))
    except ValueError as e:
        _fail(
            source,
            f"{fields.data} (noise acquisitions)",
            f"expected noise scans with a positive definite covariance: {e}; "
            "pass noise_prewhitening=False (lorein import --no-prewhitening) to import without "
            "whitening",
        )
    whitened = np.einsum("ij,ljx->lix", w, raw.kspace.astype(np.complex128))
    return whitened.astype(np.complex64)


def _remove_oversampling(kspace: np.ndarray, nx: int) -> np.ndarray:
    """``[n, coils, N]`` readouts -> central ``nx`` image columns, back in k-space (orthonormal)."""
    n_samples = kspace.shape[-1]
    image = centered_ifft(torch.from_numpy(kspace), dim=(-1,))
    start = n_samples // 2 - nx // 2
    return centered_fft(image[..., start : start + nx], dim=(-1,)).numpy()


def _geometry_from_heads(heads: np.ndarray, source: str, fields: RawFields) -> _Geometry:
    """Geometry of the first imaging line; unset (zero) directions default to the LPS axes."""
    first = heads[0]
    directions = np.stack([first[k] for k in ("read_dir", "phase_dir", "slice_dir")])
    directions = directions.astype(np.float64)
    norms = np.linalg.norm(directions, axis=1)
    if not norms.any():
        warnings.warn(
            f"{source}: read_dir, phase_dir and slice_dir are unset; assuming the LPS axes "
            "(x to patient left, y posterior, z superior)",
            stacklevel=3,
        )
        directions, norms = np.eye(3), np.ones(3)
    if not norms.all():
        _fail(
            source,
            f"{fields.data}[0] read_dir/phase_dir/slice_dir",
            f"expected unit direction cosines, found {directions.tolist()}",
        )
    return _Geometry(
        position=first["position"].astype(np.float64), directions=directions / norms[:, None]
    )


def encoded_space(
    header: xsd.ismrmrdHeader, source: str, fields: RawFields
) -> tuple[xsd.encodingType, tuple[float, float, float]]:
    """The header's one Cartesian encoding and its voxel size [mm] (field of view / matrix)."""
    if not header.encoding:
        _fail(source, f"{fields.header} encoding", "expected one encoding, found none")
    encoding = header.encoding[0]
    if encoding.trajectory != xsd.trajectoryType.CARTESIAN:
        _fail(
            source,
            f"{fields.header} encoding/trajectory",
            f"expected cartesian, found {encoding.trajectory.value}",
        )
    encoded = encoding.encodedSpace.matrixSize
    fov = encoding.encodedSpace.fieldOfView_mm
    n_encoded = (encoded.x, encoded.y, encoded.z)
    if min(fov.x, fov.y, fov.z) <= 0 or min(n_encoded) < 1:
        _fail(
            source,
            f"{fields.header} encoding/encodedSpace",
            f"expected positive matrix and field of view [mm], found matrix {n_encoded}, "
            f"fieldOfView_mm ({fov.x}, {fov.y}, {fov.z})",
        )
    return encoding, (fov.x / encoded.x, fov.y / encoded.y, fov.z / encoded.z)


@dataclass(frozen=True)
class ImportedProblem:
    """An imported problem and the raw-data counters of its contrast rows.

    Attributes
    ----------
    problem
        The validated problem.
    counters
        Counter values of each contrast row (:class:`ContrastCounters`).
    """

    problem: Problem
    counters: ContrastCounters

    def provenance(self) -> dict[str, np.ndarray]:
        """Root attributes ``counter_<name>`` (int32 ``[n_contrasts]``) of the counters that
        vary, for the problem file; ``lorein info`` shows them in the contrast table."""
        return {
            f"{COUNTER_ATTR_PREFIX}{name}": v.astype(np.int32)
            for name, v in self.counters.varying().items()
        }


COUNTER_ATTR_PREFIX = "counter_"
"""Problem-file root attributes ``counter_<name>``: the raw-data counter value of each contrast
row (int32 ``[n_contrasts]``), written by ``lorein import`` for the counters that vary."""


def problem_from_lines(
    header: xsd.ismrmrdHeader,
    raw: RawLines,
    *,
    source: str,
    fields: RawFields = ISMRMRD_FIELDS,
    signal_model: str | None = None,
    sidecar: Mapping[str, Any] | None = None,
    sidecar_origin: Mapping[str, str] | None = None,
    remove_oversampling: bool = True,
    noise_prewhitening: bool = True,
) -> ImportedProblem:
    """Build a validated problem from an ISMRMRD header and the file's imaging lines.

    Shared by every raw-data reader (ISMRMRD, Siemens twix): counters map to ky, kz and
    contrast rows as in the module docstring, sequence parameters come from the sidecar, the
    ``lorein.*`` user parameters or ``sequenceParameters``, noise scans whiten the coils,
    readout oversampling is removed and the geometry becomes the RAS affine. Every sequence
    parameter, wherever it comes from, must be plausible
    (:data:`~lorein.data.problem.SEQUENCE_RANGES`). Arguments as in :func:`import_ismrmrd`;
    ``raw`` holds the lines (:func:`collect_lines`), ``fields`` names the file's parts in error
    messages.

    Returns
    -------
    The problem and the counter values of its contrast rows.
    """
    given = _check_sidecar(sidecar, sidecar_origin, source)
    encoding, voxel_size = encoded_space(header, source, fields)
    encoded = encoding.encodedSpace.matrixSize
    numbers, strings = _user_parameters(header)
    model = _signal_model(signal_model, given, strings, source, fields)
    limits = encoding.encodingLimits
    idx = raw.heads["idx"]
    ky = _centred_index(
        idx["kspace_encode_step_1"],
        encoded.y,
        limits.kspace_encoding_step_1,
        "step_1",
        source,
        fields,
    )
    kz = _centred_index(
        idx["kspace_encode_step_2"],
        encoded.z,
        limits.kspace_encoding_step_2,
        "step_2",
        source,
        fields,
    )
    contrast, counters = _contrast_rows(raw.heads, limits)
    columns = {
        name: _resolve_column(
            name, given, numbers, header.sequenceParameters, counters, source, fields
        )
        for name in REQUIRED_COLUMNS[model]
    }
    segment = columns.get("segment")
    if segment is not None and not np.array_equal(segment, np.round(segment)):
        _fail(*given.place("segment"), f"expected whole readout numbers, found {segment.tolist()}")
    table = ContrastTable(
        **{
            name: torch.from_numpy(
                np.round(c).astype(np.int64) if name == "segment" else c.astype(np.float32)
            )
            for name, c in columns.items()
        }
    )

    kspace = raw.kspace
    if noise_prewhitening and raw.noise:
        kspace = _prewhiten(raw, source, fields)
    nx = encoded.x
    recon_nx = encoding.reconSpace.matrixSize.x
    if remove_oversampling and recon_nx < nx:
        kspace, nx = _remove_oversampling(kspace, recon_nx), recon_nx
    matrix = (nx, encoded.y, encoded.z)
    geometry = _geometry_from_heads(raw.heads, source, fields)
    problem = Problem(
        signal_model=model,
        kspace=torch.from_numpy(np.ascontiguousarray(kspace, dtype=np.complex64)),
        ky=torch.from_numpy(ky),
        kz=torch.from_numpy(kz),
        contrast=torch.from_numpy(contrast),
        contrasts=table,
        matrix=matrix,
        voxel_size=voxel_size,
        affine=_affine_from_geometry(geometry, matrix, voxel_size),
        source=source,
    )
    validate_problem(problem)
    return ImportedProblem(problem, counters)


def read_ismrmrd(
    path: str | os.PathLike[str],
    *,
    signal_model: str | None = None,
    sidecar: Mapping[str, Any] | None = None,
    sidecar_origin: Mapping[str, str] | None = None,
    remove_oversampling: bool = True,
    noise_prewhitening: bool = True,
) -> ImportedProblem:
    """:func:`import_ismrmrd`, with the counter values of the contrast rows."""
    source = str(path)
    _check_sidecar(sidecar, sidecar_origin, source)
    with open_file(path, source, "an ISMRMRD HDF5 file") as f:
        header = _read_header(f, source)
        encoding, _ = encoded_space(header, source, ISMRMRD_FIELDS)
        raw = _read_acquisitions(f, encoding.encodedSpace.matrixSize.x, source)
    return problem_from_lines(
        header,
        raw,
        source=source,
        signal_model=signal_model,
        sidecar=sidecar,
        sidecar_origin=sidecar_origin,
        remove_oversampling=remove_oversampling,
        noise_prewhitening=noise_prewhitening,
    )


def import_ismrmrd(
    path: str | os.PathLike[str],
    *,
    signal_model: str | None = None,
    sidecar: Mapping[str, Any] | None = None,
    sidecar_origin: Mapping[str, str] | None = None,
    remove_oversampling: bool = True,
    noise_prewhitening: bool = True,
) -> Problem:
    """Read Cartesian ISMRMRD raw data (3D, or 2D: one slice) as a validated problem.

    Imaging lines are all acquisitions except noise scans (``ACQ_IS_NOISE_MEASUREMENT``) and
    navigator, phase-correction, feedback, dummy-scan, surface-coil-correction and
    phase-stabilisation data; calibration lines (``ACQ_IS_PARALLEL_CALIBRATION`` and
    ``..._AND_IMAGING``) are imaging lines, duplicates included, in file order. Counters map to
    ky, kz and contrast rows as in the module docstring. ``discard_pre`` / ``discard_post``
    samples are dropped; the rest must be the encoded readout (``encodedSpace`` x).

    Parameters
    ----------
    path
        ISMRMRD HDF5 file (group ``dataset``).
    signal_model
        A name of :data:`~lorein.physics.models.registry.SIGNAL_MODELS`; default the sidecar's
        ``signal_model``, then the file's ``lorein.signal_model`` user parameter.
    sidecar
        Parsed TOML sidecar: keys :data:`SIDECAR_KEYS`; ``flip_angle_deg`` [deg],
        ``echo_time_ms``, ``repetition_time_ms``, ``prep_time_ms`` [ms], ``segment`` (from 1),
        each one number for all contrasts, a list with one per contrast row, or a list with
        one per value of a counter (the ``counters`` table names it, else the list's length:
        the one counter with that many values). A sidecar value overrides the file's. Each
        value must be plausible (:data:`~lorein.data.problem.SEQUENCE_RANGES`: a TE in seconds
        under ``echo_time_ms`` or a flip angle in radians under ``flip_angle_deg`` is refused),
        as must the file's own.
    sidecar_origin
        Where each sidecar key was given (``"seq.toml"``, ``"study.toml [import]"``), named
        with the key in errors; a key without one is named ``PATH: sidecar[KEY]``.
    remove_oversampling
        When the encoded readout is longer than ``reconSpace`` x (e.g. 2x oversampling), go to
        image space along x (centred orthonormal FFT), keep the central ``reconSpace`` x
        columns and go back; the voxel size is unchanged. With False the problem keeps the
        encoded readout (nx = ``encodedSpace`` x).
    noise_prewhitening
        When noise scans are present, estimate the coil noise covariance from them (scaled by
        noise dwell time / imaging dwell time when both ``sample_time_us`` are set) and whiten
        all lines with its inverse Cholesky factor (:func:`noise_whitening_matrix`).

    Returns
    -------
    The problem (``source`` = ``path``, no coil maps), ``kspace`` complex64
    ``[n_lines, n_coils, nx]``.

    Raises
    ------
    ProblemFileError
        One line naming the file, the field, what was expected and how to fix it: missing file,
        HDF5 file without the ISMRMRD group, unparsable header, non-Cartesian or unsupported
        lines (partial echo, reversed, several slices), a sequence parameter found nowhere
        (give it in the sidecar), a value list whose length fits no counter, singular noise
        covariance, or a result that breaks the problem-file contract.
    """
    return read_ismrmrd(
        path,
        signal_model=signal_model,
        sidecar=sidecar,
        sidecar_origin=sidecar_origin,
        remove_oversampling=remove_oversampling,
        noise_prewhitening=noise_prewhitening,
    ).problem
