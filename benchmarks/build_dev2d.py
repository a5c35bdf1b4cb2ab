"""Build a 2D development set of photographs, X-rays, dermoscopy and ultrasound (one object per
image) outside the repository, for the classic engine's 2D path (issue 17).

The 3D development sets and the 30 electron-microscopy slices of ``build_em2d.py`` say nothing
about pictures a user would actually upload: colour endoscopy photographs, chest X-rays, skin
photographs, ultrasound. This script takes public labelled images of those kinds from git
directories left by the team's fetch tool (``--mirrors/OWNER+NAME/repo``; read with ``git
show``, nothing is checked out) and writes ``--out/<kind>/images/<name>.png`` and
``--out/<kind>/masks/<name>.png`` (0/255, the same file name), plus ``--out/manifest.csv``
(kind, name, source repository, commit, source paths, original and written size, licence,
the target). Nothing is copied into the repository. Images are written as the source gives
them (colour stays colour, an RGB file with grey content stays RGB, as a user's upload
would), losslessly as PNG; only their size may shrink (``--max-side``, default 1024 px, area
resampling; masks nearest-neighbour) so that a run over the set stays short.

Every mask is reduced to ONE object, because the protocol prompts one object with its box:
the largest 8-connected component of the dataset's foreground. Why the largest: a box
around two polyps or two lungs asks for something the user would not draw as one box
(a box around both lungs holds the whole mediastinum), and the largest is the object the
annotator most clearly meant. Holes in the component are kept as the dataset drew them.

Sources (the commit is the mirror's HEAD when this was written; the script reads HEAD and
records the commit it read in the manifest):

- ``polyp``: Kvasir-SEG (Jha et al., MMM 2020; "for research and educational purposes",
  Simula) as kept in ``ViniciusSimm/Colo-Retal-Induscon2023`` (no licence file; commit
  ``f459d0c668838c383b5b09e2c89db4efa3cee03a``): ``datasets/Kvasir-SEG/images/*.jpg`` and
  ``masks/*.jpg`` (that repository resized them to 256 x 256, aspect not kept; masks are
  JPEG, thresholded at 128). 30 of the 998, evenly spaced by sorted name. Target: the polyp.
- ``polyp_cvc``: CVC-ClinicDB (Bernal et al. 2015; "research and educational purposes only",
  Hospital Clinic / CVC Barcelona) from the same repository and commit:
  ``datasets/CVC-ClinicDB/images/N.jpg`` and ``masks/N.jpg`` (256 x 256 JPEG there too). The
  612 frames come from 29 video sequences, so neighbouring frames show the same polyp: one
  frame per sequence (its first frame number + 5, clamped to the sequence), 29 images.
- ``xray_lung``: chest X-rays of ``ieee8023/covid-chestxray-dataset`` (Cohen et al. 2020;
  per-image licences, in the manifest: Apache-2.0, CC BY 4.0, CC BY-NC-SA 4.0 ...) as kept
  in ``GeneralBlockchain/covid-19-chest-xray-lung-bounding-boxes-dataset`` (CC BY 4.0;
  commit ``103688cbcdd1bada8900b9a9b17fafa45c7ea368``; ``images/<file>``, ``metadata.csv``),
  with the human lung outlines of ``v7labs/covid-19-xray-dataset`` (CC BY 4.0; commit
  ``51fca0d0d089b2fa7b0b95f0aed32ebaebd561f2``; ``annotations/covid-only.zip`` names each
  annotation's image, ``annotations/all-images-semantic-masks/<id>.png`` holds it, 255 =
  Lung, 127 = Ignore). V7's lungs include the part behind the heart (its README). Taken: X-ray
  images with exactly two Lung outlines, no Ignore region (pacemakers, markup), view PA or
  AP, both sides at least 400 px, mask and image of the same size; 30 of them evenly spaced
  in V7's id order. Target: the larger lung (the largest component).
- ``dermoscopy``: PH2 (Mendonca et al., EMBC 2013; free for research, ADDI project) as kept
  in ``chelseaparlett/SkinCancerVariation`` (no licence file; commit
  ``e06866b70a49acfba5762f289ca169f056e97997``): ``PH2Dataset/PH2 Dataset images/IMDnnn/
  IMDnnn_Dermoscopic_Image/IMDnnn.bmp`` and ``IMDnnn_lesion/IMDnnn_lesion.bmp`` (765 x 572
  or so). 30 of the 200, evenly spaced by sorted name (nevi and melanomas alike). Target: the
  lesion.
- ``ultrasound``: BUSI breast ultrasound (Al-Dhabyani et al., Data in Brief 2020; CC0 on
  Kaggle) as kept in ``sarah-antillia/Tensorflow-Image-Segmentation-Augmented-Breast-
  Ultrasound`` (Apache-2.0 for that repository; commit
  ``eb994cdedd4186ce2f9ccce0e2357aa30b374f96``): all 22 ``projects/TensorflowSlightlyFlexibleUNet/
  Breast-Ultrasound/mini_test/images/malignant (N).png`` with ``masks/malignant (N)_mask.png``
  (original sizes, RGB files with grey content). Target: the tumour.

Usage (from the repo root)::

    PYTHONPATH=src .venv/bin/python benchmarks/build_dev2d.py --mirrors /work/.mirror \\
        --out /work/dev2d
    PYTHONPATH=src .venv/bin/python benchmarks/bench_classic_2d.py /work/dev2d
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image

from segloop.engines.classic.morphology import largest

__all__ = ["Item", "Mirror", "largest_component", "main", "write_pair"]

T = TypeVar("T")

KVASIR_REPO = "ViniciusSimm/Colo-Retal-Induscon2023"
COVID_REPO = "GeneralBlockchain/covid-19-chest-xray-lung-bounding-boxes-dataset"
V7_REPO = "v7labs/covid-19-xray-dataset"
PH2_REPO = "chelseaparlett/SkinCancerVariation"
BUSI_REPO = "sarah-antillia/Tensorflow-Image-Segmentation-Augmented-Breast-Ultrasound"
BUSI_DIR = "projects/TensorflowSlightlyFlexibleUNet/Breast-Ultrasound/mini_test"
PH2_DIR = "PH2Dataset/PH2 Dataset images"
#: first frame of each of CVC-ClinicDB's 29 video sequences (its README), and the last frame
CVC_SEQUENCE_STARTS = (1, 26, 51, 68, 79, 104, 127, 152, 178, 200, 206, 228, 253, 278, 298, 318,
                       343, 364, 384, 409, 429, 448, 467, 479, 504, 529, 547, 572, 592)
CVC_LAST = 612
MANIFEST_FIELDS = ["kind", "name", "repo", "commit", "image_src", "mask_src", "orig_w", "orig_h",
                   "w", "h", "channels", "licence", "target"]


class Mirror:
    """A fetched repository's bare git directory (``MIRRORS/OWNER+NAME/repo``), read at HEAD."""

    def __init__(self, mirrors: Path, repo: str) -> None:
        self.repo = repo
        base = mirrors / repo.replace("/", "+") / "repo"
        self.git_dir = base / ".git" if (base / ".git").is_dir() else base
        if not self.git_dir.is_dir():
            raise SystemExit(f"no mirror of {repo} at {base}: fetch it first")
        self.commit = self._git("rev-parse", "HEAD").decode().strip()

    def _git(self, *args: str) -> bytes:
        return subprocess.run(["git", "--git-dir", str(self.git_dir), *args], check=True,
                              capture_output=True).stdout

    def blob(self, path: str) -> bytes:
        """The file at HEAD."""
        return self._git("show", f"HEAD:{path}")

    def image(self, path: str) -> Image.Image:
        """The file at HEAD as a PIL image (loaded)."""
        im = Image.open(io.BytesIO(self.blob(path)))
        im.load()
        return im

    def ls(self, folder: str) -> list[str]:
        """Paths of the files under ``folder`` at HEAD, sorted."""
        out = self._git("ls-tree", "-r", "--name-only", "HEAD", "--", folder).decode()
        return sorted(line for line in out.splitlines() if line)


@dataclass(frozen=True)
class Item:
    """One image/mask pair to write."""

    kind: str
    name: str
    repo: str
    commit: str
    image_src: str
    mask_src: str
    image: Image.Image
    fg: np.ndarray  # (H, W) bool: the dataset's foreground at the image's size
    licence: str
    target: str


def largest_component(fg: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of the ``(H, W)`` bool ``fg`` (empty if none; equal
    largest ones all kept, as ``morphology.largest`` does)."""
    return largest(np.asarray(fg, dtype=bool))


def _as_written(im: Image.Image) -> Image.Image:
    """Grey stays grey (L or I;16 as given), everything else becomes RGB (alpha, palette)."""
    if im.mode in ("L", "I;16", "I"):
        return im
    return im.convert("RGB")


def write_pair(item: Item, out: Path, max_side: int) -> dict[str, str | int]:
    """Write the image and its one-object mask (0/255 PNG); the manifest row."""
    im = _as_written(item.image)
    mask = largest_component(item.fg)
    w0, h0 = im.size
    scale = min(1.0, max_side / max(w0, h0))
    if scale < 1.0:
        size = (max(1, round(w0 * scale)), max(1, round(h0 * scale)))
        im = im.resize(size, Image.Resampling.BOX)
        mask = np.asarray(Image.fromarray(mask).resize(size, Image.Resampling.NEAREST))
    (out / item.kind / "images").mkdir(parents=True, exist_ok=True)
    (out / item.kind / "masks").mkdir(parents=True, exist_ok=True)
    im.save(out / item.kind / "images" / f"{item.name}.png")
    Image.fromarray((mask * 255).astype(np.uint8)).save(out / item.kind / "masks" / f"{item.name}.png")
    return {"kind": item.kind, "name": item.name, "repo": item.repo, "commit": item.commit,
            "image_src": item.image_src, "mask_src": item.mask_src, "orig_w": w0, "orig_h": h0,
            "w": im.size[0], "h": im.size[1], "channels": len(im.getbands()),
            "licence": item.licence, "target": item.target}


def _grey(im: Image.Image) -> np.ndarray:
    return np.asarray(im.convert("L"))


def _every(items: list[T], n: int) -> list[T]:
    """``n`` of ``items`` evenly spaced (first and last included), in their order."""
    if len(items) <= n:
        return items
    idx = np.linspace(0, len(items) - 1, n).round().astype(int)
    return [items[i] for i in idx]


def kvasir(m: Mirror, n: int) -> Iterator[Item]:
    """Kvasir-SEG polyps (see the module docstring)."""
    for ipath in _every(m.ls("datasets/Kvasir-SEG/images"), n):
        stem = Path(ipath).stem
        mpath = f"datasets/Kvasir-SEG/masks/{Path(ipath).name}"
        yield Item("polyp", f"kvasir_{stem}", m.repo, m.commit, ipath, mpath, m.image(ipath),
                   _grey(m.image(mpath)) >= 128, "Kvasir-SEG: research and education (Simula)",
                   "polyp, largest component")


def cvc(m: Mirror) -> Iterator[Item]:
    """CVC-ClinicDB polyps, one frame per video sequence (see the module docstring)."""
    ends = [*CVC_SEQUENCE_STARTS[1:], CVC_LAST + 1]
    for seq, (start, nxt) in enumerate(zip(CVC_SEQUENCE_STARTS, ends, strict=True), 1):
        frame = min(start + 5, nxt - 1)
        ipath, mpath = f"datasets/CVC-ClinicDB/images/{frame}.jpg", f"datasets/CVC-ClinicDB/masks/{frame}.jpg"
        yield Item("polyp_cvc", f"cvc_seq{seq:02d}_f{frame:03d}", m.repo, m.commit, ipath, mpath,
                   m.image(ipath), _grey(m.image(mpath)) >= 128,
                   "CVC-ClinicDB: research and education only", "polyp, largest component")


def xray_lungs(covid: Mirror, v7: Mirror, n: int) -> Iterator[Item]:
    """Chest X-rays with V7's lung outlines (see the module docstring)."""
    meta: dict[str, dict[str, str]] = {}
    for row in csv.DictReader(io.StringIO(covid.blob("metadata.csv").decode("utf-8", "replace"))):
        meta[row["filename"]] = row
    have = set(Path(p).name for p in covid.ls("images"))
    chosen: list[tuple[str, str, dict[str, str]]] = []
    with zipfile.ZipFile(io.BytesIO(v7.blob("annotations/covid-only.zip"))) as zf:
        for entry in sorted(zf.namelist()):
            doc = json.loads(zf.read(entry))
            names = [a["name"] for a in doc["annotations"]]
            fname = doc["image"]["original_filename"]
            row = meta.get(fname)
            if (names.count("Lung") != 2 or "Ignore" in names or fname not in have or row is None
                    or row.get("modality") != "X-ray" or row.get("view") not in ("PA", "AP")
                    or min(doc["image"]["width"], doc["image"]["height"]) < 400):
                continue
            chosen.append((Path(entry).stem, fname, row))
    for v7_id, fname, row in _every(chosen, n):
        ipath, mpath = f"images/{fname}", f"annotations/all-images-semantic-masks/{v7_id}.png"
        im = covid.image(ipath)
        sem = np.asarray(v7.image(mpath))
        if sem.ndim == 3:
            sem = sem[..., 0]
        if sem.shape != (im.size[1], im.size[0]):
            print(f"skip {fname}: mask {sem.shape} vs image {im.size}", file=sys.stderr)
            continue
        yield Item("xray_lung", f"cxr_{v7_id}", f"{covid.repo} + {v7.repo}",
                   f"{covid.commit[:12]} + {v7.commit[:12]}", ipath, mpath, im, sem == 255,
                   f"image: {row.get('license') or 'unstated'}; outlines: CC BY 4.0 (V7)",
                   "the larger lung (V7 outline, includes the part behind the heart)")


def ph2(m: Mirror, n: int) -> Iterator[Item]:
    """PH2 dermoscopy lesions (see the module docstring)."""
    ids = sorted({p.split("/")[2] for p in m.ls(PH2_DIR) if p.endswith("_lesion.bmp")})
    for case in _every(ids, n):
        ipath = f"{PH2_DIR}/{case}/{case}_Dermoscopic_Image/{case}.bmp"
        mpath = f"{PH2_DIR}/{case}/{case}_lesion/{case}_lesion.bmp"
        yield Item("dermoscopy", f"ph2_{case}", m.repo, m.commit, ipath, mpath, m.image(ipath),
                   _grey(m.image(mpath)) >= 128, "PH2: free for research (ADDI project)",
                   "skin lesion, largest component")


def busi(m: Mirror) -> Iterator[Item]:
    """BUSI malignant breast tumours (see the module docstring)."""
    for ipath in m.ls(f"{BUSI_DIR}/images"):
        stem = Path(ipath).stem  # "malignant (N)"
        mpath = f"{BUSI_DIR}/masks/{stem}_mask.png"
        number = stem.split("(")[-1].rstrip(")")
        yield Item("ultrasound", f"busi_malignant_{int(number):02d}", m.repo, m.commit, ipath, mpath,
                   m.image(ipath), _grey(m.image(mpath)) > 0, "BUSI: CC0 (Kaggle)",
                   "tumour, largest component")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--mirrors", type=Path, default=Path("/work/.mirror"))
    ap.add_argument("--out", type=Path, default=Path("/work/dev2d"))
    ap.add_argument("--per-kind", type=int, default=30, help="images per kind (where there are more)")
    ap.add_argument("--max-side", type=int, default=1024, help="downsample larger images to this")
    args = ap.parse_args(argv)
    kv = Mirror(args.mirrors, KVASIR_REPO)
    sources = [kvasir(kv, args.per_kind), cvc(kv),
               xray_lungs(Mirror(args.mirrors, COVID_REPO), Mirror(args.mirrors, V7_REPO), args.per_kind),
               ph2(Mirror(args.mirrors, PH2_REPO), args.per_kind),
               busi(Mirror(args.mirrors, BUSI_REPO))]
    rows = [write_pair(item, args.out, args.max_side) for src in sources for item in src]
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "manifest.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=MANIFEST_FIELDS)
        w.writeheader()
        w.writerows(rows)
    counts: dict[str, int] = {}
    for r in rows:
        counts[str(r["kind"])] = counts.get(str(r["kind"]), 0) + 1
    print(", ".join(f"{k} {v}" for k, v in counts.items()), f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
