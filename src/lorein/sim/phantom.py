"""A 3D digital brain phantom defined in continuous coordinates, rendered on any grid.

The anatomy is a function of position in millimetres, so one seed gives the same head at every
matrix size: the simulation renders it on a finer grid than the reconstruction and the truth on the
target grid (this avoids the inverse crime).

Coordinates are scanner RAS-like, in mm: ``x`` left-right, ``y`` posterior to anterior, ``z``
inferior to superior, origin at the centre of the field of view, which sits at the level of the
basal ganglia and the lateral ventricles. A grid of ``n`` voxels of size ``d`` along an axis has
voxel ``i`` centred at ``(i - n // 2) * d``, the convention of the centred FFT (k-space centre and
image centre at index ``n // 2``), so a grid ``f`` times finer shares its origin with the coarse
one.

Anatomy (values at 3 T, :data:`TISSUES`): head outline with a scalp fat layer and skull; outer
subarachnoid CSF; a cortical grey-matter ribbon of constant thickness that lines the pial envelope
and the clefts cut into it (sulci from the zero set of seeded band-limited noise on the sphere, the
interhemispheric fissure above and in front of / behind the corpus callosum, the Sylvian fissure
with the insula); white matter; caudate, putamen, globus pallidus (iron-rich, short T2*), thalamus;
lateral and third ventricles (the septum pellucidum and the third ventricle are 2-3 mm thin); veins
(superior sagittal and straight sinus, internal cerebral veins, a few cortical veins); a few small
white-matter lesions and perivascular spaces (dots of 2 mm). Maps carry a smooth texture of a few
per cent. ``B0`` is a low-order polynomial plus the dipole fields of air cavities (frontal sinus,
ear canals and mastoids) embedded in locally thickened bone; ``phase0`` is a low-order polynomial.

The anatomy is designed for axial slabs within about 40 mm of the origin (the paper's 64 mm and
56 mm slabs); far below it the brain continues as a smooth blob (no cerebellum or brainstem).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

LARMOR_FREQUENCY_HZ = 42.577478e6 * 3.0
"""Proton Larmor frequency at 3 T [Hz]."""

AIR_TISSUE_SUSCEPTIBILITY = 9.4e-6
"""Volume susceptibility of air minus that of tissue (SI, dimensionless)."""

AIR, CSF, GM, WM, FAT, SKULL, CAUDATE, PUTAMEN, PALLIDUM, THALAMUS, VEIN, LESION = range(12)


@dataclass(frozen=True)
class Tissue:
    """Properties of one tissue class.

    Attributes
    ----------
    label
        Value in the label map.
    pd
        Proton density, 0..1 (relative to water).
    t1, t2, t2star
        Relaxation times [s].
    """

    label: int
    pd: float
    t1: float
    t2: float
    t2star: float


TISSUES: dict[str, Tissue] = {
    "air": Tissue(AIR, 0.0, 0.0, 0.0, 0.0),
    "csf": Tissue(CSF, 1.00, 4.20, 1.800, 1.200),
    "gm": Tissue(GM, 0.80, 1.45, 0.100, 0.058),
    "wm": Tissue(WM, 0.69, 0.95, 0.075, 0.050),
    "fat": Tissue(FAT, 0.90, 0.37, 0.070, 0.035),
    "skull": Tissue(SKULL, 0.05, 0.25, 0.001, 0.0005),
    "caudate": Tissue(CAUDATE, 0.82, 1.30, 0.085, 0.040),
    "putamen": Tissue(PUTAMEN, 0.80, 1.20, 0.070, 0.031),
    "globus_pallidus": Tissue(PALLIDUM, 0.75, 1.13, 0.060, 0.027),
    "thalamus": Tissue(THALAMUS, 0.75, 1.15, 0.078, 0.042),
    "vein": Tissue(VEIN, 0.85, 1.65, 0.040, 0.020),
    "lesion": Tissue(LESION, 0.80, 1.40, 0.120, 0.070),
}
"""Nominal tissue table at 3 T (T1, T2, T2* in seconds). ``air`` is also the background; every map
is 0 there. Each :class:`BrainPhantom` perturbs these by at most ``TISSUE_JITTER``."""

TISSUE_JITTER = 0.02
"""Largest relative per-seed change of a tissue property."""

TISSUE_GROUPS: dict[str, tuple[str, ...]] = {
    "deep_gm": ("caudate", "putamen", "globus_pallidus", "thalamus"),
    "brain": (
        "csf",
        "gm",
        "wm",
        "caudate",
        "putamen",
        "globus_pallidus",
        "thalamus",
        "vein",
        "lesion",
    ),
}
"""Named unions of tissues; ``brain`` (tissue and CSF inside the skull) is the phantom's mask."""

TEXTURE_AMPLITUDE = {"M0": 0.02, "T1": 0.03, "T2": 0.03, "T2star": 0.04}
"""Relative standard deviation of the smooth within-tissue texture of each map."""

MAP_NAMES = ("M0", "T1", "T2", "T2star", "B0", "phase0")
"""Names of the float32 maps of :class:`PhantomMaps` (as in the problem file's ``truth/``)."""

_TEXTURE_LIMIT = 2.5  # the texture saturates smoothly at this many standard deviations

# Layers below the skin, radial depth [mm]: fat, then skull, then CSF down to the pial envelope.
_FAT_DEPTH = 4.5
_SKULL_INNER_DEPTH = 11.0
_PIAL_DEPTH = 13.5
_SULCAL_SPHERE_RADIUS = 70.0  # radius [mm] at which the sulcal noise is evaluated


@dataclass
class PhantomMaps:
    """Rendered maps of a :class:`BrainPhantom`; all ``[nz, ny, nx]``, SI units.

    Attributes
    ----------
    M0
        float32 proton density, 0..1.
    T1, T2, T2star
        float32 relaxation times [s]; 0 outside the head.
    B0
        float32 off-resonance [Hz]; 0 outside the head.
    phase0
        float32 phase at echo time 0 [rad]; 0 outside the head.
    mask
        uint8, 1 for brain tissue and CSF inside the skull (no scalp, bone or background).
    labels
        int8 tissue labels, see ``tissues``.
    tissues
        Tissue table of this phantom (name -> :class:`Tissue`).
    voxel_size
        ``(dx, dy, dz)`` [mm].
    """

    M0: torch.Tensor
    T1: torch.Tensor
    T2: torch.Tensor
    T2star: torch.Tensor
    B0: torch.Tensor
    phase0: torch.Tensor
    mask: torch.Tensor
    labels: torch.Tensor
    tissues: dict[str, Tissue]
    voxel_size: tuple[float, float, float]

    @property
    def matrix(self) -> tuple[int, int, int]:
        """``(nx, ny, nz)``."""
        nz, ny, nx = self.labels.shape
        return nx, ny, nz

    @property
    def affine(self) -> np.ndarray:
        """4x4 float64 voxel-index ``(i, j, k)`` -> RAS position [mm]; voxel ``n // 2`` at 0."""
        return grid_affine(self.matrix, self.voxel_size)

    def tissue_mask(self, name: str) -> torch.Tensor:
        """Boolean ``[nz, ny, nx]`` mask of a tissue or of a group in :data:`TISSUE_GROUPS`."""
        names = TISSUE_GROUPS.get(name, (name,))
        unknown = [n for n in names if n not in self.tissues]
        if unknown:
            known = sorted([*self.tissues, *TISSUE_GROUPS])
            raise KeyError(f"unknown tissue {name!r}; known: {', '.join(known)}")
        labels = torch.tensor([self.tissues[n].label for n in names], dtype=self.labels.dtype)
        return torch.isin(self.labels, labels)


def grid_affine(matrix: tuple[int, int, int], voxel_size: tuple[float, float, float]) -> np.ndarray:
    """4x4 float64 affine of a grid whose voxel ``n // 2`` sits at the origin.

    Parameters
    ----------
    matrix
        ``(nx, ny, nz)``.
    voxel_size
        ``(dx, dy, dz)`` [mm].
    """
    affine = np.diag([*map(float, voxel_size), 1.0])
    affine[:3, 3] = [-(n // 2) * float(d) for n, d in zip(matrix, voxel_size, strict=True)]
    return affine


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _rotation(yaw: float, pitch: float = 0.0) -> torch.Tensor:
    """``[3, 3]`` rotation about x by ``pitch`` then about z by ``yaw`` [rad]; columns are the
    rotated frame's axes in world coordinates."""
    cy, sy, cp, sp = math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch)
    rz = torch.tensor([[cy, -sy, 0.0], [sy, cy, 0.0], [0.0, 0.0, 1.0]])
    rx = torch.tensor([[1.0, 0.0, 0.0], [0.0, cp, -sp], [0.0, sp, cp]])
    return rz @ rx


@dataclass(frozen=True)
class _Ellipsoid:
    """Solid ellipsoid: ``centre`` [mm], ``semi_axes`` [mm] along the columns of ``rotation``."""

    centre: torch.Tensor
    semi_axes: torch.Tensor
    rotation: torch.Tensor

    def inside(self, p: torch.Tensor) -> torch.Tensor:
        """``[N]`` bool for points ``p [N, 3]`` [mm]."""
        local = (p - self.centre) @ self.rotation / self.semi_axes
        return local.square().sum(-1) < 1.0


@dataclass(frozen=True)
class _Tube:
    """Straight vessel segment from ``start`` to ``end`` [mm], radius ``r0`` -> ``r1`` [mm]."""

    start: torch.Tensor
    end: torch.Tensor
    r0: float
    r1: float

    def inside(self, p: torch.Tensor) -> torch.Tensor:
        """``[N]`` bool for points ``p [N, 3]`` [mm]."""
        axis = self.end - self.start
        t = ((p - self.start) @ axis / axis.dot(axis)).clamp(0.0, 1.0)
        distance = (p - self.start - t[:, None] * axis).norm(dim=-1)
        return distance < self.r0 + t * (self.r1 - self.r0)


@dataclass(frozen=True)
class _Cavity:
    """Air-filled sphere in thickened bone: ``centre`` [mm], ``radius`` [mm]; the bone below the
    skin is ``thickening`` [mm] thicker around ``direction`` (unit vector from the head centre),
    fading over the angular scale ``width`` (``1 - cos`` of the angle)."""

    centre: torch.Tensor
    radius: float
    direction: torch.Tensor
    thickening: float
    width: float


@dataclass(frozen=True)
class _Waves:
    """Sums of plane waves (smooth seeded noise): ``fields[n, f] = sum_w weight[w, f] cos(k_w p_n +
    phase_w)``; ``k [W, 3]`` in rad/mm, unit variance per field for random ``p``."""

    k: torch.Tensor
    phase: torch.Tensor
    weight: torch.Tensor

    @classmethod
    def sample(
        cls,
        rng: np.random.Generator,
        n_waves: int,
        wavelength: tuple[float, float],
        n_fields: int = 1,
    ) -> _Waves:
        """``n_waves`` waves per field, isotropic directions, wavelengths uniform in the range."""
        total = n_waves * n_fields
        direction = _unit(rng.standard_normal((total, 3)))
        length = rng.uniform(*wavelength, size=(total, 1))
        phase = rng.uniform(0.0, 2 * math.pi, size=total)
        weight = np.zeros((total, n_fields))
        for f in range(n_fields):
            weight[f * n_waves : (f + 1) * n_waves, f] = math.sqrt(2.0 / n_waves)
        return cls(
            torch.tensor(2 * math.pi * direction / length, dtype=torch.float32),
            torch.tensor(phase, dtype=torch.float32),
            torch.tensor(weight, dtype=torch.float32),
        )

    def __call__(self, p: torch.Tensor) -> torch.Tensor:
        """``[N, n_fields]`` values at points ``p [N, 3]``."""
        return torch.cos(p @ self.k.T + self.phase) @ self.weight

    def value_and_gradient(self, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """First field's ``[N]`` values and ``[N, 3]`` gradients [1/mm] at ``p [N, 3]``."""
        arg = p @ self.k.T + self.phase
        w = self.weight[:, 0]
        return torch.cos(arg) @ w, -(torch.sin(arg) * w) @ self.k


def _soft_limit(x: torch.Tensor, limit: float) -> torch.Tensor:
    """Smooth saturation of ``x`` at ``+-limit``."""
    return limit * torch.tanh(x / limit)


def _jitter(rng: np.random.Generator, scale: float, size: int = 3) -> np.ndarray:
    """Uniform random offsets in ``[-scale, scale]``."""
    return rng.uniform(-scale, scale, size=size)


def _superellipse_distance(
    u: torch.Tensor, v: torch.Tensor, a: float, b: float, power: int = 2
) -> torch.Tensor:
    """First-order signed distance [mm] of 2D points ``(u, v)`` [mm] to the superellipse
    ``|u/a|^power + |v/b|^power = 1``, negative inside; exact for circles."""
    au, bv = (u / a).abs().clamp_min(1e-6), (v / b).abs().clamp_min(1e-6)
    rho = (au.pow(power) + bv.pow(power)).pow(1.0 / power)
    grad = torch.hypot(au.pow(power - 1) / a, bv.pow(power - 1) / b) * rho.pow(1 - power)
    return (rho - 1.0) / grad


@dataclass(frozen=True)
class _Sulci:
    """Sulci: CSF clefts of ``width`` [mm] along the zero set of smooth noise on the sphere of
    radius ``_SULCAL_SPHERE_RADIUS`` around the head centre, radial, from the pial envelope down to
    a depth of ``depth_mean +- depth_amplitude`` [mm] that varies smoothly over the surface."""

    waves: _Waves
    depth_waves: _Waves
    width: float
    depth_mean: float
    depth_amplitude: float

    @property
    def max_depth(self) -> float:
        """Deepest point of any sulcus below the pial envelope [mm]."""
        return self.depth_mean + self.depth_amplitude

    def distance(self, u: torch.Tensor, r: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
        """``[N]`` distance [mm] to the nearest sulcus (0 inside) of points at direction
        ``u [N, 3]`` and distance ``r [N]`` [mm] from the head centre, ``depth [N]`` [mm] below the
        pial envelope."""
        on_sphere = _SULCAL_SPHERE_RADIUS * u
        s, grad = self.waves.value_and_gradient(on_sphere)
        grad_t = grad - (grad * u).sum(-1, keepdim=True) * u
        # First-order distance to the zero set along the sphere, scaled to radius r.
        tangential = r / _SULCAL_SPHERE_RADIUS * s.abs() / grad_t.norm(dim=-1).clamp_min(1e-6)
        variation = torch.tanh(self.depth_waves(on_sphere)[:, 0])
        bottom = self.depth_mean + self.depth_amplitude * variation
        lateral = (tangential - self.width / 2).clamp_min(0)
        return torch.where(depth <= bottom, lateral, torch.hypot(lateral, depth - bottom))


@dataclass(frozen=True)
class _Fissure:
    """Interhemispheric fissure: a CSF sheet of ``width`` [mm] at ``x = midline`` [mm], absent
    inside the (power-4 superellipse) block of the corpus callosum and diencephalon centred at
    ``(y, z)`` [mm] with semi-axes ``(a, b)`` [mm] in the sagittal plane."""

    midline: float
    width: float
    y: float
    z: float
    a: float
    b: float

    def distance(self, p: torch.Tensor) -> torch.Tensor:
        """``[N]`` distance [mm] of points ``p [N, 3]`` [mm] to the fissure (0 inside)."""
        off = ((p[:, 0] - self.midline).abs() - self.width / 2).clamp_min(0)
        block = _superellipse_distance(p[:, 1] - self.y, p[:, 2] - self.z, self.a, self.b, 4)
        return torch.hypot(off, (-block).clamp_min(0))


@dataclass(frozen=True)
class _Sylvian:
    """Sylvian fissures (both hemispheres), CSF sheets of ``width`` [mm]: the insular cleft, a
    sagittal sheet at ``|x - midline| = x - bulge (y - y0)^2`` inside the ellipse of semi-axes
    ``(a, b)`` around ``(y0, z0)``, and the opercular cleft joining it to the lateral surface, the
    oblique sheet ``z = z0 + slope_y (y - y0) + slope_x (|x - midline| - x)``, lateral of the
    insula and within the same ellipse. Lengths in mm."""

    midline: float
    x: float
    y0: float
    z0: float
    a: float
    b: float
    bulge: float
    slope_y: float
    slope_x: float
    width: float

    def distance(self, p: torch.Tensor) -> torch.Tensor:
        """``[N]`` distance [mm] of points ``p [N, 3]`` [mm] to either cleft (0 inside)."""
        ax = (p[:, 0] - self.midline).abs()
        y, z = p[:, 1] - self.y0, p[:, 2] - self.z0
        insula_x = self.x - self.bulge * y.square()
        off_insula = ((ax - insula_x).abs() - self.width / 2).clamp_min(0)
        outline = _superellipse_distance(y, z, self.a, self.b).clamp_min(0)
        insula = torch.hypot(off_insula, outline)
        sheet_z = self.slope_y * y + self.slope_x * (ax - self.x)
        off_sheet = ((z - sheet_z).abs() - self.width / 2).clamp_min(0)
        medial = (insula_x - ax).clamp_min(0)
        operculum = torch.stack([off_sheet, medial, outline]).norm(dim=0)
        return torch.minimum(insula, operculum)


def _ellipsoid(centre: np.ndarray, axes: np.ndarray, yaw: float, pitch: float) -> _Ellipsoid:
    """Ellipsoid with ``centre`` and semi-``axes`` [mm], rotated by ``yaw``, ``pitch`` [rad]."""
    return _Ellipsoid(
        torch.tensor(centre, dtype=torch.float32),
        torch.tensor(axes, dtype=torch.float32),
        _rotation(yaw, pitch).float(),
    )


def _pair(
    rng: np.random.Generator,
    centre: tuple[float, float, float],
    axes: tuple[float, float, float],
    yaw_deg: float = 0.0,
    pitch_deg: float = 0.0,
) -> list[_Ellipsoid]:
    """Right (x > 0) and left copies of an ellipsoid given for the right side, each with its own
    jitter (1 mm in position, 5 % in size); the yaw mirrors."""
    shapes = []
    for side in (1.0, -1.0):
        c = np.array(centre) + _jitter(rng, 1.0)
        c[0] *= side
        a = np.array(axes) * (1 + _jitter(rng, 0.05))
        shapes.append(_ellipsoid(c, a, side * math.radians(yaw_deg), math.radians(pitch_deg)))
    return shapes


def _perturbed_tissues(rng: np.random.Generator) -> dict[str, Tissue]:
    """:data:`TISSUES` with each property scaled by a random factor within ``TISSUE_JITTER``."""
    tissues = {}
    for name, t in TISSUES.items():
        f = 1.0 + _jitter(rng, TISSUE_JITTER, 4)
        pd, t1, t2, t2star = (float(v) for v in f * [t.pd, t.t1, t.t2, t.t2star])
        tissues[name] = Tissue(t.label, min(pd, 1.0), t1, t2, min(t2star, t2))
    return tissues


def _polynomial_terms(p: torch.Tensor) -> torch.Tensor:
    """``[N, 10]`` terms ``1, x, y, z, x^2, y^2, z^2, xy, xz, yz`` of points ``p [N, 3]``."""
    x, y, z = p.unbind(-1)
    return torch.stack([torch.ones_like(x), x, y, z, x * x, y * y, z * z, x * y, x * z, y * z], -1)


class BrainPhantom:
    """Seeded 3D brain phantom in continuous coordinates (see the module docstring).

    Parameters
    ----------
    seed
        Seeds the anatomy (shape, folding, positions and sizes of structures, lesions, veins, air
        cavities), the textures, the fields and small changes of the tissue values.

    Attributes
    ----------
    seed
        The seed.
    tissues
        Tissue table of this phantom (name -> :class:`Tissue`), within ``TISSUE_JITTER`` of
        :data:`TISSUES`.
    cavities
        ``name -> (centre [3] [mm], radius [mm])`` of each air cavity (``frontal_sinus``,
        ``right_ear``, ``left_ear``).
    lesions
        ``(centre [3] [mm], radius [mm])`` of each white-matter lesion.
    cortex_thickness
        Thickness of the cortical grey-matter ribbon [mm].
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        rng = np.random.default_rng(seed)
        # one generator for every part, drawn in this order (the phantom of a seed is fixed)
        self.tissues = _perturbed_tissues(rng)
        self._sample_outline(rng)
        self._sample_deep(rng)
        self._sample_cavities(rng)
        self._sample_veins(rng)
        self._sample_texture(rng)
        # Lesions go where labels_at, evaluated without lesions, finds white matter.
        self.lesions: tuple[tuple[torch.Tensor, float], ...] = ()
        self.lesions = self._sample_lesions(rng, 4)

    def _sample_outline(self, rng: np.random.Generator) -> None:
        """Head outline, cortex, sulci and the interhemispheric and Sylvian fissures."""
        # Head outline: ellipsoid with an egg-shaped and a seeded low-order radius modulation.
        self._centre = torch.tensor([0.0, -2.0, -10.0] + _jitter(rng, 1.0), dtype=torch.float32)
        self._head_axes = torch.tensor(
            np.array([75.0, 92.0, 105.0]) * (1 + _jitter(rng, 0.03)), dtype=torch.float32
        )
        self._head_waves = _Waves.sample(rng, 12, (3.0, 6.0))
        self._pial_waves = _Waves.sample(rng, 12, (40.0, 80.0))
        self.cortex_thickness = float(2.6 + _jitter(rng, 0.2, 1)[0])
        self._sulci = _Sulci(
            waves=_Waves.sample(rng, 64, (11.0, 16.0)),
            depth_waves=_Waves.sample(rng, 12, (40.0, 80.0)),
            width=float(1.2 + _jitter(rng, 0.15, 1)[0]),
            depth_mean=float(10.0 + _jitter(rng, 1.0, 1)[0]),
            depth_amplitude=3.0,
        )
        midline = float(self._centre[0])
        j = _jitter(rng, 1.0, 7)
        self._fissure = _Fissure(midline, 1.8, -6.0 + 1.5 * j[0], -15.0, 36.0 + 2 * j[1], 40.0)
        self._sylvian = _Sylvian(
            midline=midline,
            x=37.0 + 1.5 * j[2],
            y0=2.0 + 2.0 * j[3],
            z0=-4.0 + 2.0 * j[4],
            a=22.0,
            b=15.0,
            bulge=0.008,
            slope_y=-1.0 + 0.1 * j[5],
            slope_x=0.25 + 0.1 * j[6],
            width=2.0,
        )

    def _sample_deep(self, rng: np.random.Generator) -> None:
        """Ventricles and deep grey matter (``_deep``) and their bounding box."""
        midline = float(self._centre[0])
        # Deep structures, painted in this order over white matter: lateral ventricles (frontal
        # horn, body, atrium, occipital horn, temporal horn), caudate (head, body), putamen,
        # globus pallidus, thalamus, third ventricle, perivascular spaces.
        third = _ellipsoid(
            np.array([midline, -10.0, -3.0]) + _jitter(rng, 0.5) * [0, 1, 1],
            np.array([1.6, 13.0, 9.0]) * (1 + _jitter(rng, 0.05)),
            0.0,
            0.0,
        )
        pvs = [
            _ellipsoid(np.array(c) + _jitter(rng, 2.0), np.full(3, rng.uniform(0.8, 1.1)), 0, 0)
            for c in [(20.0, 4.0, -8.0), (-18.0, 2.0, -7.0), (22.0, -4.0, -6.0),
                      (-24.0, 0.0, -5.0), (26.0, 10.0, 24.0), (-22.0, -12.0, 26.0)]
        ]  # fmt: skip
        self._deep: list[tuple[int, list[_Ellipsoid]]] = [
            (
                CSF,
                _pair(rng, (7.0, 14.0, 6.0), (5.5, 14.0, 10.0), -12.0)
                + _pair(rng, (8.5, -6.0, 15.0), (5.5, 22.0, 6.0), -5.0)
                + _pair(rng, (17.0, -31.0, 7.0), (6.5, 11.0, 9.0), 25.0)
                + _pair(rng, (20.0, -46.0, 4.0), (3.5, 10.0, 3.5), 20.0)
                + _pair(rng, (28.0, -14.0, -18.0), (3.0, 14.0, 3.5), -10.0),
            ),
            (
                CAUDATE,
                _pair(rng, (12.5, 14.0, 5.0), (5.0, 10.0, 9.0), -12.0)
                + _pair(rng, (13.5, -6.0, 17.0), (3.5, 14.0, 4.0), -5.0),
            ),
            (PUTAMEN, _pair(rng, (25.0, 2.0, -1.0), (5.5, 16.0, 11.0))),
            (PALLIDUM, _pair(rng, (17.5, -1.0, -3.0), (3.5, 9.0, 7.0))),
            (THALAMUS, _pair(rng, (10.5, -19.0, 3.0), (7.0, 13.0, 9.0), 12.0)),
            (CSF, [third, *pvs]),
        ]
        shapes = [s for _, group in self._deep for s in group]
        reach = torch.stack([s.semi_axes.max() for s in shapes])[:, None]
        centres = torch.stack([s.centre for s in shapes])
        self._deep_box = ((centres - reach).amin(0), (centres + reach).amax(0))

    def _sample_cavities(self, rng: np.random.Generator) -> None:
        """Air cavities (frontal sinus, ear canals) in thickened bone."""
        # Air cavities in thickened bone: frontal sinus, right and left ear canal with mastoid.
        self._cavities: dict[str, _Cavity] = {}
        for name, direction, radius, thickening, width in [
            ("frontal_sinus", (0.0, 0.97, -0.22), 7.0, 10.0, 0.04),
            ("right_ear", (0.85, -0.09, -0.7), 6.5, 8.0, 0.02),
            ("left_ear", (-0.85, -0.09, -0.7), 6.5, 8.0, 0.02),
        ]:
            u = torch.tensor(_unit(np.array(direction) + _jitter(rng, 0.03)), dtype=torch.float32)
            depth = _FAT_DEPTH + thickening / 2 + 1.5
            centre = self._centre + (float(self._head_radius(u[None])[0]) - depth) * u
            r = radius * (1 + float(_jitter(rng, 0.1, 1)[0]))
            self._cavities[name] = _Cavity(centre, r, u, thickening, width)
        self.cavities = {name: (c.centre.clone(), c.radius) for name, c in self._cavities.items()}

    def _sample_veins(self, rng: np.random.Generator) -> None:
        """Superior sagittal sinus radii, deep and cortical veins."""
        midline = float(self._centre[0])
        # Veins: superior sagittal sinus (tube along the inner table at the midline, anterior ->
        # posterior radius), straight sinus, vein of Galen, internal cerebral veins, cortical veins.
        self._sss_radius = (2.2, 3.8)
        self._deep_veins = [
            _Tube(*self._points(rng, (midline, -45, 8), (midline, -78, -22)), 2.0, 2.5),
            _Tube(*self._points(rng, (midline, -30, 10), (midline, -45, 8)), 1.5, 2.0),
            _Tube(*self._points(rng, (midline + 2, 0, 13), (midline + 2.5, -30, 10)), 1.0, 1.2),
            _Tube(*self._points(rng, (midline - 2, 0, 13), (midline - 2.5, -30, 10)), 1.0, 1.2),
        ]
        self._deep_vein_halfwidth = max(
            float((torch.stack([t.start[0], t.end[0]]) - midline).abs().max()) + t.r1
            for t in self._deep_veins
        )
        self._cortical_veins = [self._cortical_vein(rng) for _ in range(4)]

    def _sample_texture(self, rng: np.random.Generator) -> None:
        """Texture of M0, T1, T2, T2* and the smooth B0 [Hz] and phase0 [rad] polynomials."""
        # Texture of M0, T1, T2, T2* and the smooth B0 [Hz] and phase0 [rad] polynomials (in
        # units of 100 mm).
        self._texture = _Waves.sample(rng, 20, (12.0, 60.0), n_fields=4)
        scales = np.array([[5.0, 0.5]] + [[25.0, 0.6]] * 3 + [[20.0, 0.3]] * 6)
        self._poly = torch.tensor(rng.uniform(-1, 1, size=(10, 2)) * scales, dtype=torch.float32)

    @staticmethod
    def _points(
        rng: np.random.Generator, *points: tuple[float, float, float]
    ) -> tuple[torch.Tensor, ...]:
        """Points [mm] with a 1 mm jitter each."""
        return tuple(torch.tensor(p + _jitter(rng, 1.0), dtype=torch.float32) for p in points)

    def _cortical_vein(self, rng: np.random.Generator) -> _Tube:
        """A vein of about 20 mm in the subarachnoid CSF, running mostly superior-inferior."""
        azimuth = rng.uniform(0, 2 * math.pi)
        u = _unit(np.array([math.cos(azimuth), math.sin(azimuth), rng.uniform(0.0, 0.35)]))
        tilt = rng.uniform(-0.5, 0.5)
        along = _unit(np.array([-math.sin(azimuth) * tilt, math.cos(azimuth) * tilt, 1.0]))
        depth = (_SKULL_INNER_DEPTH + _PIAL_DEPTH) / 2
        ends = []
        for sign in (-1.0, 1.0):
            v = torch.tensor(_unit(u + sign * 0.15 * along), dtype=torch.float32)
            ends.append(self._centre + (float(self._head_radius(v[None])[0]) - depth) * v)
        radius = float(rng.uniform(0.9, 1.3))
        return _Tube(ends[0], ends[1], radius, radius)

    def _sample_lesions(
        self, rng: np.random.Generator, n: int
    ) -> tuple[tuple[torch.Tensor, float], ...]:
        """``n`` spheres of 3-6 mm diameter, 12 mm apart, each inside >= 1.5 mm of white matter,
        within the deep-structure box and ``-16 < z < 22`` mm (inside both paper slabs)."""
        shell = torch.tensor(_unit(rng.standard_normal((32, 3))), dtype=torch.float32)
        lo, hi = self._deep_box
        lo = torch.maximum(lo, torch.tensor([-1e3, -1e3, -16.0])) + 4.5
        hi = torch.minimum(hi, torch.tensor([1e3, 1e3, 22.0])) - 4.5
        lesions: list[tuple[torch.Tensor, float]] = []
        while len(lesions) < n:  # candidates in batches, accepted in the order drawn
            batch = 64
            centres = torch.tensor(rng.uniform(lo, hi, size=(batch, 3)), dtype=torch.float32)
            radii = rng.uniform(1.5, 3.0, size=batch)
            offsets = torch.cat([torch.zeros(1, 3), shell])
            probes = centres[:, None] + torch.tensor(radii + 1.5)[:, None, None].float() * offsets
            in_wm = (self.labels_at(probes.reshape(-1, 3)) == WM).view(batch, -1).all(1)
            for c, r, ok in zip(centres, radii, in_wm.tolist(), strict=True):
                far = all(float((c - o).norm()) > 12.0 for o, _ in lesions)
                if ok and far and len(lesions) < n:
                    lesions.append((c, float(r)))
        return tuple(lesions)

    def _head_radius(self, u: torch.Tensor) -> torch.Tensor:
        """``[N]`` distance [mm] from the head centre to the skin along unit ``u [N, 3]``."""
        ellipsoid = (u / self._head_axes).square().sum(-1).rsqrt()
        egg = 1.0 - 0.06 * u[:, 1] * u[:, 0].square()
        return ellipsoid * egg * (1.0 + 0.012 * self._head_waves(u)[:, 0])

    def _bone_thickening(self, u: torch.Tensor) -> torch.Tensor:
        """``[N]`` extra bone depth [mm] around the air cavities along unit vectors ``u [N, 3]``."""
        extra = torch.zeros(u.shape[0])
        for cav in self._cavities.values():
            extra += cav.thickening * torch.exp((u @ cav.direction - 1.0) / cav.width)
        return extra

    def labels_at(self, points: torch.Tensor) -> torch.Tensor:
        """Tissue labels at arbitrary positions.

        Parameters
        ----------
        points
            ``[N, 3]`` positions ``(x, y, z)`` [mm] (evaluated in float32).

        Returns
        -------
        torch.Tensor
            ``[N]`` int8 labels (see :attr:`tissues`).
        """
        points = points.to(torch.float32)
        labels = torch.full((points.shape[0],), AIR, dtype=torch.int8)
        q = points - self._centre
        r = q.norm(dim=-1).clamp_min(1e-6)
        # The radius modulation of the ellipsoid is below 9 %: farther points are air.
        near = torch.nonzero((q / self._head_axes).norm(dim=-1) < 1.09).squeeze(1)
        u = q[near] / r[near, None]
        below_skin = self._head_radius(u) - r[near]
        inside = below_skin > 0
        idx = near[inside]
        labels[idx] = self._head_labels(points[idx], u[inside], r[idx], below_skin[inside])
        return labels

    def _head_labels(
        self, p: torch.Tensor, u: torch.Tensor, r: torch.Tensor, below_skin: torch.Tensor
    ) -> torch.Tensor:
        """``[N]`` int8 labels of points ``p [N, 3]`` [mm] inside the head, at unit direction
        ``u [N, 3]`` and distance ``r [N]`` [mm] from its centre, ``below_skin [N]`` [mm] deep."""
        labels = torch.full((p.shape[0],), FAT, dtype=torch.int8)
        thick = self._bone_thickening(u)
        labels[below_skin >= _FAT_DEPTH] = SKULL
        below_inner = below_skin - _SKULL_INNER_DEPTH - thick
        intra = torch.nonzero(below_inner >= 0).squeeze(1)
        labels[intra] = CSF
        pial = _PIAL_DEPTH - _SKULL_INNER_DEPTH + 0.8 * torch.tanh(self._pial_waves(u[intra])[:, 0])
        depth = below_inner[intra] - pial
        brain = depth > 0
        b = intra[brain]
        labels[b] = self._brain_labels(p[b], u[b], r[b], depth[brain])
        labels[intra[self._in_veins(p[intra], below_inner[intra])]] = VEIN
        for cav in self._cavities.values():
            labels[(p - cav.centre).norm(dim=-1) < cav.radius] = AIR
        return labels

    def _brain_labels(
        self, p: torch.Tensor, u: torch.Tensor, r: torch.Tensor, depth: torch.Tensor
    ) -> torch.Tensor:
        """``[N]`` int8 labels of points below the pial envelope (``depth [N]`` > 0 [mm])."""
        cleft = torch.minimum(self._fissure.distance(p), self._sylvian.distance(p))
        shell = torch.nonzero(depth < self._sulci.max_depth + self.cortex_thickness).squeeze(1)
        cleft[shell] = torch.minimum(
            cleft[shell], self._sulci.distance(u[shell], r[shell], depth[shell])
        )
        labels = torch.full((p.shape[0],), WM, dtype=torch.int8)
        labels[torch.minimum(depth, cleft) < self.cortex_thickness] = GM
        labels[cleft <= 0] = CSF
        lo, hi = self._deep_box
        deep = torch.nonzero(((p >= lo) & (p <= hi)).all(-1) & (labels == WM)).squeeze(1)
        pd, ld = p[deep], labels[deep]
        for label, shapes in self._deep:
            for shape in shapes:
                ld[shape.inside(pd)] = label
        for centre, radius in self.lesions:
            ld[(ld == WM) & ((pd - centre).norm(dim=-1) < radius)] = LESION
        labels[deep] = ld
        return labels

    def _in_veins(self, p: torch.Tensor, below_inner: torch.Tensor) -> torch.Tensor:
        """``[N]`` bool: intracranial points ``p [N, 3]`` [mm], ``below_inner [N]`` [mm] below the
        inner table of the skull, that lie inside a vein."""
        vein = torch.zeros(p.shape[0], dtype=torch.bool)
        shell = torch.nonzero(below_inner < 6.0).squeeze(1)
        ps = p[shell]
        # Superior sagittal sinus: centred 1.5 mm below the inner table at the midline, above the
        # torcula (z > -25 mm), its radius growing from the front (y = 92) to the back (y = -92).
        ra, rp = self._sss_radius
        radius = ra + (rp - ra) * ((92.0 - ps[:, 1]) / 184.0).clamp(0.0, 1.0)
        along = torch.hypot(ps[:, 0] - self._fissure.midline, below_inner[shell] - 1.5)
        in_shell = (along < radius) & (ps[:, 2] > -25.0)
        for tube in self._cortical_veins:
            in_shell |= tube.inside(ps)
        vein[shell] = in_shell
        central = torch.nonzero(
            (p[:, 0] - self._fissure.midline).abs() < self._deep_vein_halfwidth
        ).squeeze(1)
        pc = p[central]
        in_central = torch.zeros(len(central), dtype=torch.bool)
        for tube in self._deep_veins:
            in_central |= tube.inside(pc)
        vein[central] |= in_central
        return vein

    def _b0(self, p: torch.Tensor) -> torch.Tensor:
        """``[N]`` off-resonance [Hz] at points ``p [N, 3]`` [mm]: air-cavity dipole fields
        (``B0`` along z) without the polynomial part."""
        field = torch.zeros(p.shape[0])
        scale = LARMOR_FREQUENCY_HZ * AIR_TISSUE_SUSCEPTIBILITY / 3.0
        for cav in self._cavities.values():
            d = p - cav.centre
            r2 = d.square().sum(-1).clamp_min(cav.radius**2)
            field += scale * cav.radius**3 * (3 * d[:, 2].square() - r2) / r2.pow(2.5)
        return field

    def _maps(self, p: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """``[N]`` maps at points ``p [N, 3]`` [mm] with ``labels [N]``; all 0 where AIR."""
        table = torch.zeros(max(t.label for t in self.tissues.values()) + 1, 4)
        for t in self.tissues.values():
            table[t.label] = torch.tensor([t.pd, t.t1, t.t2, t.t2star])
        out = {name: torch.zeros(p.shape[0]) for name in MAP_NAMES}
        tissue = torch.nonzero(labels != AIR).squeeze(1)
        pt = p[tissue]
        base = table[labels[tissue].long()]
        texture = _soft_limit(self._texture(pt), _TEXTURE_LIMIT)
        for i, name in enumerate(MAP_NAMES[:4]):
            out[name][tissue] = base[:, i] * (1.0 + TEXTURE_AMPLITUDE[name] * texture[:, i])
        out["M0"].clamp_(0.0, 1.0)
        smooth = _polynomial_terms(pt / 100.0) @ self._poly
        out["B0"][tissue] = smooth[:, 0] + self._b0(pt)
        out["phase0"][tissue] = smooth[:, 1]
        return out

    def render(
        self,
        matrix: tuple[int, int, int],
        voxel_size: tuple[float, float, float],
        max_chunk_voxels: int = 1 << 18,
    ) -> PhantomMaps:
        """Sample the phantom at the voxel centres of a grid.

        Parameters
        ----------
        matrix
            ``(nx, ny, nz)``.
        voxel_size
            ``(dx, dy, dz)`` [mm]. Voxel ``i`` of an axis sits at ``(i - n // 2) * d``.
        max_chunk_voxels
            Voxels evaluated at once (whole z-slices, at least one); bounds memory.

        Returns
        -------
        PhantomMaps
            Maps of shape ``[nz, ny, nx]``.
        """
        nx, ny, nz = (int(n) for n in matrix)
        axes = [
            ((torch.arange(n, dtype=torch.float64) - n // 2) * float(d)).float()
            for n, d in zip((nx, ny, nz), voxel_size, strict=True)
        ]
        gy, gx = torch.meshgrid(axes[1], axes[0], indexing="ij")
        plane = torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=-1)  # [ny * nx, 2]
        out = {name: torch.empty(nz, ny * nx) for name in MAP_NAMES}
        labels = torch.empty(nz, ny * nx, dtype=torch.int8)
        step = max(1, max_chunk_voxels // (nx * ny))
        for z0 in range(0, nz, step):
            zs = axes[2][z0 : z0 + step]
            p = torch.cat([torch.cat([plane, z.expand(ny * nx, 1)], dim=1) for z in zs])
            chunk_labels = self.labels_at(p)
            maps = self._maps(p, chunk_labels)
            labels[z0 : z0 + len(zs)] = chunk_labels.view(len(zs), -1)
            for name in MAP_NAMES:
                out[name][z0 : z0 + len(zs)] = maps[name].view(len(zs), -1)
        labels = labels.view(nz, ny, nx)
        brain = torch.tensor([self.tissues[n].label for n in TISSUE_GROUPS["brain"]])
        return PhantomMaps(
            **{name: out[name].view(nz, ny, nx) for name in MAP_NAMES},
            mask=torch.isin(labels, brain.to(torch.int8)).to(torch.uint8),
            labels=labels,
            tissues=dict(self.tissues),
            voxel_size=tuple(float(d) for d in voxel_size),
        )
