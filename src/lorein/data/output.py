"""The output folder of a reconstruction (DESIGN.md section 3): maps.h5, NIfTI maps, report.json.

Layout of ``OUT/``:

- ``maps.h5``: float32 ``[nz, ny, nx]`` datasets named as in the problem file's ``truth/`` group
  (SI units), plus ``mask`` when the method estimated one.
- ``nifti/``: ``T1map.nii.gz``, ``T2map.nii.gz``, ``T2starmap.nii.gz``, ``M0map.nii.gz``,
  ``B0map.nii.gz`` (float32, seconds / Hz / arbitrary units, affine from the problem) each with a
  JSON sidecar naming its units.
- ``report.json``: method, configuration, seed, device, versions, wall time, peak memory,
  iterations, losses.
"""

from __future__ import annotations

import json
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

NIFTI_NAMES: dict[str, tuple[str, str]] = {
    "T1": ("T1map", "s"),
    "T2": ("T2map", "s"),
    "T2star": ("T2starmap", "s"),
    "M0": ("M0map", "arbitrary"),
    "B0": ("B0map", "Hz"),
}
"""Map name -> (BIDS-style file stem, units)."""


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
    """``[nz, ny, nx]`` tensor -> ``[nx, ny, nz]`` float32 array, NIfTI's (i, j, k) = (x, y, z)."""
    return np.ascontiguousarray(x.detach().cpu().numpy().astype(np.float32).transpose(2, 1, 0))


def write_nifti(path: Path, x: torch.Tensor, affine: np.ndarray, sidecar: dict[str, Any]) -> None:
    """Write one map as NIfTI-1 (float32, RAS affine in mm, qform and sform set) + JSON sidecar."""
    img = nib.Nifti1Image(to_nifti_array(x), affine)
    img.header.set_xyzt_units(xyz="mm")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, str(path))
    sidecar_path = path.with_name(path.name.removesuffix(".nii.gz") + ".json")
    sidecar_path.write_text(json.dumps(sidecar, indent=2) + "\n")


def write_output(
    out: Path, maps: Maps, affine: np.ndarray, report: dict[str, Any], method: str
) -> None:
    """Write the output folder atomically: into a temporary sibling, then renamed to ``out``.

    An existing ``out`` is replaced only once the new folder is complete, so a failure leaves
    either the old folder or nothing, never a partial one. Files already in ``out`` that this
    function does not write (e.g. checkpoints, figures) are carried over.
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
        nifti.mkdir(exist_ok=True)
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
        (tmp / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
