"""Where training records come from: 2D image/mask folders, 3D manifests (``segloop eval``'s)
and the server's datastore, and their split into train and validation **by patient**, never
by slice (:func:`split_patients`, seeded).

Every source becomes a list of :class:`~segloop.train.records.ImageRecord` (uint8 frames
``(Z, H, W)`` or ``(Z, H, W, 3)`` and a bool truth ``(Z, H, W)``; a 2D image is a one-frame
record; a volume's frames are its canonical axial slices with H = y, W = x, scaled as MedSAM2
does by :func:`segloop.engines.sam2.preprocess.to_uint8_volume`).

Numpy, PIL, segloop.io and segloop.datastore only: must not import torch, the API, the
engines' sessions or segloop.train.data.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from segloop.errors import InputError
from segloop.train.records import IMAGE_SUFFIXES, U8, Bool, ImageRecord

__all__ = [
    "datastore_manifest",
    "load_folder_records",
    "load_folders",
    "load_manifest_records",
    "read_image_file",
    "read_mask_file",
    "split_patients",
    "split_records",
]

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------- reading 2D


def _to_uint8(arr: npt.NDArray[Any]) -> U8:
    if arr.dtype == np.uint8:
        return arr
    a = arr.astype(np.float64)
    lo, hi = (float(v) for v in np.percentile(a, [0.5, 99.5]))
    if hi <= lo:
        return np.zeros(a.shape, np.uint8)
    return np.asarray(np.clip((a - lo) / (hi - lo) * 255.0, 0, 255), np.uint8)


def read_image_file(path: Path) -> U8:
    """A png/jpg/tif image as uint8 ``(H, W)`` (grey) or ``(H, W, 3)`` (RGB; alpha dropped).

    16-bit and float images are scaled to uint8 over their 0.5-99.5 percentiles.
    """
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.mode in ("RGB", "RGBA", "P", "CMYK", "YCbCr", "LA"):
                arr = np.asarray(im.convert("RGB") if im.mode != "LA" else im.convert("L"))
            else:
                arr = np.asarray(im)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read image {path}: {exc}") from exc
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3):
        raise InputError(f"image {path} has shape {arr.shape}: expected (H, W) or (H, W, 3)")
    return _to_uint8(arr)


def read_mask_file(path: Path) -> Bool:
    """A binary mask image as bool ``(H, W)``: pixels above half the maximum are foreground."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("L") if im.mode in ("RGB", "RGBA", "P") else im)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read mask {path}: {exc}") from exc
    if arr.ndim == 3:
        arr = arr[..., 0]
    top = float(arr.max()) if arr.size else 0.0
    return np.asarray(arr > top / 2.0, bool) if top > 0 else np.zeros(arr.shape, bool)


def _list_images(folder: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."):
            out.setdefault(p.stem, p)
    return out


def _patient_of(name: str, pattern: str | None) -> str:
    if not pattern:
        return name
    m = re.search(pattern, name)
    if m is None:
        return name
    return m.group(1) if m.groups() else m.group(0)


def load_folder_records(images: Path, masks: Path, patient_pattern: str | None = None
                        ) -> list[ImageRecord]:
    """Pair the images of ``images`` with the masks of ``masks`` by file stem.

    ``patient_pattern``: a regular expression whose first group (or whole match) in the file
    stem is the patient id (default: each image is its own patient). Raises InputError when a
    folder is missing or empty, an image has no mask, or shapes differ.
    """
    for d, what in ((images, "--images"), (masks, "--masks")):
        if not d.is_dir():
            raise InputError(f"{what} {d} is not a folder")
    imgs, msks = _list_images(images), _list_images(masks)
    if not imgs:
        raise InputError(f"{images} holds no image ({', '.join(IMAGE_SUFFIXES)})")
    missing = sorted(set(imgs) - set(msks))
    if missing:
        raise InputError(f"{len(missing)} image(s) of {images} have no mask with the same name in"
                         f" {masks}: {', '.join(missing[:5])}")
    records: list[ImageRecord] = []
    for stem, ipath in imgs.items():
        img = read_image_file(ipath)
        mask = read_mask_file(msks[stem])
        if mask.shape != img.shape[:2]:
            raise InputError(f"mask {msks[stem]} is {mask.shape} but image {ipath} is"
                             f" {img.shape[:2]}")
        records.append(ImageRecord(name=stem, patient_id=_patient_of(stem, patient_pattern),
                                   frames=img[None], truth=mask[None]))
    return records


def load_folders(images: Path, masks: Path, *, val_fraction: float, seed: int,
                 patient_pattern: str | None = None
                 ) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """Train and validation records of a 2D dataset.

    With ``train/`` and ``val/`` sub-folders in both folders they are used as given; otherwise
    the patients are split with :func:`split_patients`.
    """
    if all((d / s).is_dir() for d in (images, masks) for s in ("train", "val")):
        train = load_folder_records(images / "train", masks / "train", patient_pattern)
        val = load_folder_records(images / "val", masks / "val", patient_pattern)
        both = {r.patient_id for r in train} & {r.patient_id for r in val}
        if both:
            log.warning("patients in both train/ and val/: %s", ", ".join(sorted(both)[:5]))
        return train, val
    records = load_folder_records(images, masks, patient_pattern)
    return split_records(records, val_fraction, seed)


# ---------------------------------------------------------------------------------- reading 3D


def datastore_manifest(datastore: Path) -> Path:
    """The manifest of the server's reviewed masks (``<datastore>/manifest.csv``)."""
    from segloop.datastore.local import Datastore

    return Datastore(datastore).require_manifest()


def _picture_record(case: Any, picture: Path) -> ImageRecord | None:
    """A datastore case of a 2D job as the 2D engines see it: its picture (8-bit grey or RGB,
    upright) and its label's one slice (stored ``(X = column, Y = row, 1)``) as rows/columns."""
    import nibabel as nib

    img = read_image_file(picture)
    lab = np.asarray(nib.load(str(case.label)).dataobj)  # type: ignore[attr-defined]
    lab2 = lab.reshape(lab.shape[0], lab.shape[1]).T
    truth = lab2 > 0 if case.label_value is None else lab2 == case.label_value
    if truth.shape != img.shape[:2]:
        raise InputError(f"case {case.case_id}: label {truth.shape} and picture {img.shape[:2]}"
                         " differ in size")
    if not truth.any():
        log.warning("case %s: the target is empty; skipped", case.case_id)
        return None
    return ImageRecord(name=case.case_id, patient_id=case.patient_id, frames=img[None],
                       truth=truth[None])


def load_manifest_records(manifest: Path, root: Path | None,
                          window: str | tuple[float, float] | None = "auto"
                          ) -> list[ImageRecord]:
    """Read every case of a ``segloop eval`` manifest as a record (canonical axial slices).

    Frames are scaled with MedSAM2's rule (CT window / MR percentiles) as uint8 ``(Z, Y, X)``
    radiological views (:mod:`segloop.io.radiological`, the orientation inference uses); the
    truth is ``label == label_value`` (or ``> 0``) resampled onto the image in physical
    space. A volume shared by several rows is read once. A datastore case of a reviewed 2D job
    (:func:`segloop.datastore.local.case_picture`) is its picture as the 2D engines see it,
    upright with RGB kept, one frame.
    """
    from segloop.datastore.local import case_picture
    from segloop.datastore.manifest import read_manifest
    from segloop.engines.sam2.preprocess import to_uint8_volume
    from segloop.io import load_label, load_volume
    from segloop.io.radiological import volume_to_views

    cases = read_manifest(manifest, root)
    cache: dict[Path, tuple[Any, U8]] = {}
    records: list[ImageRecord] = []
    for case in cases:
        picture = case_picture(case.image)
        if picture is not None:  # a reviewed 2D job: the picture upright, RGB kept
            rec = _picture_record(case, picture)
            if rec is not None:
                records.append(rec)
            continue
        if case.image not in cache:
            vol = load_volume(case.image)
            canon = vol.canonical()
            modality = case.modality or canon.modality
            cache[case.image] = (vol, to_uint8_volume(np.asarray(canon.data), modality, window))
        vol, u8 = cache[case.image]
        value: int | str = "any" if case.label_value is None else case.label_value
        truth_xyz = load_label(case.label, vol, value)
        truth = volume_to_views(np.asarray(truth_xyz, bool))
        if not truth.any():
            log.warning("case %s: the target is empty; skipped", case.case_id)
            continue
        records.append(ImageRecord(name=case.case_id, patient_id=case.patient_id, frames=u8,
                                   truth=truth))
    if not records:
        raise InputError(f"manifest {manifest}: no case has a non-empty target")
    return records


# ---------------------------------------------------------------------------------- splitting


def split_patients(patient_ids: Sequence[str], val_fraction: float, seed: int
                   ) -> tuple[set[str], set[str]]:
    """Split unique patient ids into (train, val) sets, seeded; never one patient on both sides.

    At least one patient goes to validation when there are two or more; with a single patient
    the validation set is empty (the caller then validates on the training data and says so).
    """
    ids = sorted(set(patient_ids))
    if len(ids) < 2:
        return set(ids), set()
    rng = np.random.default_rng(seed)
    order = [ids[i] for i in rng.permutation(len(ids))]
    n_val = min(len(ids) - 1, max(1, round(val_fraction * len(ids))))
    return set(order[n_val:]), set(order[:n_val])


def split_records(records: Sequence[ImageRecord], val_fraction: float, seed: int
                  ) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """Records split by patient with :func:`split_patients` (file order kept on each side)."""
    train_ids, val_ids = split_patients([r.patient_id for r in records], val_fraction, seed)
    return ([r for r in records if r.patient_id in train_ids],
            [r for r in records if r.patient_id in val_ids])
