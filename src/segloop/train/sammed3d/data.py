"""Data of the SAM-Med3D fine-tuning seed project: CSV rows, ``.pkl`` arrays, ``{n}.nii`` masks.

The seed's CSVs have the columns ``path,ich,patient_id``; ``path`` is a ``.pkl`` array or a
NIfTI volume, and its mask is ``{file number}.nii`` (or ``.nii.gz``) in the mask folder, where
the file number is the last run of digits in the image's file name (``scan_0042.pkl`` ->
``0042.nii``, then ``42.nii``); 0 is background, anything else the target (ICH).

A pickle can run code when it is loaded. :func:`load_pickle_array` therefore unpickles with a
restricted :class:`pickle.Unpickler` that only knows the few numpy names a pickled ndarray
needs, and accepts only a 3D (or 4D with one channel) array of numbers; anything else is refused
with a message naming the file. :func:`check_rows` reports every bad row at once (missing or
unreadable file, a pickle that is not an array, a mask of another shape, a patient in both
train and validation).

segloop's own 3D manifests (``case_id,image,label,label_value,...``, the ``segloop eval`` format)
and the datastore of reviewed masks become the same rows (:func:`manifest_rows`): the label is
then ``label == label_value`` (or ``> 0``) sampled onto the image in physical space, and the
rows are split into training and validation by patient, seeded.
Pure numpy + nibabel; must not import torch, the CLI or the API.
"""

from __future__ import annotations

import csv
import io
import pickle
import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from segloop.errors import InputError

__all__ = ["RowSource", "SeedRow", "check_rows", "load_image", "load_mask", "load_pair",
           "load_pickle_array", "manifest_rows", "mask_path", "read_seed_csv"]

#: the only globals a pickled numpy array needs (numpy 1.x and 2.x module names)
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused {module}.{name}: only numpy arrays are accepted")


def load_pickle_array(path: Path) -> npt.NDArray[Any]:
    """A numeric 3D array from a ``.pkl`` file, never running code; InputError otherwise."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    try:
        obj = _ArrayUnpickler(io.BytesIO(raw)).load()
    except Exception as exc:  # UnpicklingError, EOFError, refused globals, ...
        raise InputError(f"{path}: not a pickled numpy array ({exc})") from exc
    if not isinstance(obj, np.ndarray):
        raise InputError(f"{path}: the pickle holds a {type(obj).__name__}, not a numpy array")
    if obj.dtype.kind not in "biuf":
        raise InputError(f"{path}: array of {obj.dtype}, expected numbers")
    arr = obj[0] if obj.ndim == 4 and obj.shape[0] == 1 else obj
    if arr.ndim != 3:
        raise InputError(f"{path}: array of shape {obj.shape}, expected a 3D volume")
    return arr


class RowSource(StrEnum):
    """Where a row comes from, which says how its mask is read."""

    #: the seed's CSV: ``{n}.nii`` mask on the image's own grid, foreground = non-zero
    SEED_CSV = "seed-csv"
    #: a segloop manifest / the datastore: ``label == label_value`` moved onto the image
    MANIFEST = "manifest"


@dataclass(frozen=True)
class SeedRow:
    """One CSV row: 1-based ``row`` (header = row 1), image, ICH flag, patient and mask path.

    Manifest rows (``source`` MANIFEST) carry the label file as ``mask`` and its target value
    as ``label_value`` (None: any value > 0); ``ich`` is None for them.
    """

    csv: Path
    row: int
    image: Path
    ich: int | None
    patient_id: str
    mask: Path | None
    source: RowSource = RowSource.SEED_CSV
    label_value: int | None = None
    case_id: str = ""

    def where(self) -> str:
        """``file.csv row N (image)`` (manifests: ``file.csv case ID (image)``) for messages."""
        if self.case_id:
            return f"{self.csv.name} case {self.case_id} ({self.image.name})"
        return f"{self.csv.name} row {self.row} ({self.image.name})"


def mask_path(image: Path, mask_dir: Path) -> Path | None:
    """``{file number}.nii[.gz]`` in ``mask_dir`` for ``image``, or None when none exists."""
    stem = image.name.split(".")[0]
    runs = re.findall(r"\d+", stem)
    if not runs:
        return None
    for num in dict.fromkeys((runs[-1], str(int(runs[-1])))):
        for ext in (".nii", ".nii.gz"):
            p = mask_dir / f"{num}{ext}"
            if p.is_file():
                return p
    return None


def read_seed_csv(path: Path, mask_dir: Path) -> list[SeedRow]:
    """Rows of a seed CSV (``path,ich,patient_id``); paths are relative to the CSV's folder."""
    try:
        with Path(path).open(newline="") as f:
            reader = csv.DictReader(f)
            cols = set(reader.fieldnames or [])
            if "path" not in cols:
                raise InputError(f"{path}: needs a 'path' column (and ich, patient_id); has {sorted(cols)}")
            rows = list(reader)
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    out = []
    for i, r in enumerate(rows, start=2):
        img = Path((r.get("path") or "").strip())
        if not img.is_absolute():
            img = Path(path).parent / img
        ich_s = (r.get("ich") or "").strip()
        ich = int(float(ich_s)) if re.fullmatch(r"-?\d+(\.0*)?", ich_s) else None
        pid = (r.get("patient_id") or "").strip() or img.name.split(".")[0]
        out.append(SeedRow(Path(path), i, img, ich, pid, mask_path(img, mask_dir)))
    return out


def load_image(path: Path) -> tuple[npt.NDArray[np.float32], tuple[float, float, float]]:
    """An image as ``(X, Y, Z)`` float32 and its spacing in mm.

    ``.pkl`` arrays carry no geometry: they are taken as already at 1.5 mm (the seed project
    stores preprocessed arrays). NIfTI and other formats are read by :mod:`segloop.io` and
    used on their canonical grid.
    """
    if path.suffix == ".pkl":
        return load_pickle_array(path).astype(np.float32), (1.5, 1.5, 1.5)
    from segloop.io import load_volume

    vol = load_volume(path).canonical()
    sp = vol.spacing
    return np.asarray(vol.data, dtype=np.float32), (sp[0], sp[1], sp[2])


def load_mask(path: Path) -> npt.NDArray[np.bool_]:
    """A mask file as ``(X, Y, Z)`` bool on its canonical grid (foreground = non-zero)."""
    from segloop.io import load_volume

    m: npt.NDArray[np.bool_] = np.asarray(load_volume(path).canonical().data) != 0
    return m


def load_pair(row: SeedRow) -> tuple[npt.NDArray[np.float32], tuple[float, float, float],
                                     npt.NDArray[np.bool_]]:
    """A row's image ``(X, Y, Z)`` float32, its spacing in mm and its target mask (same shape).

    Seed rows: the mask file as it is (its shape must equal the image's). Manifest rows: the
    label's target value sampled onto the image's canonical grid in physical space.
    """
    if row.mask is None:
        raise InputError(f"{row.where()}: no mask")
    if row.source is RowSource.MANIFEST:
        from segloop.io import load_label, load_volume

        can = load_volume(row.image).canonical()
        value: int | str = "any" if row.label_value is None else row.label_value
        truth = np.asarray(load_label(row.mask, can, value), dtype=bool)
        sp = can.spacing
        return np.asarray(can.data, dtype=np.float32), (sp[0], sp[1], sp[2]), truth
    img, spacing = load_image(row.image)
    m = load_mask(row.mask)
    if m.shape != img.shape:
        raise InputError(f"{row.where()}: mask {row.mask.name} has shape {m.shape}, image {img.shape}")
    return img, spacing, m


def manifest_rows(manifest: Path, root: Path | None, val_fraction: float, seed: int
                  ) -> tuple[list[SeedRow], list[SeedRow]]:
    """A segloop manifest's cases as rows, split into (train, val) by patient, seeded.

    With a single patient nothing can be held out: validation is then empty (the caller says
    so). Files are checked to exist by :func:`segloop.datastore.manifest.read_manifest`.
    """
    from segloop.datastore.manifest import read_manifest
    from segloop.train.data import split_patients

    if not 0.0 <= val_fraction < 1.0:
        raise InputError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    cases = read_manifest(manifest, root)
    rows = [SeedRow(Path(manifest), i, c.image, None, c.patient_id, c.label, RowSource.MANIFEST,
                    c.label_value, c.case_id) for i, c in enumerate(cases, start=2)]
    if val_fraction == 0.0:
        return rows, []
    train_ids, val_ids = split_patients([r.patient_id for r in rows], val_fraction, seed)
    return [r for r in rows if r.patient_id in train_ids], [r for r in rows if r.patient_id in val_ids]


def check_rows(train: list[SeedRow], val: list[SeedRow], deep: bool = True) -> list[str]:
    """Every problem of the rows, one line each naming the row; empty when all is well.

    ``deep`` also loads every image and mask (unreadable files, non-array pickles, shapes).
    """
    problems: list[str] = []
    for r in [*train, *val]:
        # a manifest's image may be a DICOM series folder
        if not (r.image.exists() if r.source is RowSource.MANIFEST else r.image.is_file()):
            problems.append(f"{r.where()}: image file {r.image} does not exist")
            continue
        if r.mask is None:
            problems.append(f"{r.where()}: no mask {{file number}}.nii for it in the mask folder")
            continue
        if not deep:
            continue
        if r.source is RowSource.MANIFEST:
            try:
                load_pair(r)
            except Exception as exc:
                problems.append(f"{r.where()}: {exc}")
            continue
        try:
            img, _ = load_image(r.image)
        except Exception as exc:
            problems.append(f"{r.where()}: {exc}")
            continue
        try:
            m = load_mask(r.mask)
        except Exception as exc:
            problems.append(f"{r.where()}: mask {r.mask.name}: {exc}")
            continue
        if m.shape != img.shape:
            problems.append(f"{r.where()}: mask {r.mask.name} has shape {m.shape}, image {img.shape}")
    both = sorted({r.patient_id for r in train} & {r.patient_id for r in val})
    for pid in both:
        rows = [x.where() for x in (*train, *val) if x.patient_id == pid]
        problems.append(f"patient {pid} is in both train and validation: {', '.join(rows)}")
    return problems
