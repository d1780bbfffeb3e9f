"""The method interface: what every reconstruction method declares, gets and returns.

A method is a :class:`Method` subclass with a name, a one-line description, a configuration
dataclass (its hyper-parameters, overridable from TOML), its own memory estimate and
``reconstruct(problem, config, context) -> Maps``. The run context (:class:`RunContext`) carries
what is not a hyper-parameter: device, seed, checkpoint, resume, progress and the identity its
checkpoints record.

Methods share two steps:

- :func:`prepare`: seeds torch, starts the clock, puts the problem on the device, compresses
  and scales the k-space by the calibration region's intensity scale (so that every method works
  on data of a fixed range) and builds the signal model on the device (:func:`problem_model`);
- :func:`finish`: the single rescale back to data units (``M0`` and the weighted images are
  multiplied by the calibration scale once, here), the model's derived maps (``R2star``),
  float32 / complex64 results on the CPU, the wall time and the configuration in ``extras``.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import torch

from lorein.data.output import Maps
from lorein.data.problem import Problem
from lorein.methods.calibration import CalibrationEstimate, scaled_kspace
from lorein.physics.models.base import SignalModel
from lorein.physics.models.registry import signal_model


@dataclass(frozen=True)
class RunContext:
    """How a method runs, as opposed to what it computes (its configuration).

    Attributes
    ----------
    device
        Torch device of the reconstruction.
    seed
        Seeds every random draw of the method (initialisations, splits, dictionaries).
    checkpoint
        Checkpoint file of the method's optimisation loop, or None for no checkpoints.
    resume
        Continue from ``checkpoint``.
    progress
        Show progress bars.
    identity
        The run a checkpoint belongs to (problem digest, method, configuration, seed, version as
        plain data), recorded in the checkpoint and checked on resume
        (:func:`~lorein.numerics.checkpoint.check_identity`); None for none.
    model_options
        Options of the problem's signal model (its class's ``options``, e.g. ``t2ir_gre``'s
        ``estimate_inversion``), checked by
        :func:`~lorein.physics.models.registry.checked_options`; none by default.
    """

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    seed: int = 0
    checkpoint: Path | None = None
    resume: bool = False
    progress: bool = True
    identity: Mapping[str, Any] | None = None
    model_options: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class Prepared:
    """What :func:`prepare` hands a method.

    Attributes
    ----------
    problem
        The problem as given (its tensors where they were, usually the CPU).
    ky, kz, contrast
        ``[n_lines]`` int64 line locations and contrast rows, on the device.
    kspace
        ``[n_lines, n_coils', nx]`` complex64 lines on the device, coil-compressed to
        ``n_coils'`` and divided by ``calibration.scale``.
    calibration
        Scale, coil estimate, support and level from the calibration region of ``kspace``.
    model
        The problem's signal model, its contrast table on the device.
    started
        ``time.perf_counter()`` when preparation began.
    """

    problem: Problem
    ky: torch.Tensor
    kz: torch.Tensor
    contrast: torch.Tensor
    kspace: torch.Tensor
    calibration: CalibrationEstimate
    model: SignalModel
    started: float

    @property
    def device(self) -> torch.device:
        """Where the reconstruction runs."""
        return self.kspace.device

    @property
    def grid(self) -> tuple[int, int, int]:
        """``(nz, ny, nx)``, the shape of every image."""
        return self.problem.grid.shape


def prepare(problem: Problem, context: RunContext, coil_compression: int | None) -> Prepared:
    """The preamble every method shares (seed, clock, scaled k-space on the device, model).

    Parameters
    ----------
    problem
        The acquisition (never the truth).
    context
        Device and seed.
    coil_compression
        Number of virtual coils (SVD compression); None keeps all coils.
    """
    started = time.perf_counter()
    torch.manual_seed(context.seed)
    kspace, calibration = scaled_kspace(problem, coil_compression, context.device)
    model = problem_model(problem, context)
    dev = context.device
    lines = (problem.ky.to(dev), problem.kz.to(dev), problem.contrast.to(dev))
    return Prepared(problem, *lines, kspace, calibration, model, started)


def problem_model(problem: Problem, context: RunContext) -> SignalModel:
    """The problem's signal model with the run's ``model_options``, its table on the device."""
    contrasts = problem.contrasts.to(context.device)
    return signal_model(problem.signal_model, contrasts, **context.model_options)


def finish(
    values: dict[str, torch.Tensor],
    *,
    model: SignalModel,
    mask: torch.Tensor | None,
    images: torch.Tensor | None,
    coils: torch.Tensor | None,
    extras: dict[str, Any],
    config: Any,
    started: float,
    scale: float = 1.0,
) -> Maps:
    """The method's result in data units, on the CPU.

    Parameters
    ----------
    values
        Maps ``[nz, ny, nx]`` in SI units, ``M0`` in data units divided by ``scale``.
    model
        The signal model of the maps: its ``derived`` maps are added (``R2star``).
    mask
        ``[nz, ny, nx]`` mask the method estimated (stored as uint8), or None.
    images
        ``[T, nz, ny, nx]`` weighted images in data units divided by ``scale``, or None.
    coils
        ``[n_coils', nz, ny, nx]`` coil sensitivities, or None.
    extras
        Method-specific record (``history``: the per-step losses); ``seconds`` and ``config`` are
        added here.
    config
        The method's configuration dataclass, recorded in ``extras["config"]``.
    started
        ``time.perf_counter()`` at the start of the method (``Prepared.started``).
    scale
        The calibration scale the method divided its data by (``Prepared.calibration.scale``);
        1 for methods that work in data units.
    """
    out = {k: v.float().cpu() for k, v in values.items()}
    if "M0" in out and scale != 1.0:
        out["M0"] = out["M0"] * scale
    out = model.output_maps(out)
    if images is not None:
        images = images.cpu() * scale if scale != 1.0 else images.cpu()
        images = images.to(torch.complex64)
    extras = dict(extras, seconds=time.perf_counter() - started, config=asdict(config))
    return Maps(
        values=out,
        mask=None if mask is None else mask.cpu().to(torch.uint8),
        images=images,
        coils=None if coils is None else coils.cpu(),
        extras=extras,
    )


def rank_within_contrasts(config: Any, problem: Problem) -> Any:
    """``config`` with its subspace ``rank`` lowered to the problem's number of contrasts T where
    it exceeds it (unchanged without a ``rank``): K temporal bases of T-point signals need
    K <= T, and K = T keeps the whole space (a 3-echo protocol has 3 contrasts, the default
    rank is 15)."""
    rank = getattr(config, "rank", None)
    if rank is None or rank <= problem.n_contrasts:
        return config
    return replace(config, rank=problem.n_contrasts)


def image_memory(problem: Problem, n_coils: int | None = None, rank: int = 0) -> int:
    """Rough peak bytes of an image-domain method: k-space, weighted images, coil images.

    ``4 T V`` complex64 images (the images, their fit and temporaries), the k-space three times,
    and ``4 C V max(K, 1)`` coil images (``K`` subspace bases, ``C`` coils).
    """
    voxels = problem.grid.n_voxels
    coils = n_coils or problem.n_coils
    kspace = 3 * problem.kspace.numel() * 8
    images = 4 * problem.n_contrasts * voxels * 8
    coil_images = 4 * coils * voxels * max(rank, 1) * 8
    return kspace + images + coil_images


class Method(ABC):
    """A reconstruction method, as the registry, ``lorein recon`` and the benchmarks see it.

    Attributes
    ----------
    name
        The ``--method`` name and the configuration file's table name.
    description
        One line for ``lorein config list`` and the help.
    config_class
        Dataclass of hyper-parameters; every field has a default.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    config_class: ClassVar[type]

    @abstractmethod
    def reconstruct(self, problem: Problem, config: Any, context: RunContext) -> Maps:
        """Maps of ``problem`` (the acquisition, never the truth).

        Returns
        -------
        Maps with ``M0`` (data units), times [s], ``B0`` [Hz], ``phase0`` [rad] as float32
        ``[nz, ny, nx]``; the method's mask, weighted images and coils where it has them;
        ``extras`` with the per-step ``history``, ``seconds`` and ``config``.
        """

    def default_config(self, problem: Problem, device: torch.device) -> Any:
        """The settings of a run of ``problem`` on ``device`` that names none (the configuration
        file and ``--set`` values change what they name): the configuration class's defaults,
        a subspace ``rank`` at most the problem's contrasts (:func:`rank_within_contrasts`)."""
        return rank_within_contrasts(self.config_class(), problem)

    def estimate_memory(self, problem: Problem, config: Any) -> int:
        """Rough peak bytes of a run (checked against the device before it starts)."""
        return image_memory(
            problem, getattr(config, "coil_compression", None), getattr(config, "rank", 0)
        )
