"""Synthetic training data for the tests: noisy images with a bright disc (2D), volumes with a
bright ellipsoid (3D) written as NIfTI with a manifest."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from segloop.train.records import ImageRecord


def disc_image(rng: np.random.Generator, size: int = 64, rgb: bool = False
               ) -> tuple[np.ndarray, np.ndarray]:
    """A noisy image with one bright disc: uint8 ``(H, W)`` (or ``(H, W, 3)``) and its mask."""
    yy, xx = np.mgrid[:size, :size]
    cx, cy = rng.uniform(size * 0.25, size * 0.75, 2)
    r = rng.uniform(size * 0.1, size * 0.22)
    mask = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
    shape = (size, size, 3) if rgb else (size, size)
    bright = mask[..., None] * np.array([120, 90, 60]) if rgb else mask * 120
    img = (rng.normal(60, 20, shape) + bright).clip(0, 255).astype(np.uint8)
    return img, mask


def disc_records(n: int, seed: int = 0, size: int = 64, prefix: str = "d") -> list[ImageRecord]:
    """``n`` one-frame records (each its own patient)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        img, m = disc_image(rng, size)
        out.append(ImageRecord(f"{prefix}{i}", f"{prefix}{i}", img[None], m[None]))
    return out


def write_disc_folders(root: Path, n_train: int, n_val: int, size: int = 64) -> tuple[Path, Path]:
    """``root/images/{train,val}/*.jpg`` (RGB) and ``root/masks/{train,val}/*.png``."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("val", n_val)):
        for d in ("images", "masks"):
            (root / d / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img, m = disc_image(rng, size, rgb=True)
            Image.fromarray(img).save(root / "images" / split / f"{split}{i:03d}.jpg")
            Image.fromarray((m * 255).astype(np.uint8)).save(
                root / "masks" / split / f"{split}{i:03d}.png")
    return root / "images", root / "masks"


def ball_volume(rng: np.random.Generator, shape: tuple[int, int, int] = (48, 48, 8)
                ) -> tuple[np.ndarray, np.ndarray]:
    """An MR-like volume ``(X, Y, Z)`` float32 with a bright ellipsoid, and its uint8 label."""
    x, y, z = np.mgrid[:shape[0], :shape[1], :shape[2]]
    cx, cy = rng.uniform(16, 32, 2)
    lab = ((x - cx) ** 2 + (y - cy) ** 2) / 100 + ((z - shape[2] / 2) ** 2) / 9 < 1
    img = rng.normal(100, 20, shape) + lab * 200
    return img.astype(np.float32), lab.astype(np.uint8)


def write_manifest(root: Path, n_cases: int, patients: list[str] | None = None) -> Path:
    """NIfTI volumes + labels under ``root`` and a manifest (with patient_id when given)."""
    rng = np.random.default_rng(1)
    root.mkdir(parents=True, exist_ok=True)
    lines = ["case_id,image,label,label_value,structure,modality"
             + (",patient_id" if patients else "")]
    for i in range(n_cases):
        img, lab = ball_volume(rng)
        nib.save(nib.Nifti1Image(img, np.eye(4)), str(root / f"img{i}.nii.gz"))
        nib.save(nib.Nifti1Image(lab, np.eye(4)), str(root / f"lab{i}.nii.gz"))
        row = f"case{i},img{i}.nii.gz,lab{i}.nii.gz,1,ball,MR"
        lines.append(row + (f",{patients[i]}" if patients else ""))
    path = root / "manifest.csv"
    path.write_text("\n".join(lines) + "\n")
    return path
