"""Evaluate a reconstruction's maps against a problem file's ground truth (evaluation only)."""

from __future__ import annotations

from pathlib import Path

import h5py
import torch

from lorein.data.hdf5_input import fail, get, member_names, open_file, read_dataset
from lorein.data.problem import Truth
from lorein.eval.metrics import constant_map, interior_mask, map_error, pure_mask, ssim_of_map
from lorein.eval.tables import error_key
from lorein.sim.phantom import TISSUES

EVALUATED = ("M0", "T1", "T2", "T2star", "B0")
"""Maps scored, when both the reconstruction and the truth have them."""


def read_maps(out: Path) -> dict[str, torch.Tensor]:
    """The maps of an output folder's ``maps.h5`` (float32 ``[nz, ny, nx]``)."""
    path = Path(out) / "maps.h5"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no maps.h5 in the output folder (run 'lorein recon')")
    source = str(path)
    with open_file(path, source, "the maps of a reconstruction") as f:
        names = member_names(f, source, "/")
        datasets = [n for n in names if isinstance(get(f, n, source, f"/{n}"), h5py.Dataset)]
        arrays = {name: read_dataset(f, name, source, f"/{name}") for name in datasets}
    maps = {}
    for name, array in arrays.items():
        if array.ndim != 3:
            continue
        if array.dtype.kind not in "biuf":
            fail(source, f"/{name}", f"expected a real map, found dtype {array.dtype}")
        maps[name] = torch.from_numpy(array.astype(array.dtype.newbyteorder("="), copy=False))
    return maps


def evaluate_maps(maps: dict[str, torch.Tensor], truth: Truth) -> dict[str, dict[str, float]]:
    """Per map: the paper's error (capped NRMSE; M0 after a least-squares scale; B0 RMSE [Hz])
    and SSIM, inside the truth mask; with purity in the truth, also the same error over its
    pure-tissue voxels (:func:`pure_voxels`); with tissue labels, over the tissue interiors
    (:func:`~lorein.eval.metrics.interior_mask`) and over the mask without its CSF voxels
    (:func:`without_csf_voxels`).

    Returns
    -------
    ``{map: {"nrmse" or "rmse_hz": value, "ssim": value[, "pure": value, "interior": value,
    "without_csf": value]}}``; a region the truth cannot define has no key.
    """
    mask = truth.mask
    regions = {
        "pure": pure_voxels(truth),
        "interior": interior_voxels(truth),
        "without_csf": without_csf_voxels(truth),
    }
    results: dict[str, dict[str, float]] = {}
    for name in EVALUATED:
        ref = getattr(truth, name)
        if name not in maps or ref is None:
            continue
        x = maps[name].float()
        results[name] = {
            error_key(name): map_error(name, x, ref, mask),
            "ssim": ssim_of_map(name, x, ref, mask),
        }
        for key, region in regions.items():
            if region is not None:
                results[name][key] = map_error(name, x, ref, region)
    return results


def pure_voxels(truth: Truth) -> torch.Tensor | None:
    """The truth's pure-tissue voxels (:func:`~lorein.eval.metrics.pure_mask`: purity at least
    :data:`~lorein.eval.metrics.PURE_THRESHOLD`), or None when it has no purity (files written
    before it existed) or no pure voxel."""
    if truth.purity is None:
        return None
    pure = pure_mask(truth.purity, truth.mask)
    return pure if pure.any() else None


def interior_voxels(truth: Truth) -> torch.Tensor | None:
    """The truth's tissue interiors (:func:`~lorein.eval.metrics.interior_mask`), or None when it
    has no labels or no interior voxel."""
    labels = truth.extra.get("labels")
    if labels is None:
        return None
    interior = interior_mask(labels, truth.mask)
    return interior if interior.any() else None


def without_csf_voxels(truth: Truth) -> torch.Tensor | None:
    """The truth mask without its CSF-labelled voxels, or None when the truth has no labels.

    With the relaxation caps of the paper, CSF's T1 (4.2 s in the phantoms, capped at 3.5 s) is
    the largest value in the mask, and a VFA protocol with TR = 46 ms barely encodes it: on
    sim1-small (seed 0) CSF holds 16 % of the mask's voxels but 64-78 % of LoREIN's and SUMMIT's
    squared T1 error at R = 12-48 (docs/BENCHMARKS.md). The error over the rest of the brain
    (grey and white matter, deep grey matter, veins, lesions, boundary voxels included) says how
    well the tissue is mapped.
    """
    labels = truth.extra.get("labels")
    if labels is None:
        return None
    return truth.mask.bool() & (labels != TISSUES["csf"].label)


def constant_map_errors(truth: Truth) -> dict[str, float]:
    """Per map of the truth, the error (:func:`~lorein.eval.metrics.map_error`) of the best
    constant map (:func:`~lorein.eval.metrics.constant_map`): an oracle reference level."""
    errors: dict[str, float] = {}
    for name in EVALUATED:
        ref = getattr(truth, name)
        if ref is not None:
            errors[name] = map_error(name, constant_map(name, ref, truth.mask), ref, truth.mask)
    return errors
