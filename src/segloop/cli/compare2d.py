"""``segloop segment IMG ... --compare-with ENGINE``: one figure with the image, the prompts and
each engine's mask (the polyp workflow's side-by-side of a base and a fine-tuned model).

Each panel's title gives the engine, the model's own predicted IoU of its mask (SAM-family
IoU heads; "no score" for engines without one, e.g. ``classic``), the mask's area in pixels
and its IoU with the first engine's mask. Drawing only (matplotlib, Agg); the masks come
from segloop.engines.image2d.
Part of the CLI, the top layer: library code must not import it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from segloop.io.image2d import Image2D
from segloop.types import Prompts

__all__ = ["write_comparison"]


def _display(image: Image2D) -> npt.NDArray[np.uint8]:
    from segloop.engines.image2d import to_uint8_image

    return to_uint8_image(image.pixels, image.modality)


def _iou(a: npt.NDArray[np.bool_], b: npt.NDArray[np.bool_]) -> float:
    union = int((a | b).sum())
    return int((a & b).sum()) / union if union else 1.0


def write_comparison(image: Image2D, prompts: Prompts,
                     results: list[tuple[str, npt.NDArray[np.bool_], float | None]], path: Path
                     ) -> Path:
    """Write a PNG with the image + prompts and one overlay panel per ``(engine, mask,
    predicted score or None)``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from segloop.io.writers import atomic_path

    shown = _display(image)
    cmap: Any = None if shown.ndim == 3 else "gray"
    n = 1 + len(results)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 4.2 * image.height / max(image.width, 1) + 0.6))
    for ax in axes:
        ax.imshow(shown, cmap=cmap)
        ax.axis("off")
        if prompts.box is not None:
            x0, y0, x1, y1 = prompts.box
            ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0 + 1, y1 - y0 + 1,
                                       fill=False, edgecolor="yellow", linewidth=1.5))
        for (x, y), lab in zip(prompts.points.tolist(), prompts.labels.tolist(), strict=True):
            ax.plot(x, y, marker="*", markersize=12, color="lime" if lab == 1 else "red",
                    markeredgecolor="white")
    axes[0].set_title(f"image {image.width}x{image.height}")
    first = results[0][1]
    for ax, (name, mask, score) in zip(axes[1:], results, strict=True):
        overlay = np.zeros((*mask.shape, 4), np.float32)
        overlay[mask] = (0.1, 0.5, 1.0, 0.45)
        ax.imshow(overlay)
        said = "no score" if score is None else f"predicted IoU {score:.3f}"
        ax.set_title(f"{name}: {said}\n{int(mask.sum())} px, IoU vs {results[0][0]} "
                     f"{_iou(mask, first):.3f}", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path
