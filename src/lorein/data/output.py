"""The output folder of a reconstruction (DESIGN.md section 3): maps.h5, NIfTI maps, report.json.

Layout of ``OUT/``:

- ``maps.h5``: float32 ``[nz, ny, nx]`` datasets named as in the problem file's ``truth/`` group
  (SI units), the signal model's derived maps (``R2star`` [1/s] for ``megre``), plus ``mask``
  when the method estimated one.
- ``nifti/``: ``T1map.nii.gz``, ``T2map.nii.gz``, ``T2starmap.nii.gz``, ``M0map.nii.gz``,
  ``B0map.nii.gz`` and, for ``megre``, ``R2starmap.nii.gz`` (float32, seconds / Hz / 1/s /
  arbitrary units, affine from the problem; :data:`NIFTI_NAMES`), those the method wrote, each
  with a JSON sidecar naming its units.
- ``nifti/weighted_mag.nii.gz``, ``nifti/weighted_phase.nii.gz`` (only with ``lorein recon
  --save-images``, for methods that return weighted images): the reconstructed contrast-weighted
  images, float32 ``[nx, ny, nz, T]`` (the maps' orientation and affine, one volume per row of the
  problem's contrast table), magnitude in arbitrary units and phase in rad (-pi, pi]; their JSON
  sidecars list per volume ``EchoTime`` [s], ``FlipAngle`` [deg], ``RepetitionTime`` [s] and, for
  ``t2ir_gre``, ``T2PrepTime`` [s] and ``Segment`` (readout index from 1). An addition to the
  DESIGN.md contract: without the option the folder is as before.
- ``report.json``: method, configuration, seed, device, versions, wall time, peak memory,
  iterations, losses, ``saved_images``.
- ``checkpoint.pt`` (:data:`CHECKPOINT`): while a run goes on, and after it with
  ``--keep-checkpoint``.

Publishing (:func:`write_output`) never loses the previous results: the new folder is written
beside ``OUT`` as the hidden ``.OUT.new-XXXXXXXX`` and swapped in by two renames (the previous
folder goes to ``.OUT.old-XXXXXXXX`` and is removed last). A run holds :func:`output_lock`, the
file ``.OUT.lock`` beside ``OUT``, so that two runs never write one folder, and first puts back
what a killed publish left (:func:`recover_output`). Single files beside the results
(``eval.json``, ``figure.png``) are replaced whole (:func:`replacing`).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import socket
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import nibabel as nib
import numpy as np
import torch

from lorein import __version__
from lorein.physics.contrasts import ContrastTable
from lorein.physics.models.base import MAPS

NIFTI_NAMES: dict[str, tuple[str, str]] = {
    name: (info.bids, info.unit) for name, info in MAPS.items() if info.bids is not None
}
"""Map name -> (BIDS-style file stem, units), from :data:`~lorein.physics.models.base.MAPS`."""

CONTRAST_SIDECAR: dict[str, tuple[str, float, str]] = {
    "echo_time": ("EchoTime", 1.0, "s"),
    "flip_angle": ("FlipAngle", 180 / math.pi, "deg"),
    "repetition_time": ("RepetitionTime", 1.0, "s"),
    "prep_time": ("T2PrepTime", 1.0, "s"),
    "segment": ("Segment", 1.0, "readout index from 1"),
}
"""Contrast-table column -> (key in the weighted images' sidecars, factor from SI, unit); real
values are written with 6 significant digits."""

CHECKPOINT = "checkpoint.pt"
"""The checkpoint of a run in its output folder (``lorein recon --resume`` continues from it)."""

LOCK_GRACE_SECONDS = 10.0
"""Age [s] after which a lock file without a readable owner counts as stale (its writer died
between creating and filling it)."""


class OutputLockedError(FileExistsError):
    """Another run holds the lock of the output folder."""


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
    keep_checkpoint: bool = False,
) -> None:
    """Publish the output folder ``out``: written beside it, then swapped in.

    The files go to a hidden sibling ``.OUT.new-XXXXXXXX``, which also gets the entries of the
    previous ``out`` that this function does not write (``eval.json``, figures, ...: hard links,
    copies where the file system has none; ``nifti/`` is written anew), except its checkpoint
    unless ``keep_checkpoint``. Then the previous ``out`` is renamed ``.OUT.old-XXXXXXXX``, the new
    folder renamed to ``out`` and the old one removed (a failure to remove it is a warning; the next
    publish removes it). A failure at any earlier step leaves the previous ``out`` in place, or puts
    it back; a process killed between the renames leaves it in ``.OUT.old-*``, which
    :func:`recover_output`, run first here, restores. The caller holds :func:`output_lock` where
    another process might publish ``out`` too.

    With ``contrasts`` (the problem's contrast table), the weighted images ``maps.images``, if any,
    are written too: ``nifti/weighted_mag.nii.gz`` and ``nifti/weighted_phase.nii.gz``.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    recover_output(out)
    prefix = f".{out.name}.new-"
    new = Path(tempfile.mkdtemp(prefix=prefix, dir=out.parent))
    try:
        _write_files(new, maps, affine, report, method, contrasts)
        if out.is_dir() and not out.is_symlink():
            _carry_over(out, new, keep_checkpoint)
        _swap(new, out, out.with_name(f".{out.name}.old-{new.name.removeprefix(prefix)}"))
    finally:
        if new.exists():
            shutil.rmtree(new, ignore_errors=True)


def _write_files(
    folder: Path,
    maps: Maps,
    affine: np.ndarray,
    report: dict[str, Any],
    method: str,
    contrasts: ContrastTable | None,
) -> None:
    """``maps.h5``, ``nifti/`` and ``report.json`` of :func:`write_output` into ``folder``."""
    with h5py.File(folder / "maps.h5", "w") as f:
        f.attrs["method"] = method
        f.attrs["lorein_version"] = __version__
        for name, value in maps.values.items():
            f.create_dataset(name, data=value.detach().cpu().float().numpy())
        if maps.mask is not None:
            f.create_dataset("mask", data=maps.mask.detach().cpu().numpy().astype(np.uint8))
    nifti = folder / "nifti"
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
    (folder / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")


def _carry_over(old: Path, new: Path, keep_checkpoint: bool) -> None:
    """Link (or copy) into ``new`` the entries of ``old`` it lacks; the checkpoint only if kept.

    ``old`` is left as it is, so that it stays whole until the swap.
    """
    skipped = {f"{CHECKPOINT}.tmp"} | (set() if keep_checkpoint else {CHECKPOINT})
    for entry in old.iterdir():
        target = new / entry.name
        if entry.name in skipped or target.exists() or target.is_symlink():
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.copytree(entry, target, symlinks=True, copy_function=_link_or_copy)
        else:
            _link_or_copy(entry, target)


def _link_or_copy(source: Path | str, target: Path | str) -> None:
    """Hard-link ``source`` as ``target`` (a symbolic link is recreated; without hard links on
    the file system, a copy). Every file of an output folder is replaced whole, never rewritten
    in place, so the two folders may share files."""
    if os.path.islink(source):
        os.symlink(os.readlink(source), target)
        return
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _swap(new: Path, out: Path, old: Path) -> None:
    """Rename ``out`` (if any) to ``old`` and ``new`` to ``out``, then remove ``old``.

    If ``new`` cannot take ``out``'s place, ``old`` is renamed back to ``out``.
    """
    previous = out.exists() or out.is_symlink()
    if previous:
        os.rename(out, old)
    try:
        os.rename(new, out)
    except BaseException:
        if previous:
            os.rename(old, out)
        raise
    if previous:
        try:
            _remove(old)
        except OSError as err:
            warnings.warn(
                f"published {out}, but could not remove the previous results {old} ({err}); "
                "the next run into it removes them",
                stacklevel=3,
            )


def _remove(path: Path) -> None:
    """Remove a folder tree, or a file or symbolic link."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def recover_output(out: Path) -> None:
    """Clean up after publishes of ``out`` that were killed or failed.

    When ``out`` is missing but a ``.OUT.old-*`` sibling exists (a publish killed between its
    renames; at most one, as every publish recovers first), that previous folder is renamed back
    to ``out``; the other ``.OUT.new-*`` and ``.OUT.old-*`` siblings are removed. Run with
    :func:`output_lock` held (or where no other process publishes ``out``).
    """
    out = Path(out)
    if not out.parent.is_dir():
        return
    pattern = re.compile(rf"\.{re.escape(out.name)}\.(new|old)-[a-z0-9_]+")
    leftovers: dict[Path, str] = {}  # path -> "new" or "old"
    for path in sorted(out.parent.iterdir()):
        match = pattern.fullmatch(path.name)
        if match is not None:
            leftovers[path] = match.group(1)
    olds = [path for path, kind in leftovers.items() if kind == "old"]
    if olds and not (out.exists() or out.is_symlink()):
        os.rename(olds[0], out)
        del leftovers[olds[0]]
    for path in leftovers:
        _remove(path)


@contextmanager
def output_lock(out: Path) -> Iterator[None]:
    """Hold the lock of output folder ``out`` for the block: the file ``.OUT.lock`` beside it.

    The lock file is created exclusively (``O_CREAT | O_EXCL``) and holds ``PID HOST``; it is
    removed when the block ends. A lock whose process is gone (same host, no such pid) is stale
    and taken over.

    Raises
    ------
    OutputLockedError
        One line: another live run (or one on another host) holds the lock.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    path = out.with_name(f".{out.name}.lock")
    _take_lock(path, out)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def _take_lock(path: Path, out: Path) -> None:
    """Create the lock file ``path`` of ``out``, taking over a stale one once."""
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _lock_holder(path)
            if holder is not None:
                raise OutputLockedError(
                    f"{out}: another lorein run ({holder}) is writing it; wait for it to end, "
                    f"or delete {path} if no such run is going"
                ) from None
            path.unlink(missing_ok=True)  # stale: its process is gone
            continue
        with os.fdopen(fd, "w") as f:
            f.write(f"{os.getpid()} {socket.gethostname()}\n")
        return
    raise OutputLockedError(f"{out}: its lock {path} was taken by another run meanwhile")


def _lock_holder(path: Path) -> str | None:
    """Who holds the lock file ``path`` (``"pid N"``, ...), or None when the lock is stale."""
    try:
        fields = path.read_text().split()
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return None  # released meanwhile
    if len(fields) != 2 or not fields[0].isdigit() or int(fields[0]) <= 0:
        return None if age > LOCK_GRACE_SECONDS else "one that is starting"
    pid, host = int(fields[0]), fields[1]
    if host != socket.gethostname():
        return f"pid {pid} on {host}"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, another user's
    return f"pid {pid}"


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A temporary sibling of ``path`` to write in the block; it replaces ``path`` at the end.

    A reader sees the previous file or the new one, never a partial one; after a failure in the
    block ``path`` is untouched and the temporary file removed. The temporary name keeps the
    suffix (``.figure.PID.tmp.png``), so writers that read the format from it work.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through :func:`replacing`."""
    with replacing(path) as tmp:
        tmp.write_text(text)
