"""Reading evaluation manifests: ``case_id,image,label,label_value,structure,modality[,patient_id]``.

A manifest is a CSV file with one case per row. ``image`` and ``label`` are paths relative to a
root folder (``image`` may be a DICOM series folder); the target is ``label == label_value``, or
``label > 0`` when ``label_value`` is ``any``. ``patient_id`` is optional (without it each case is
its own patient). Every problem of a manifest is reported at once in one :class:`ManifestError`.

The datastore's own ``manifest.csv`` is a manifest with extra columns (job, version, reviewer),
so ``segloop train --from-datastore`` and ``segloop eval`` read both with :func:`read_manifest`.

Imports only the standard library and segloop.errors; must not import numpy, engines, jobs,
train or eval.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from segloop.errors import InputError

__all__ = ["OPTIONAL_COLUMNS", "REQUIRED_COLUMNS", "Case", "ManifestError", "read_manifest"]

REQUIRED_COLUMNS: tuple[str, ...] = ("case_id", "image", "label", "label_value", "structure", "modality")
OPTIONAL_COLUMNS: tuple[str, ...] = ("patient_id",)

_MAX_LISTED = 8


class ManifestError(InputError):
    """A manifest that cannot be used: missing file or columns, bad values, missing images/labels."""


@dataclass(frozen=True)
class Case:
    """One manifest row, paths resolved against the root.

    label_value: the label's integer value of the target, or None for ``any`` (label > 0).
    modality: ``"CT"``, ``"MR"``... or None when the column is empty.
    patient_id: the patient column, or the case id when the manifest has none.
    """

    case_id: str
    image: Path
    label: Path
    label_value: int | None
    structure: str
    modality: str | None
    patient_id: str


def _parse_label_value(text: str) -> int | None:
    t = text.strip()
    if t.lower() == "any":
        return None
    try:
        value = int(t)
    except ValueError:
        try:
            f = float(t)
        except ValueError:
            raise ValueError(f"label_value {text!r} is neither an integer nor 'any'") from None
        if not f.is_integer():
            raise ValueError(f"label_value {text!r} is not an integer") from None
        value = int(f)
    if value < 1:
        raise ValueError(f"label_value {value} must be >= 1 (0 is background) or 'any'")
    return value


def read_manifest(
    path: str | Path, root: str | Path | None = None, *, check_files: bool = True
) -> list[Case]:
    """Read and validate a manifest; returns its cases in file order.

    root: the folder that image/label paths are relative to (default: the manifest's folder).
    check_files: also check that every image and label exists.
    Raises ManifestError listing the problems (missing columns, empty manifest, duplicate
    case ids, bad label values, missing files).
    """
    mpath = Path(path).expanduser()
    if not mpath.is_file():
        raise ManifestError(f"manifest {mpath} not found" if not mpath.exists() else f"{mpath} is not a file")
    base = Path(root).expanduser() if root is not None else mpath.parent
    if not base.is_dir():
        raise ManifestError(f"--root {base} is not a folder")
    try:
        text = mpath.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"cannot read manifest {mpath}: {exc}") from exc
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        raise ManifestError(f"manifest {mpath} is empty: expected a header {','.join(REQUIRED_COLUMNS)}")
    reader = csv.DictReader(lines)
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise ManifestError(
            f"manifest {mpath} lacks column(s) {', '.join(missing)}: the header must be "
            f"{','.join(REQUIRED_COLUMNS)} (optional: {','.join(OPTIONAL_COLUMNS)}); found {','.join(header)}"
        )
    problems: list[str] = []
    cases: list[Case] = []
    seen: set[str] = set()
    for lineno, raw in enumerate(reader, start=2):
        row = {(k or "").strip(): (v or "").strip() if isinstance(v, str) else "" for k, v in raw.items()}
        cid = row.get("case_id", "")
        where = f"row {lineno}" + (f" ({cid})" if cid else "")
        if not cid:
            problems.append(f"{where}: empty case_id")
            continue
        if cid in seen:
            problems.append(f"{where}: duplicate case_id {cid!r}")
            continue
        seen.add(cid)
        try:
            value = _parse_label_value(row.get("label_value", ""))
        except ValueError as exc:
            problems.append(f"{where}: {exc}")
            continue
        paths: dict[str, Path] = {}
        for col in ("image", "label"):
            rel = row.get(col, "")
            if not rel:
                problems.append(f"{where}: empty {col} path")
                continue
            p = Path(rel).expanduser()
            p = p if p.is_absolute() else base / p
            if check_files and not p.exists():
                problems.append(f"{where}: {col} {rel} not found under {base}")
            paths[col] = p
        if len(paths) < 2:
            continue
        cases.append(
            Case(
                case_id=cid,
                image=paths["image"],
                label=paths["label"],
                label_value=value,
                structure=row.get("structure", ""),
                modality=row.get("modality") or None,
                patient_id=row.get("patient_id") or cid,
            )
        )
    if problems:
        shown = problems[:_MAX_LISTED]
        more = f" (and {len(problems) - _MAX_LISTED} more)" if len(problems) > _MAX_LISTED else ""
        raise ManifestError(f"manifest {mpath}: " + "; ".join(shown) + more)
    if not cases:
        raise ManifestError(f"manifest {mpath} has a header but no cases")
    return cases
