"""The registry of signal models: the problem file's ``signal_model`` names and their classes.

Adding a model is one module with one :class:`~lorein.physics.models.base.SignalModel` subclass
and one entry in :data:`MODEL_CLASSES` (docs/SIGNAL_MODELS.md).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from typing import Any

from lorein.physics.contrasts import ContrastTable
from lorein.physics.models.base import SignalModel
from lorein.physics.models.megre import Megre
from lorein.physics.models.t2ir_gre import T2irGre
from lorein.physics.models.vfa_megre import VfaMegre
from lorein.settings import typed

MODEL_CLASSES: dict[str, type[SignalModel]] = {cls.name: cls for cls in (VfaMegre, T2irGre, Megre)}
"""Signal model classes by name."""

SIGNAL_MODELS = tuple(MODEL_CLASSES)
"""Names of the signal models, as the problem file's ``signal_model`` attribute holds them."""


def model_class(name: str) -> type[SignalModel]:
    """The class of the model ``name``; the one-line error lists the known models."""
    try:
        return MODEL_CLASSES[name]
    except KeyError:
        known = ", ".join(sorted(MODEL_CLASSES))
        raise ValueError(f"unknown signal model {name!r}; known models: {known}") from None


def checked_options(name: str, options: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``options`` of the model ``name`` with their declared types, or a one-line error.

    Parameters
    ----------
    name
        Model name.
    options
        Option name -> value (a string from the command line is read as a TOML value first:
        ``true``, ``-0.9``).
    where
        Where the options came from, for the message (``--model-option``, a file's table).
    """
    cls = model_class(name)
    checked = {}
    for key, value in options.items():
        if key not in cls.options:
            valid = ", ".join(sorted(cls.options)) or "none"
            raise ValueError(
                f"{where}: signal model {name} has no option {key!r}; its options: {valid}"
            )
        if isinstance(value, str):
            value = toml_value(value)
        checked[key] = typed(value, cls.options[key], f"{where}: {key}")
    return checked


def toml_value(text: str) -> Any:
    """A command-line value read as TOML (``true``, ``-0.9``, ``"text"``); a bare word stays."""
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text


def signal_model(name: str, contrasts: ContrastTable, **kwargs: Any) -> SignalModel:
    """Build the signal model called ``name``.

    Parameters
    ----------
    name
        One of :data:`SIGNAL_MODELS`.
    contrasts
        Sequence parameters of the ``T`` contrasts.
    **kwargs
        Passed to the model's constructor: ``phase`` and the model's ``options`` (for
        ``t2ir_gre``: ``inversion_efficiency``, ``estimate_inversion``).

    Raises
    ------
    ValueError
        If ``name`` is not a known model.
    """
    return model_class(name)(contrasts, **kwargs)
