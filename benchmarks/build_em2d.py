"""Build a small 2D image + mask set (one object per image) outside the repository, for
``segloop eval --images`` (issue 17: 2D images in the classic engine's evaluation).

Source: the 30 ISBI 2012 electron-microscopy training slices (512 x 512, 8-bit grey; Cardona
et al. 2010, the ISBI 2012 neuronal structures challenge) with their cell/membrane labels, as
kept in the public repository ``zhixuhao/unet`` (``data/membrane/train/image/N.png`` and
``label/N.png``; MIT for the repository's code). Each image's target is its largest cell (a
4-connected component of the label's cell class) that does not touch the image border; its
mask is written 0/255. Writes ``--out/images/em_NN.png`` and ``--out/masks/em_NN.png``;
nothing is copied into the repository.

Usage (from the repo root; ``--mirror`` is the git directory the team's fetch tool leaves)::

    PYTHONPATH=src .venv/bin/python benchmarks/build_em2d.py \\
        --mirror /work/.mirror/zhixuhao+unet/repo --out /work/scratch-classic/em2d
    segloop eval --images /work/scratch-classic/em2d/images \\
        --masks /work/scratch-classic/em2d/masks --engine classic --out OUT
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage as ndi

__all__ = ["largest_inner_cell", "main"]


def largest_inner_cell(label: np.ndarray) -> np.ndarray:
    """The largest 4-connected component of ``label > 127`` ``(H, W)`` that does not touch
    the border, as a bool mask (empty when there is none)."""
    cells, _ = ndi.label(label > 127)
    sizes = np.bincount(cells.ravel())
    sizes[0] = 0
    for edge in (cells[0], cells[-1], cells[:, 0], cells[:, -1]):
        sizes[np.unique(edge)] = 0
    k = int(np.argmax(sizes))
    return np.asarray(cells == k) if sizes[k] else np.zeros(label.shape, dtype=bool)


def _blob(mirror: Path, path: str) -> np.ndarray:
    raw = subprocess.run(["git", "--git-dir", str(mirror), "show", f"HEAD:{path}"],
                         check=True, capture_output=True).stdout
    return np.asarray(Image.open(io.BytesIO(raw)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mirror", default="/work/.mirror/zhixuhao+unet/repo")
    ap.add_argument("--out", default="/work/scratch-classic/em2d")
    args = ap.parse_args(argv)
    out = Path(args.out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    for i in range(30):
        img = _blob(Path(args.mirror), f"data/membrane/train/image/{i}.png")
        lab = _blob(Path(args.mirror), f"data/membrane/train/label/{i}.png")
        mask = largest_inner_cell(lab if lab.ndim == 2 else lab[..., 0])
        Image.fromarray(img).save(out / "images" / f"em_{i:02d}.png")
        Image.fromarray((mask * 255).astype(np.uint8)).save(out / "masks" / f"em_{i:02d}.png")
    print(f"30 images -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
