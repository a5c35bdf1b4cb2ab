"""Training clips: :class:`ClipDataset` turns a record and a key slice into a
:class:`~segloop.train.records.Sample`: a clip of ``clip_length`` consecutive slices (forward
or backward, so the memory path learns both directions) whose first frame carries a prompt
sampled from the truth with jitter (:func:`sample_prompt`: a box, a box plus points, or
positive/negative points). All randomness comes from the ``np.random.Generator`` the dataset
owns (its state is saved in checkpoints for an identical resume).

The records live in :mod:`segloop.train.records` and their sources (folders, manifests, the
datastore, the patient split) in :mod:`segloop.train.sources`; their names are re-exported
here for the callers that import them from this module.

Numpy only: must not import torch, the API or the engines' sessions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from segloop.errors import InputError
from segloop.train.records import IMAGE_SUFFIXES, Bool, ImageRecord, PromptSample, Sample
from segloop.train.sources import (
    datastore_manifest,
    load_folder_records,
    load_folders,
    load_manifest_records,
    read_image_file,
    read_mask_file,
    split_patients,
    split_records,
)

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
