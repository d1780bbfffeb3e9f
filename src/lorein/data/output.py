"""The output folder of a reconstruction (DESIGN.md section 3): maps.h5, NIfTI maps, report.json.

Layout of ``OUT/``:

- ``maps.h5``: float32 ``[nz, ny, nx]`` datasets named as in the problem file's ``truth/`` group
  (SI units), plus ``mask`` when the method estimated one.
- ``nifti/``: ``T1map.nii.gz``, ``T2map.nii.gz``, ``T2starmap.nii.gz``, ``M0map.nii.gz``,
  ``B0map.nii.gz`` (float32, seconds / Hz / arbitrary units, affine from the problem) each with a
  JSON sidecar naming its units.
- ``nifti/weighted_mag.nii.gz``, ``nifti/weighted_phase.nii.gz`` (only with ``lorein recon
  --save-images``, for methods that return weighted images): the reconstructed contrast-weighted
  images, float32 ``[nx, ny, nz, T]`` (the maps' orientation and affine, one volume per row of the
  problem's contrast table), magnitude in arbitrary units and phase in rad (-pi, pi]; their JSON
  sidecars list per volume ``EchoTime`` [s], ``FlipAngle`` [deg], ``RepetitionTime`` [s] and, for
  ``t2ir_gre``, ``T2PrepTime`` [s] and ``Segment`` (readout index from 1). An addition to the
  DESIGN.md contract: without the option the folder is as before.
- ``report.json``: method, configuration, seed, device, versions, wall time, peak memory,
  iterations, losses, ``saved_images``.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import nibabel as nib
import numpy as np
import torch

from lorein import __version__
from lorein.physics.contrasts import ContrastTable

NIFTI_NAMES: dict[str, tuple[str, str]] = {
    "T1": ("T1map", "s"),
    "T2": ("T2map", "s"),
    "T2star": ("T2starmap", "s"),
    "M0": ("M0map", "arbitrary"),
    "B0": ("B0map", "Hz"),
}
"""Map name -> (BIDS-style file stem, units)."""

CONTRAST_SIDECAR: dict[str, tuple[str, float, str]] = {
    "echo_time": ("EchoTime", 1.0, "s"),
    "flip_angle": ("FlipAngle", 180 / math.pi, "deg"),
    "repetition_time": ("RepetitionTime", 1.0, "s"),
    "prep_time": ("T2PrepTime", 1.0, "s"),
    "segment": ("Segment", 1.0, "readout index from 1"),
}
"""Contrast-table column -> (key in the weighted images' sidecars, factor from SI, unit); real
values are written with 6 significant digits."""


@dataclass
class Maps:
    """What every reconstruction method returns.

    Attributes
    ----------
    values
        Map name (``M0``, ``T1``, ``T2``, ``T2star``, ``B0``, ``phase0``, ...) -> float32
        ``[nz, ny, nx]`` in SI units.
    mask
        Optional ``[nz, ny, nx]`` uint8 mask estimated by the method.
    images
        Optional complex64 ``[T, nz, ny, nx]`` weighted images.
    coils
        Optional complex64 ``[n_coils, nz, ny, nx]`` estimated coil sensitivities.
    """

    values: dict[str, torch.Tensor]
    mask: torch.Tensor | None = None
    images: torch.Tensor | None = None
    coils: torch.Tensor | None = None
    extras: dict[str, Any] = field(default_factory=dict)


def to_nifti_array(x: torch.Tensor) -> np.ndarray:
    """``[nz, ny, nx]`` -> ``[nx, ny, nz]`` (or ``[T, nz, ny, nx]`` -> ``[nx, ny, nz, T]``) float32
    array: NIfTI's (i, j, k) = (x, y, z), volumes last."""
    return np.ascontiguousarray(x.detach().cpu().numpy().astype(np.float32).transpose())


def write_nifti(path: Path, x: torch.Tensor, affine: np.ndarray, sidecar: dict[str, Any]) -> None:
    """Write a map ``[nz, ny, nx]`` or volumes ``[T, nz, ny, nx]`` as NIfTI-1 (float32, RAS affine
    in mm, qform and sform set) with a JSON sidecar."""
    img = nib.Nifti1Image(to_nifti_array(x), affine)
    img.header.set_xyzt_units(xyz="mm")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, str(path))
    sidecar_path = path.with_name(path.name.removesuffix(".nii.gz") + ".json")
    sidecar_path.write_text(json.dumps(sidecar, indent=2) + "\n")


def weighted_image_sidecars(
    contrasts: ContrastTable, method: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """JSON sidecars of ``weighted_mag`` and ``weighted_phase``: units, the contrast of each
    volume (:data:`CONTRAST_SIDECAR`), method and software."""
    table: dict[str, Any] = {}
    units: dict[str, str] = {}
    for name, column in contrasts.columns().items():
        key, factor, unit = CONTRAST_SIDECAR[name]
        values = column.tolist()
        if column.is_floating_point():
            values = [float(f"{v * factor:.6g}") for v in values]
        table[key] = values
        units[key] = unit
    common = {
        "Volumes": contrasts.n_contrasts,
        **table,
        "ContrastUnits": units,
        "EstimationMethod": method,
        "Software": f"lorein {__version__}",
    }
    return (
        {"ImageComponent": "magnitude", "Units": "arbitrary", **common},
        {"ImageComponent": "phase", "Units": "rad", **common},
    )


def write_output(
    out: Path,
    maps: Maps,
    affine: np.ndarray,
    report: dict[str, Any],
    method: str,
    contrasts: ContrastTable | None = None,
) -> None:
    """Write the output folder atomically: into a temporary sibling, then renamed to ``out``.

    An existing ``out`` is replaced only once the new folder is complete, so a failure leaves
    either the old folder or nothing, never a partial one. Files already in ``out`` that this
    function does not write (e.g. checkpoints, figures) are carried over; ``nifti/`` is written
    anew. With ``contrasts`` (the problem's contrast table), the weighted images ``maps.images``,
    if any, are written too: ``nifti/weighted_mag.nii.gz`` and ``nifti/weighted_phase.nii.gz``.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        if out.exists():
            shutil.copytree(out, tmp, dirs_exist_ok=True)
        with h5py.File(tmp / "maps.h5", "w") as f:
            f.attrs["method"] = method
            f.attrs["lorein_version"] = __version__
            for name, value in maps.values.items():
                f.create_dataset(name, data=value.detach().cpu().float().numpy())
            if maps.mask is not None:
                f.create_dataset("mask", data=maps.mask.detach().cpu().numpy().astype(np.uint8))
        nifti = tmp / "nifti"
        shutil.rmtree(nifti, ignore_errors=True)
        nifti.mkdir()
        for name, (stem, units) in NIFTI_NAMES.items():
            if name not in maps.values:
                continue
            sidecar = {
                "Units": units,
                "MapName": name,
                "EstimationMethod": method,
                "Software": f"lorein {__version__}",
            }
            write_nifti(nifti / f"{stem}.nii.gz", maps.values[name], affine, sidecar)
        if contrasts is not None and maps.images is not None:
            magnitude, phase = weighted_image_sidecars(contrasts, method)
            write_nifti(nifti / "weighted_mag.nii.gz", maps.images.abs(), affine, magnitude)
            write_nifti(nifti / "weighted_phase.nii.gz", maps.images.angle(), affine, phase)
        (tmp / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
