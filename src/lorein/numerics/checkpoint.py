"""Checkpoint files: tensors and plain data only, written atomically, read without running code.

A checkpoint is a dict of tensors, dicts, lists, tuples, numbers, strings, booleans and None,
written with :func:`torch.save` and read back with ``torch.load(..., weights_only=True)``: a file
that holds any other object (a pickled class whose ``__reduce__`` would run code, say) is refused
before anything in it runs (:class:`CheckpointError`), as is a truncated or damaged file.

A checkpoint written for a run records the run's *identity* (:func:`check_identity`): the digest
of its problem, the method, the method's configuration as plain data, the seed and the lorein
version, so that a resume refuses a checkpoint of another run.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

EXTENDABLE = frozenset({"iterations"})
"""Configuration keys a resume may change: raising ``iterations`` extends a finished run."""

IDENTITY_KEYS = ("problem", "method", "seed", "model_options")
"""Identity entries besides ``config`` that must match on resume (``lorein_version`` need not)."""

IDENTITY_DEFAULTS: dict[str, Any] = {"model_options": {}}
"""Identity entries that checkpoints written before they existed lack, and what they meant."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, unsafe, damaged, or of another run."""


def save_checkpoint(state: Mapping[str, Any], path: Path) -> None:
    """Write ``state`` (tensors and plain data) to ``path`` through a temporary sibling.

    A reader sees the previous checkpoint or the new one, never a partial file.
    """
    tmp = path.with_name(path.name + ".tmp")
    torch.save(dict(state), tmp)
    os.replace(tmp, path)


def read_checkpoint(path: Path, mmap: bool = False) -> dict[str, Any]:
    """Read a checkpoint without running any code it might hold.

    Parameters
    ----------
    path
        The checkpoint file.
    mmap
        Map the tensors' storage instead of reading it (for a quick look at the metadata).

    Returns
    -------
    The checkpoint's dict, tensors on the CPU.

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    CheckpointError
        One line: the file holds objects other than tensors and plain data, or is truncated or
        damaged, or is not a dict.
    """
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint to resume from")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:  # whatever unpickling a damaged or crafted file raises
        raise CheckpointError(
            f"{path}: not a usable lorein checkpoint ({_reason(err)}); nothing in it was run; "
            "start afresh without --resume"
        ) from err
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a lorein checkpoint (holds a {type(state).__name__})")
    return state


def _reason(err: Exception) -> str:
    """What is wrong with a checkpoint, from the error that reading it raised."""
    if isinstance(err, PermissionError):
        return f"cannot be read: {err.strerror}"
    unsafe = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
    if unsafe is not None:
        return f"it refers to {unsafe.group(1)}, which is neither a tensor nor plain data"
    return f"truncated or damaged: {type(err).__name__}"


def _entry(identity: Mapping[str, Any], key: str) -> Any:
    """An identity's entry ``key``, or what its absence means (:data:`IDENTITY_DEFAULTS`)."""
    return identity.get(key, IDENTITY_DEFAULTS.get(key))


def check_identity(
    path: Path, stored: Mapping[str, Any] | None, expected: Mapping[str, Any]
) -> None:
    """Refuse the checkpoint ``path`` unless it belongs to the run ``expected`` describes.

    Parameters
    ----------
    path
        The checkpoint, named in the error.
    stored
        The identity the checkpoint records (None for one written without).
    expected
        This run's identity: ``problem`` (digest), ``method``, ``config`` (plain data), ``seed``,
        ``model_options`` and ``lorein_version``.

    Raises
    ------
    CheckpointError
        One line naming ``path`` and every entry that differs; the configuration keys in
        :data:`EXTENDABLE` and the lorein version may differ.
    """
    if not isinstance(stored, Mapping):
        raise CheckpointError(
            f"{path}: records no run (problem, method, configuration, seed), so it cannot be "
            "checked; start afresh without --resume"
        )
    differences = [
        f"{key} {_short(_entry(stored, key))} (this run: {_short(_entry(expected, key))})"
        for key in IDENTITY_KEYS
        if _entry(stored, key) != _entry(expected, key)
    ]
    was, now = stored.get("config"), expected["config"]
    if not isinstance(was, Mapping):
        differences.append("configuration missing")
    else:
        for key in sorted((set(was) | set(now)) - EXTENDABLE):
            if was.get(key) != now.get(key):
                differences.append(
                    f"setting {key} = {_short(was.get(key))} (this run: {_short(now.get(key))})"
                )
    if differences:
        raise CheckpointError(
            f"{path} belongs to another run (written by lorein "
            f"{stored.get('lorein_version', '?')}): {'; '.join(differences)}; resume with the "
            "same problem, method, configuration and seed, or start afresh without --resume"
        )


def _short(value: Any) -> str:
    """A value for a one-line message: digests shortened, long values cut."""
    text = " ".join(repr(value).split())
    return text if len(text) <= 60 else text[:57] + "..."
