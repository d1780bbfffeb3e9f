"""Run a reconstruction method on a problem file and write the output folder.

Every method is reached through the registry (:mod:`lorein.methods.registry`) and the interface
of :mod:`lorein.methods.base`; this module adds what a run of any method needs around it: its
configuration from TOML, the memory check, the output folder's lock, the checkpoint's place and
the identity it records (:func:`run_identity`), timing and the report.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import resource
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lorein import __version__
from lorein.config import method_table, read_toml
from lorein.data.output import CHECKPOINT, Maps, output_lock, recover_output, write_output
from lorein.data.problem import Problem, read_problem
from lorein.device import resolve_device
from lorein.methods.base import Method, RunContext
from lorein.methods.plausibility import suspect_reasons
from lorein.methods.registry import METHODS, get_method
from lorein.numerics.checkpoint import check_identity, read_checkpoint
from lorein.physics.models.registry import checked_options
from lorein.settings import merge


def load_config(
    method: Method,
    path: Path | None,
    overrides: dict[str, Any] | None = None,
    problem: Problem | None = None,
    device: torch.device | str = "cpu",
) -> Any:
    """The method's configuration: defaults, then the file's hyper-parameters, then ``overrides``.

    The defaults are those the method chooses for ``problem`` on ``device``
    (:meth:`~lorein.methods.base.Method.default_config`), or without a problem the configuration
    class's own.

    The file's hyper-parameters are its ``[METHOD]`` table or, without one, its keys outside the
    command tables (:func:`lorein.config.method_table`); nested tables (hash encodings) name only
    what they change. A key the configuration does not have, or a value of the wrong type, is a
    one-line error naming the file, the table and the key (:func:`lorein.settings.merge`);
    ``overrides`` (the flags of ``lorein recon``) are named ``command line``.
    """
    if problem is None:
        config = method.config_class()
    else:
        config = method.default_config(problem, torch.device(device))
    names = sorted(f.name for f in dataclasses.fields(config))
    sources = [(overrides or {}, "command line")]
    if path is not None:
        sources.insert(0, method_table(read_toml(path), path, method.name, METHODS))
    for given, where in sources:
        unknown = sorted(set(given) - set(names))
        if unknown:
            raise ValueError(
                f"{where}: unknown {method.name} setting(s) {', '.join(unknown)}; "
                f"valid: {', '.join(names)}"
            )
        config = merge(config, given, where)
    return config


def check_config_fits(config: Any, problem: Problem, config_path: Path | None) -> None:
    """Refuse, in one line, settings that no run of ``problem`` can use: ``coil_compression``
    must lie between 1 and the problem's number of coils, and a subspace ``rank`` between 1 and
    its number of contrasts. (Ranges that hold for every problem, ``iterations >= 0`` or
    ``lr > 0``, are checked where the configuration is read: :mod:`lorein.settings`.)
    """
    where = f"{config_path} " if config_path is not None else ""
    virtual = getattr(config, "coil_compression", None)
    if virtual is not None and not 1 <= virtual <= problem.n_coils:
        raise ValueError(
            f"{where}coil_compression = {virtual}: expected 1 to {problem.n_coils}, "
            f"the coils of {problem.source}"
        )
    rank = getattr(config, "rank", None)
    if rank is not None and not 1 <= rank <= problem.n_contrasts:
        raise ValueError(
            f"{where}rank = {rank}: expected 1 to {problem.n_contrasts}, the contrasts of "
            f"{problem.source}"
        )


def available_memory(device: torch.device) -> int:
    """Bytes available on ``device`` (free GPU memory, or physical memory on CPU)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def problem_digest(problem: Problem) -> str:
    """SHA-256 (hex) of what a reconstruction reads of ``problem``.

    Covers the signal model, the matrix, the k-space lines ``[n_lines, n_coils, nx]``, the line
    tables (``ky``, ``kz``, ``contrast``), the contrast table and the known coils, each with its
    dtype and shape; not the geometry (affine, voxel size), which only labels the output.
    """
    digest = hashlib.sha256(f"{problem.signal_model} {list(problem.matrix)}".encode())
    tensors = {
        "kspace": problem.kspace,
        "ky": problem.ky,
        "kz": problem.kz,
        "contrast": problem.contrast,
        **{f"contrasts.{k}": v for k, v in problem.contrasts.columns().items()},
    }
    if problem.coils is not None:
        tensors["coils"] = problem.coils
    for name, tensor in tensors.items():
        array = tensor.detach().cpu().contiguous().numpy()
        digest.update(f"{name} {array.dtype} {list(array.shape)}".encode())
        digest.update(array.view(np.uint8) if array.size else b"")
    return digest.hexdigest()


def run_identity(
    method: str,
    problem: Problem,
    config: Any,
    seed: int,
    model_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """What a checkpoint of this run records, as plain data (:mod:`lorein.numerics.checkpoint`).

    Returns
    -------
    ``problem`` (:func:`problem_digest`), ``method``, ``config`` (the configuration dataclass as
    JSON-like data), ``seed``, ``model_options`` (the signal model's options) and
    ``lorein_version``.
    """
    plain = json.loads(json.dumps(dataclasses.asdict(config), default=str))
    return {
        "problem": problem_digest(problem),
        "method": method,
        "config": plain,
        "seed": seed,
        "model_options": dict(model_options or {}),
        "lorein_version": __version__,
    }


def _versions() -> dict[str, str]:
    return {"lorein": __version__, "torch": torch.__version__, "python": platform.python_version()}


def _peak_memory(device: torch.device) -> float:
    """Peak memory [GiB] of this process (GPU allocator peak on CUDA)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def run(
    problem_path: Path,
    out: Path,
    method_name: str = "lorein",
    config_path: Path | None = None,
    overrides: dict[str, Any] | None = None,
    device: str = "cpu",
    seed: int = 0,
    resume: bool = False,
    progress: bool = True,
    save_images: bool = False,
    keep_checkpoint: bool = False,
    model_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Reconstruct ``problem_path`` with a method and write the output folder ``out``.

    ``model_options`` are options of the problem's signal model (its class's ``options``, e.g.
    ``{"estimate_inversion": True}`` for ``t2ir_gre``; strings are read as TOML values); an
    option the model does not have is a one-line error naming the problem file and the options
    it has.

    Checks everything that can fail early (problem file, configuration, device, memory) before
    creating ``out``, then holds ``out``'s lock (:func:`~lorein.data.output.output_lock`: a second
    run into the same folder fails at once) and puts back what a killed publish left. The
    checkpoint lives in ``out/checkpoint.pt`` while the run goes on and records the run's identity
    (:func:`run_identity`); ``resume`` refuses, before any work, a checkpoint that holds more than
    tensors and plain data, is damaged or belongs to another problem, method, configuration (but
    ``iterations``, which may be raised to extend a run) or seed. A run that fails before its first
    checkpoint removes the folder it created; a finished run drops the checkpoint unless
    ``keep_checkpoint``, since it can be 100 MB to 1 GB. With ``save_images``, the method's
    weighted images (if it returns any) are written as well
    (:func:`~lorein.data.output.write_output`); ``report["saved_images"]`` says whether they were.

    Returns
    -------
    The report written to ``out/report.json``.
    """
    method = get_method(method_name)
    problem = read_problem(problem_path)
    options = checked_options(problem.signal_model, model_options or {}, str(problem_path))
    dev = resolve_device(device)
    config = load_config(method, config_path, overrides, problem, dev)
    check_config_fits(config, problem, config_path)
    need, have = method.estimate_memory(problem, config), available_memory(dev)
    if need > 0.9 * have:
        raise MemoryError(
            f"{problem_path}: this {method.name} run needs about {need / 2**30:.1f} GiB but only "
            f"{have / 2**30:.1f} GiB are available on {dev}; use coil_compression in the config, "
            "a GPU, or a smaller matrix"
        )
    identity = run_identity(method.name, problem, config, seed, options)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: expected an output folder (-o), found a file")
    with output_lock(out):
        recover_output(out)
        checkpoint = out / CHECKPOINT
        if resume:
            check_identity(
                checkpoint, read_checkpoint(checkpoint, mmap=True).get("identity"), identity
            )
        context = RunContext(dev, seed, checkpoint, resume, progress, identity, options)
        maps, seconds = _reconstruct(method, problem, config, context, out)
        history = maps.extras.pop("history", [])
        reasons = suspect_reasons(maps)
        report = {
            "status": "suspect" if reasons else "ok",
            "suspect_reasons": reasons,
            "method": method.name,
            "problem": str(problem_path),
            "config": dataclasses.asdict(config),
            "model_options": options,
            "seed": seed,
            "device": str(dev),
            "device_name": torch.cuda.get_device_name(dev)
            if dev.type == "cuda"
            else platform.processor(),
            "versions": _versions(),
            "wall_seconds": seconds,
            "peak_memory_gib": _peak_memory(dev),
            "estimated_memory_gib": need / 2**30,
            "iterations": len(history),
            "final_losses": history[-1] if history else {},
            "losses_every_10": history[::10],
            **{k: v for k, v in maps.extras.items() if k != "config"},
            "saved_images": save_images and maps.images is not None,
        }
        contrasts = problem.contrasts if save_images else None
        write_output(out, maps, problem.affine, report, method.name, contrasts, keep_checkpoint)
    return report


def _reconstruct(
    method: Method, problem: Problem, config: Any, context: RunContext, folder: Path
) -> tuple[Maps, float]:
    """The method's maps and its wall time [s]; ``folder`` (the checkpoint's) is created first.

    A failed or interrupted run leaves its checkpoint (for ``--resume``) and nothing else: the
    folder, if this call created it and nothing was written to it, is removed again.
    """
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    if context.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(context.device)
    start = time.perf_counter()
    try:
        maps = method.reconstruct(problem, config, context)
    except BaseException:
        if created and not any(folder.iterdir()):
            folder.rmdir()
        raise
    return maps, time.perf_counter() - start
