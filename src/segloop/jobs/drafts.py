"""A job's draft: unsaved brush/eraser strokes kept on the server until they are saved or dropped.

The viewer autosaves its unsaved label map here a moment after each stroke, so another browser
or tab opening the job is offered the strokes back. A draft is *not* a version: it is not in
the versions table, undo/redo and the version history never see it, exports and the datastore
ignore it. Saving it (``POST .../draft/save``) stores it as a normal version and removes it;
discarding deletes it. One draft per job (the last writer wins), beside the job's files::

    jobs/<job_id>/draft.npz     the label map (canonical grid, as versions/vNNNN.npz)
    jobs/<job_id>/draft.json    {"base_version", "saved_at", "author", "voxels"}

Both are written atomically (the map first, so a draft.json always names a complete map).
Imports numpy and segloop.jobs.files; never FastAPI or torch.
Must not import segloop.cli, segloop.protocols, segloop.api, segloop.worker, segloop.web,
segloop.ism, segloop.train, segloop.eval (the layer contract, pyproject.toml).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from segloop.jobs import files

__all__ = ["DraftInfo", "drop_draft", "load_draft", "read_draft_info", "save_draft"]

_MAP = "draft.npz"
_INFO = "draft.json"


@dataclass(frozen=True)
class DraftInfo:
    """What a draft was painted on and when: ``base_version`` (the version shown under the
    strokes), ``saved_at`` (ISO 8601, UTC), ``author``, ``voxels`` (labelled voxels)."""

    base_version: int
    saved_at: str
    author: str
    voxels: int


def save_draft(job_dir: Path, labels: files.LabelMap, base_version: int, author: str
               ) -> DraftInfo:
    """Keep ``labels`` (canonical uint8) as the job's draft, replacing any earlier one."""
    info = DraftInfo(base_version=int(base_version),
                     saved_at=datetime.now(UTC).isoformat(timespec="seconds"),
                     author=author, voxels=int(np.count_nonzero(labels)))
    files.save_labels(job_dir / _MAP, labels)
    files.atomic_write_bytes(job_dir / _INFO, json.dumps(asdict(info)).encode())
    return info


def read_draft_info(job_dir: Path) -> DraftInfo | None:
    """The job's draft description, or None when it has none."""
    try:
        raw = json.loads((job_dir / _INFO).read_text())
    except (FileNotFoundError, ValueError):
        return None
    if not (job_dir / _MAP).is_file():
        return None
    return DraftInfo(base_version=int(raw["base_version"]), saved_at=str(raw["saved_at"]),
                     author=str(raw.get("author", "")), voxels=int(raw.get("voxels", 0)))


def load_draft(job_dir: Path) -> tuple[DraftInfo, files.LabelMap] | None:
    """The job's draft and its label map, or None."""
    info = read_draft_info(job_dir)
    if info is None:
        return None
    return info, files.load_labels(job_dir / _MAP)


def drop_draft(job_dir: Path) -> bool:
    """Delete the job's draft; False when there was none."""
    had = (job_dir / _INFO).exists()
    (job_dir / _INFO).unlink(missing_ok=True)  # the description first: no half draft is offered
    (job_dir / _MAP).unlink(missing_ok=True)
    return had
