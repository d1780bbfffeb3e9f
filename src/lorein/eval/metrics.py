"""Map quality metrics against the ground truth, as the paper reports them.

NRMSE of a map inside the truth mask, with T1, T2 and T2* capped to 0-3.5 s, 0-0.2 s and
0-0.1 s (paper section III.F) so that CSF's long relaxation times do not dominate; M0 after a
least-squares scale (its absolute scale is not identifiable); B0 as an RMSE in Hz. Only evaluation
code calls these: reconstructions never see the truth.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812

CAPS: dict[str, tuple[float, float]] = {
    "T1": (0.0, 3.5),
    "T2": (0.0, 0.2),
    "T2star": (0.0, 0.1),
}
"""Value range [s] each relaxation map is clipped to before the NRMSE (paper section III.F)."""

PURE_THRESHOLD = 0.9
"""Smallest purity (fraction of a voxel's fine-grid samples that carry its dominant tissue label,
``truth/purity``) of the voxels of the ``pure`` region (:func:`pure_mask`)."""


def capped(name: str, x: torch.Tensor) -> torch.Tensor:
    """``x`` clipped to the paper's range for map ``name`` (unchanged for uncapped maps)."""
    if name in CAPS:
        lo, hi = CAPS[name]
        return x.clamp(lo, hi)
    return x


def nrmse(x: torch.Tensor, ref: torch.Tensor, mask: torch.Tensor) -> float:
    """``||mask (x - ref)|| / ||mask ref||``."""
    m = mask.bool()
    return float((x[m] - ref[m]).norm() / ref[m].norm().clamp_min(1e-30))


def least_squares_scale(x: torch.Tensor, ref: torch.Tensor, mask: torch.Tensor) -> float:
    """Scale ``s`` minimising ``||mask (s x - ref)||``."""
    m = mask.bool()
    return float((x[m] * ref[m]).sum() / (x[m] * x[m]).sum().clamp_min(1e-30))


def map_error(name: str, x: torch.Tensor, ref: torch.Tensor, mask: torch.Tensor) -> float:
    """The paper's error of map ``name``: capped NRMSE, scaled NRMSE for M0, RMSE [Hz] for B0.

    Parameters
    ----------
    name
        ``M0``, ``T1``, ``T2``, ``T2star``, ``B0`` or ``phase0``.
    x, ref
        ``[nz, ny, nx]`` float32 reconstruction and truth (SI units).
    mask
        ``[nz, ny, nx]`` truth mask.
    """
    m = mask.bool()
    if name == "B0":
        return float((x[m] - ref[m]).pow(2).mean().sqrt())
    if name == "phase0":
        diff = torch.angle(torch.polar(torch.ones_like(x[m]), x[m] - ref[m]))
        return float(diff.pow(2).mean().sqrt())
    if name == "M0":
        return nrmse(least_squares_scale(x, ref, mask) * x, ref, mask)
    return nrmse(capped(name, x), capped(name, ref), mask)


def constant_map(name: str, ref: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The constant map with the lowest :func:`map_error` against ``ref``: everywhere the mean of
    the capped truth inside ``mask`` (for M0 any constant would do, after its scale).

    An oracle reference, not a reconstruction: a method whose error is above this map's tells
    less about the anatomy than the truth's mean value alone (``phase0`` is not covered).
    """
    m = mask.bool()
    return torch.full_like(ref, float(capped(name, ref)[m].mean()))


def interior_mask(labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Voxels of ``mask`` whose 26 neighbours (8 in one slice) all carry their tissue label.

    The phantoms are rendered on a finer grid than the reconstruction, so a voxel on a tissue
    boundary holds a mixture whose signal no single set of parameters describes; there even a
    fully sampled, noiseless voxel-wise fit misses the truth (sim1-small: capped T1 NRMSE 0.32 in
    the mask, 0.05 in the interiors). The error over the interiors is free of that floor and
    separates methods by what they recover of each tissue. Voxels on the volume's faces are never
    interior: their outer neighbours are unknown. A single slice (``nz = 1``, a 2D acquisition)
    has no neighbours in z: there the 8 in-plane neighbours decide. (Before the simulation
    rendered a margin around the slab, the band-limited phantom also wrapped around in z there:
    sim1-small, fully sampled fit, T2* in white-matter interiors, relative RMS error 0.41 in the
    first slice, 0.06-0.14 in the inner ones.)

    Parameters
    ----------
    labels
        ``[nz, ny, nx]`` integer tissue labels of the truth.
    mask
        ``[nz, ny, nx]`` truth mask.

    Returns
    -------
    ``[nz, ny, nx]`` bool.
    """
    lab = labels.float()
    outside = float(lab.min()) - 1  # a label no voxel has
    padded = F.pad(lab, (1, 1, 1, 1, 1, 1), value=outside)
    nz, ny, nx = labels.shape
    same = mask.bool().clone()
    for dz in range(3) if nz > 1 else (1,):
        for dy in range(3):
            for dx in range(3):
                same &= padded[dz : dz + nz, dy : dy + ny, dx : dx + nx] == lab
    return same


def pure_mask(purity: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Voxels of ``mask`` whose purity is at least :data:`PURE_THRESHOLD`: pure tissue.

    Unlike :func:`interior_mask`, which asks the 26 neighbours' labels at the reconstruction's
    voxel centres, purity counts the fine-grid samples the simulation rendered inside the voxel
    itself, so a voxel that holds one tissue is pure even next to a boundary or on the volume's
    faces. A voxel-wise fit of fully sampled, noiseless data is close to the truth there
    (sim1-small, seed 0: capped T1 / T2* NRMSE 0.05 / 0.07 in the pure voxels, 0.29 / 0.22 in the
    mask), so the error over them is what a method recovers of the tissue, not the partial-volume
    floor.

    Parameters
    ----------
    purity
        ``[nz, ny, nx]`` float purity of the truth, in ``[0, 1]``.
    mask
        ``[nz, ny, nx]`` truth mask.

    Returns
    -------
    ``[nz, ny, nx]`` bool.
    """
    return mask.bool() & (purity >= PURE_THRESHOLD)


def error_map(name: str, x: torch.Tensor, ref: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Voxel-wise signed error on the same footing as :func:`map_error` (zero outside mask)."""
    if name == "M0":
        x = least_squares_scale(x, ref, mask) * x
    diff = capped(name, x) - capped(name, ref)
    return diff * mask.to(diff.dtype)


def ssim(
    x: torch.Tensor, ref: torch.Tensor, mask: torch.Tensor, data_range: float, sigma: float = 1.5
) -> float:
    """Mean structural similarity of 2D slices (Gaussian window), averaged inside the mask.

    Parameters
    ----------
    x, ref
        ``[nz, ny, nx]`` maps (capped beforehand where the metric should be).
    mask
        ``[nz, ny, nx]``; the SSIM map is averaged over mask voxels.
    data_range
        Dynamic range of the map (e.g. the cap's width).
    sigma
        Standard deviation of the Gaussian window [voxels].
    """
    radius = int(3.5 * sigma + 0.5)
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    g = torch.exp(-(t**2) / (2 * sigma**2))
    g = (g / g.sum()).to(torch.float32)

    def blur(a: torch.Tensor) -> torch.Tensor:
        a = a.unsqueeze(1)  # [nz, 1, ny, nx]
        a = F.conv2d(F.pad(a, (radius, radius, 0, 0), mode="reflect"), g.view(1, 1, 1, -1))
        a = F.conv2d(F.pad(a, (0, 0, radius, radius), mode="reflect"), g.view(1, 1, -1, 1))
        return a.squeeze(1)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    x, ref = x.float(), ref.float()
    mx, mr = blur(x), blur(ref)
    vx = blur(x * x) - mx * mx
    vr = blur(ref * ref) - mr * mr
    cov = blur(x * ref) - mx * mr
    s = ((2 * mx * mr + c1) * (2 * cov + c2)) / ((mx * mx + mr * mr + c1) * (vx + vr + c2))
    return float(s[mask.bool()].mean())


def ssim_of_map(name: str, x: torch.Tensor, ref: torch.Tensor, mask: torch.Tensor) -> float:
    """SSIM of map ``name`` on the capped maps (M0 after the least-squares scale)."""
    if name == "M0":
        x = least_squares_scale(x, ref, mask) * x
    xc, rc = capped(name, x), capped(name, ref)
    lo, hi = CAPS.get(name, (float(rc[mask.bool()].min()), float(rc[mask.bool()].max())))
    return ssim(xc, rc, mask, data_range=max(hi - lo, 1e-12))
