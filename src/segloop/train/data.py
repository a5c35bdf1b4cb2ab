"""Training data: 2D image/mask folders, 3D manifests and the server's datastore, as clips.

Every source becomes a list of :class:`ImageRecord` (uint8 frames ``(Z, H, W)`` or
``(Z, H, W, 3)`` and a bool truth ``(Z, H, W)``; a 2D image is a one-frame record; a volume's
frames are its canonical axial slices with H = y, W = x, scaled as MedSAM2 does by
:func:`segloop.engines.sam2.preprocess.to_uint8_volume`). Records are split into train and
validation **by patient**, never by slice (:func:`split_patients`, seeded).
:class:`ClipDataset` turns a record and a key slice into a :class:`Sample`: a clip of
``clip_length`` consecutive slices (forward or backward, so the memory path learns both
directions) whose first frame carries a prompt sampled from the truth with jitter (a box, a box
plus points, or positive/negative points). All randomness comes from the ``np.random.Generator``
the dataset owns (its state is saved in checkpoints for an identical resume).

Numpy, PIL and segloop.io only: must not import torch, the API or the engines' sessions.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from segloop.errors import InputError

__all__ = [
    "IMAGE_SUFFIXES",
    "ClipDataset",
    "ImageRecord",
    "PromptSample",
    "Sample",
    "datastore_manifest",
    "load_folder_records",
    "load_folders",
    "load_manifest_records",
    "read_image_file",
    "read_mask_file",
    "sample_prompt",
    "split_patients",
    "split_records",
]

log = logging.getLogger(__name__)

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")

U8 = npt.NDArray[np.uint8]
Bool = npt.NDArray[np.bool_]


@dataclass
class ImageRecord:
    """One image or volume with its target.

    frames: uint8 ``(Z, H, W)`` (grey) or ``(Z, H, W, 3)`` (RGB); Z = 1 for a 2D image.
    truth: bool ``(Z, H, W)``. patient_id: the split unit.
    """

    name: str
    patient_id: str
    frames: U8
    truth: Bool

    @property
    def n_frames(self) -> int:
        """Number of slices (1 for 2D)."""
        return int(self.frames.shape[0])


@dataclass(frozen=True)
class PromptSample:
    """Prompts on the first frame of a clip, in that frame's pixels.

    box: ``(x0, y0, x1, y1)`` inclusive (x = column, y = row) or None; points: ``(N, 2)``
    float ``(x, y)``; labels: ``(N,)`` int, 1 positive / 0 negative.
    """

    box: tuple[float, float, float, float] | None
    points: npt.NDArray[np.float64]
    labels: npt.NDArray[np.int64]


@dataclass(frozen=True)
class Sample:
    """One training or validation sample: a clip and its prompt.

    frames: uint8 ``(T, H, W)`` or ``(T, H, W, 3)``; truth: bool ``(T, H, W)``; the prompt
    is on frame 0; ``name`` says where the clip comes from (record, slices).
    """

    name: str
    frames: U8
    truth: Bool
    prompt: PromptSample


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


def load_manifest_records(manifest: Path, root: Path | None,
                          window: str | tuple[float, float] | None = "auto"
                          ) -> list[ImageRecord]:
    """Read every case of a ``segloop eval`` manifest as a record (canonical axial slices).

    Frames are scaled with MedSAM2's rule (CT window / MR percentiles) as uint8 ``(Z, Y, X)``
    radiological views (:mod:`segloop.io.radiological`, the orientation inference uses); the
    truth is ``label == label_value`` (or ``> 0``) resampled onto the image in physical
    space. A volume shared by several rows is read once.
    """
    from segloop.datastore.manifest import read_manifest
    from segloop.engines.sam2.preprocess import to_uint8_volume
    from segloop.io import load_label, load_volume
    from segloop.io.radiological import volume_to_views

    cases = read_manifest(manifest, root)
    cache: dict[Path, tuple[Any, U8]] = {}
    records: list[ImageRecord] = []
    for case in cases:
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


# ---------------------------------------------------------------------------------- prompts


def _bbox(mask: Bool) -> tuple[int, int, int, int]:
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    return int(xs[0]), int(ys[0]), int(xs[-1]), int(ys[-1])


def sample_prompt(mask: Bool, rng: np.random.Generator | None, jitter: float = 0.1,
                  mode: str | None = None) -> PromptSample:
    """A prompt for the ``(H, W)`` truth ``mask`` (which must not be empty).

    mode: ``"box"``, ``"box+points"``, ``"points"`` or None (drawn: 50 % box, 25 % each
    other). The box is the truth's bounding box with each side moved by up to ``jitter`` x its
    size (uniform); positive points lie in the truth, negative ones in the box outside it.
    With ``rng=None`` the prompt is the exact box (validation).
    """
    if not mask.any():
        raise InputError("cannot sample a prompt on an empty mask")
    h, w = mask.shape
    x0, y0, x1, y1 = _bbox(mask)
    if rng is None:
        return PromptSample((float(x0), float(y0), float(x1), float(y1)),
                            np.zeros((0, 2)), np.zeros((0,), np.int64))
    if mode is None:
        u = float(rng.random())
        mode = "box" if u < 0.5 else ("box+points" if u < 0.75 else "points")
    bw, bh = x1 - x0 + 1, y1 - y0 + 1
    d = rng.uniform(-jitter, jitter, size=4) * np.array([bw, bh, bw, bh])
    jx0 = float(np.clip(x0 + d[0], 0, w - 1))
    jy0 = float(np.clip(y0 + d[1], 0, h - 1))
    jx1 = float(np.clip(x1 + d[2], jx0, w - 1))
    jy1 = float(np.clip(y1 + d[3], jy0, h - 1))
    box = (jx0, jy0, jx1, jy1) if mode in ("box", "box+points") else None
    n_pos = 0 if mode == "box" else int(rng.integers(1, 3 if mode == "box+points" else 4))
    n_neg = 0 if mode == "box" else int(rng.integers(0, 2 if mode == "box+points" else 3))
    pos = np.argwhere(mask)
    region = np.zeros_like(mask)
    region[y0:y1 + 1, x0:x1 + 1] = True
    neg = np.argwhere(region & ~mask)
    if not len(neg):
        neg = np.argwhere(~mask)
    pts: list[list[float]] = []
    labels: list[int] = []
    for cand, n, lab in ((pos, n_pos, 1), (neg, n_neg, 0)):
        if n and len(cand):
            for i in rng.choice(len(cand), size=min(n, len(cand)), replace=False):
                yy, xx = cand[int(i)]
                pts.append([float(xx), float(yy)])
                labels.append(lab)
    if box is None and not labels:  # points mode needs at least one point
        yy, xx = pos[int(rng.integers(len(pos)))]
        pts, labels = [[float(xx), float(yy)]], [1]
    return PromptSample(box, np.asarray(pts, np.float64).reshape(-1, 2),
                        np.asarray(labels, np.int64))


# ---------------------------------------------------------------------------------- dataset


class ClipDataset:
    """Clips with prompts drawn from records; owns its random generator.

    Training items are every (record, slice) pair whose slice holds the target; a sample picks
    a direction (3D), takes up to ``clip_length`` consecutive slices from the item's slice, and
    a jittered prompt on that first slice. :meth:`validation_samples` gives fixed samples (the
    largest slice of each record, exact box, both directions) that use no randomness.
    """

    def __init__(self, records: Sequence[ImageRecord], clip_length: int,
                 rng: np.random.Generator, box_jitter: float = 0.1) -> None:
        if not records:
            raise InputError("no training data: the dataset has no record")
        self.records = list(records)
        self.clip_length = max(1, int(clip_length))
        self.rng = rng
        self.box_jitter = float(box_jitter)
        self.items: list[tuple[int, int]] = [
            (i, int(z)) for i, r in enumerate(self.records)
            for z in np.flatnonzero(r.truth.reshape(r.n_frames, -1).any(axis=1))
        ]
        if not self.items:
            raise InputError("no training data: every target is empty")

    def __len__(self) -> int:
        return len(self.items)

    def epoch_order(self, limit: int = 0) -> list[int]:
        """A shuffled order of item indices for one epoch (at most ``limit`` when > 0)."""
        order = [int(i) for i in self.rng.permutation(len(self.items))]
        return order[:limit] if limit > 0 else order

    def _clip(self, rec: ImageRecord, z: int, direction: int, prompt: PromptSample) -> Sample:
        zs = [z + direction * k for k in range(self.clip_length)]
        zs = [t for t in zs if 0 <= t < rec.n_frames]
        return Sample(name=f"{rec.name}[{','.join(map(str, zs))}]", frames=rec.frames[zs],
                      truth=rec.truth[zs], prompt=prompt)

    def sample(self, index: int) -> Sample:
        """The training sample of item ``index`` (direction and prompt drawn from the rng)."""
        ri, z = self.items[index]
        rec = self.records[ri]
        direction = 1 if rec.n_frames == 1 or self.rng.random() < 0.5 else -1
        prompt = sample_prompt(rec.truth[z], self.rng, self.box_jitter)
        return self._clip(rec, z, direction, prompt)

    def validation_samples(self) -> list[Sample]:
        """Deterministic samples: each record's largest slice with its exact box, both ways."""
        out: list[Sample] = []
        for rec in self.records:
            areas = rec.truth.reshape(rec.n_frames, -1).sum(axis=1)
            z = int(np.argmax(areas))
            prompt = sample_prompt(rec.truth[z], None)
            out.append(self._clip(rec, z, 1, prompt))
            if rec.n_frames > 1 and self.clip_length > 1 and z > 0:
                out.append(self._clip(rec, z, -1, prompt))
        return out

    def rng_state(self) -> dict[str, Any]:
        """The generator's state (JSON-able; saved in checkpoints)."""
        return dict(self.rng.bit_generator.state)

    def set_rng_state(self, state: dict[str, Any]) -> None:
        """Restore a state from :meth:`rng_state`."""
        self.rng.bit_generator.state = state
