"""Per-image comparison figures and the base-vs-fine-tuned summary of a 2D evaluation
(``segloop eval --images``), as the polyp fine-tuning workflow shows them.

One PNG per image: the image with the prompt box, the ground truth, and each model's mask
over the image titled with its IoU and Dice. The summary names the first model the base and
the second the fine-tuned one and gives the improvement of mean IoU in points (IoU x 100).
Drawing only (matplotlib, Agg). Must not import the API, the jobs layer or the CLI.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["format_comparison", "safe_stem", "write_image_figure"]


def safe_stem(name: str) -> str:
    """A file-name-safe version of an image name (path separators and odd characters -> _)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name).stem or name)
    return stem[:120] or "image"


def write_image_figure(path: Path, pixels: npt.NDArray[np.uint8], truth: npt.NDArray[np.bool_],
                       box: Sequence[float] | None,
                       preds: Sequence[tuple[str, npt.NDArray[np.bool_], float, float]]) -> Path:
    """Write one image's figure: image (+ box), truth, then ``(model, mask, iou, dice)`` panels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from segloop.io.writers import atomic_path

    h, w = truth.shape
    n = 2 + len(preds)
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n, 3.6 * h / max(w, 1) + 0.7))
    cmap: Any = None if pixels.ndim == 3 else "gray"
    panels: list[tuple[str, npt.NDArray[np.bool_] | None, tuple[float, ...]]] = [
        ("image", None, ()), ("ground truth", truth, (0.1, 0.9, 0.2, 0.45))]
    panels += [(f"{m}\nIoU {iou:.3f} · Dice {dice:.3f}", mask, (0.1, 0.5, 1.0, 0.45))
               for m, mask, iou, dice in preds]
    for ax, (title, mask, colour) in zip(axes, panels, strict=True):
        ax.imshow(pixels, cmap=cmap)
        if mask is not None:
            overlay = np.zeros((h, w, 4), np.float32)
            overlay[mask] = colour
            ax.imshow(overlay)
        if box is not None:
            x0, y0, x1, y1 = box
            ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0 + 1, y1 - y0 + 1, fill=False,
                                   edgecolor="yellow", linewidth=1.2))
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
    return path


def format_comparison(summary: dict[str, dict[str, float]], base: str, tuned: str) -> str:
    """The polyp workflow's closing lines: base and fine-tuned mean IoU, improvement in points."""
    b, t = summary[base]["mean_iou"], summary[tuned]["mean_iou"]
    return "\n".join([
        f"Base model ({base}) mean IoU: {b:.4f}",
        f"Fine-tuned model ({tuned}) mean IoU: {t:.4f}",
        f"Improvement: {100 * (t - b):+.2f} points of IoU ({int(summary[tuned]['n'])} images)",
    ])
