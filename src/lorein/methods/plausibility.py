"""A finished run judges its own result: signs that its maps are no estimate at all.

Nothing here reads the truth. A result is *suspect* when, inside the method's mask,

- a map is not finite somewhere;
- M0 is zero nearly everywhere (:data:`ZERO_M0_FRACTION`): nothing of the data was explained
  (e.g. k-space scaled by 1e30 made a fit return zeros);
- more than :data:`AT_BOUND_FRACTION` of the voxels of a relaxation map sit at the lower bound
  of its physical range (:class:`~lorein.numerics.voxel_fit.FitBounds`, which LoREIN's fields
  share): a diverged optimisation (``lr = 0.3``: T1 = 0.05 s and T2* = 2 ms everywhere);
- the method reports its final data misfit relative to the data energy
  (``extras["relative_residual"]``, ``||y - E x||^2 / ||y||^2``) above
  :data:`RESIDUAL_LIMIT`: the maps explain less than a fifth of the acquired energy, which
  noise alone would leave unexplained only if its energy were four times the signal's (a
  diverged run leaves about all of it).

:func:`lorein.run.run` writes the reasons into ``report.json`` (``"status": "suspect"``) and
``lorein recon`` ends with exit status :data:`SUSPECT_STATUS` after saying why in one line.
"""

from __future__ import annotations

import torch

from lorein.data.output import Maps
from lorein.numerics.voxel_fit import FitBounds

SUSPECT_STATUS = 3
"""Exit status of ``lorein recon`` for a written but suspect result (2: bad input)."""

RESIDUAL_LIMIT = 0.8
"""Largest plausible ``||y - E x||^2 / ||y||^2`` of a finished run."""

AT_BOUND_FRACTION = 0.5
"""Largest plausible fraction of the mask at the lower bound of a relaxation map."""

ZERO_M0_FRACTION = 0.9
"""Largest plausible fraction of the mask with M0 exactly zero."""


def _lower_bounds() -> dict[str, float]:
    bounds = FitBounds()
    return {name: bounds.of(name)[0] for name in ("T1", "T2", "T2star")}


def suspect_reasons(maps: Maps) -> list[str]:
    """Why ``maps`` cannot be an estimate (module docstring), one short phrase each; empty when
    nothing is suspect."""
    values = maps.values
    shape = next(iter(values.values())).shape
    mask = torch.ones(shape, dtype=torch.bool) if maps.mask is None else maps.mask.bool().cpu()
    if not mask.any():
        return ["the method's mask is empty"]
    reasons = []
    for name, value in values.items():
        x = value.detach().cpu()[mask]
        if not torch.isfinite(x).all():
            share = float((~torch.isfinite(x)).float().mean())
            reasons.append(f"{name} is not finite in {share:.0%} of the mask")
    if "M0" in values:
        zero = float((values["M0"].detach().cpu()[mask] == 0).float().mean())
        if zero > ZERO_M0_FRACTION:
            reasons.append(f"M0 is zero in {zero:.0%} of the mask")
    for name, lower in _lower_bounds().items():
        if name in values:
            pinned = float((values[name].detach().cpu()[mask] <= 1.01 * lower).float().mean())
            if pinned > AT_BOUND_FRACTION:
                reasons.append(f"{name} at its lower bound {lower:g} s in {pinned:.0%} of the mask")
    residual = maps.extras.get("relative_residual")
    if residual is not None and residual > RESIDUAL_LIMIT:
        reasons.append(
            f"the maps leave {residual:.0%} of the data energy unexplained "
            f"(limit {RESIDUAL_LIMIT:.0%})"
        )
    return reasons
