"""Figures in the layout of the paper's Figs. 4-5: truth row, then maps and error rows."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from lorein.data.output import replacing  # noqa: E402
from lorein.eval.metrics import error_map, least_squares_scale  # noqa: E402

DISPLAY: dict[str, tuple[float, float, float, str]] = {
    "M0": (1.0, 0.0, 1.0, "a.u."),
    "T1": (1e3, 0.0, 3500.0, "ms"),
    "T2": (1e3, 0.0, 200.0, "ms"),
    "T2star": (1e3, 0.0, 100.0, "ms"),
    "B0": (1.0, -60.0, 60.0, "Hz"),
}
"""Map -> (factor from SI, display min, display max, unit); ranges follow the paper's caps. M0's
maximum is the truth's largest value in the mask instead (:func:`_window`): its scale depends
on the signal model (``megre``'s apparent M0 is about a tenth of the equilibrium's)."""

LABELS = {"M0": "M0", "T1": "T1", "T2": "T2", "T2star": "T2*", "B0": "B0"}


def _axial(x: torch.Tensor, z: int) -> torch.Tensor:
    """Slice ``z`` of ``[nz, ny, nx]``, anterior up when shown with origin='lower'."""
    return x[z].detach().cpu().float()


def _window(name: str, ref: torch.Tensor, mask: torch.Tensor) -> tuple[float, float, float, str]:
    """:data:`DISPLAY`'s entry of ``name``, M0's maximum the truth's largest value in ``mask``."""
    factor, lo, hi, unit = DISPLAY[name]
    if name == "M0":
        inside = ref[mask.bool()]
        largest = float(inside.max()) if inside.numel() else 0.0
        hi = float(f"{largest:.2g}") if largest > 0 else hi
    return factor, lo, hi, unit


def comparison_figure(
    path: Path,
    truth: dict[str, torch.Tensor],
    mask: torch.Tensor,
    results: dict[str, dict[str, torch.Tensor]],
    scores: dict[str, dict[str, dict[str, float]]],
    slice_index: int | None = None,
    error_fraction: float = 0.3,
) -> None:
    """Write a PNG: the truth row, then for each method a map row and an error row.

    Parameters
    ----------
    path
        PNG file to write.
    truth
        Truth maps by name, ``[nz, ny, nx]`` SI units.
    mask
        Truth mask; maps are shown inside it.
    results
        Method -> its maps.
    scores
        Method -> map -> {"nrmse" | "rmse_hz": value}; written under each error map.
    slice_index
        Axial slice shown (default: the central one).
    error_fraction
        Error maps are windowed to +- this fraction of the map's display range.
    """
    names = [n for n in DISPLAY if n in truth and any(n in r for r in results.values())]
    nz = mask.shape[0]
    z = nz // 2 if slice_index is None else slice_index
    m = _axial(mask.float(), z)
    rows = 1 + 2 * len(results)
    fig, axes = plt.subplots(
        rows, len(names), figsize=(2.4 * len(names), 2.3 * rows + 0.35), squeeze=False
    )
    for col, name in enumerate(names):
        ref = truth[name]
        factor, lo, hi, unit = _window(name, ref, mask)
        width = error_fraction * (hi - lo)
        axes[0, col].set_title(
            f"{LABELS[name]} [{unit}]\nwindow {lo:g} to {hi:g}, error \u00b1{width:g}", fontsize=8
        )
        _show(
            axes[0, col], _axial(ref, z) * factor * m, lo, hi, "gray" if name == "M0" else "viridis"
        )
        for i, (method, maps) in enumerate(results.items()):
            row = 1 + 2 * i
            ax_map, ax_err = axes[row, col], axes[row + 1, col]
            if name not in maps:
                ax_map.axis("off")
                ax_err.axis("off")
                continue
            x = maps[name].float()
            if name == "M0":
                x = least_squares_scale(x, ref, mask) * x
            _show(ax_map, _axial(x, z) * factor * m, lo, hi, "gray" if name == "M0" else "viridis")
            err = _axial(error_map(name, maps[name].float(), ref, mask), z) * factor
            _show(ax_err, err, -width, width, "RdBu_r")
            score = scores.get(method, {}).get(name, {})
            text = (
                f"RMSE {score['rmse_hz']:.2f} Hz"
                if "rmse_hz" in score
                else f"NRMSE {score.get('nrmse', float('nan')):.3f}"
            )
            ax_err.set_xlabel(text, fontsize=8)
            if col == 0:
                ax_map.set_ylabel(method, fontsize=9)
                ax_err.set_ylabel("error", fontsize=9)
    axes[0, 0].set_ylabel("truth", fontsize=9)
    height = 2.3 * rows + 0.35
    fig.suptitle(f"axial slice {z} of {nz} (0-based)", fontsize=9)
    fig.tight_layout(rect=(0.0, 0.0, 1.0, 1.0 - 0.35 / height))
    with replacing(path) as tmp:  # readers never see a half-written figure
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def _show(ax: plt.Axes, image: torch.Tensor, lo: float, hi: float, cmap: str) -> None:
    ax.imshow(image.numpy(), origin="lower", cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
