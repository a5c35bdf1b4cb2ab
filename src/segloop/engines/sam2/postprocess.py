"""SAM 2's mask post-processing in torch, so it runs where the model runs (imports torch).

The same results as the scipy functions of :mod:`.preprocess`, bit for bit: SAM 2's hole
filling (8-connected background blobs of at most ``max_area`` pixels of the low-resolution
logits become 0.1) and MedSAM2's largest 26-connected 3D component (ties go to the component
scipy numbers first, i.e. the one whose first voxel in C order comes first). On a GPU they
need no per-slice host sync: connected components are labelled by max-pooling a label map
(every voxel starts with a label that encodes its own flat index) plus pointer jumping, and
the loop checks for convergence only every few rounds. :func:`masks_to_host` turns a chunk of
low-resolution logits into canonical ``(X, Y)`` bool slices with one device->host copy;
:func:`masks_to_host_async` queues that copy (into pinned memory) without waiting for it.
Must not import FastAPI, Celery or the CLI.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

__all__ = [
    "HostMasks",
    "fill_holes_torch",
    "label_components",
    "largest_component_torch",
    "masks_to_host",
    "masks_to_host_async",
]

#: max-pool rounds between two convergence checks (each check is one host sync)
_ROUNDS = 4


def label_components(fg: torch.Tensor) -> torch.Tensor:
    """Full-connectivity components of ``fg`` ``(B, *spatial)`` bool (2D: 8-, 3D: 26-connected).

    Returns float labels of the same shape: 0 on background, and on each component the value
    ``n - i`` where ``i`` is the smallest flat index (C order, per batch item) of a voxel of that
    component and ``n`` the number of voxels per item. Labels are exact integers (float64 above
    2**24 voxels per item).
    """
    spatial = tuple(int(s) for s in fg.shape[1:])
    if len(spatial) not in (2, 3):
        raise ValueError(f"label_components takes (B, H, W) or (B, X, Y, Z), got {tuple(fg.shape)}")
    b = int(fg.shape[0])
    n = 1
    for s in spatial:
        n *= s
    dtype = torch.float32 if n <= 2**24 else torch.float64
    pool = F.max_pool2d if len(spatial) == 2 else F.max_pool3d
    ids = torch.arange(n, 0, -1, device=fg.device, dtype=dtype).view(1, 1, *spatial)
    mask = fg.contiguous()[:, None]
    lab = torch.where(mask, ids, torch.zeros((), dtype=dtype, device=fg.device))
    zero = torch.zeros((), dtype=dtype, device=fg.device)
    while True:
        prev = lab
        for _ in range(_ROUNDS):
            lab = torch.where(mask, pool(lab, kernel_size=3, stride=1, padding=1), zero)
            # pointer jumping: take the current label of the voxel my label names
            flat = lab.reshape(b, n)
            target = (n - flat).long().clamp_(0, n - 1)
            jumped = torch.maximum(flat, flat.gather(1, target))
            lab = torch.where(mask, jumped.view(lab.shape), zero)
        if torch.equal(lab, prev):
            return lab[:, 0]


def fill_holes_torch(scores: torch.Tensor, max_area: int) -> torch.Tensor:
    """SAM 2's hole filling on mask logits ``(B, H, W)`` (or ``(H, W)``); see the module doc.

    Background (score <= 0) components of at most ``max_area`` pixels, 8-connected, touching
    the border or not, get the score 0.1; ``max_area <= 0`` returns the input.
    """
    if max_area <= 0:
        return scores
    single = scores.dim() == 2
    s = scores[None] if single else scores
    bg = s <= 0
    lab = label_components(bg)
    b, n = int(s.shape[0]), int(s[0].numel())
    idx = lab.view(b, n).long()
    counts = torch.zeros((b, n + 1), dtype=torch.int64, device=s.device)
    counts.scatter_add_(1, idx, torch.ones_like(idx))
    size = counts.gather(1, idx).view_as(s)
    small = bg & (size <= max_area)
    out = torch.where(small, torch.tensor(0.1, dtype=s.dtype, device=s.device), s)
    return out[0] if single else out


def largest_component_torch(mask3d: torch.Tensor) -> torch.Tensor:
    """The largest 26-connected component of a 3D bool tensor (all False stays all False).

    Labels only the mask's bounding box (one host sync to find it)."""
    out = torch.zeros_like(mask3d, dtype=torch.bool)
    # the box from each axis' projection: nonzero() of the whole mask would hold 3 int64 per
    # True voxel (6 GB for a full 512x512x1000 mask)
    lo, hi = [], []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        idx = mask3d.any(dim=other).nonzero()
        if idx.shape[0] == 0:
            return out
        lo.append(int(idx[0, 0]))
        hi.append(int(idx[-1, 0]) + 1)
    box = mask3d[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    lab = label_components(box[None])[0]
    n = int(box.numel())
    counts = torch.bincount(lab.view(-1).long(), minlength=n + 1)
    counts[0] = 0
    # ties: scipy numbers components in C order, so the largest label (smallest index) wins
    winner = (counts == counts.max()).nonzero().max()
    out[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = lab == winner.to(lab.dtype)
    return out


@dataclass(frozen=True)
class HostMasks:
    """A chunk of ``(B, X, Y)`` bool masks being copied to host memory; ``event`` (CUDA only)
    is recorded after the copy was queued."""

    host: torch.Tensor
    event: torch.cuda.Event | None

    def wait(self) -> npt.NDArray[np.bool_]:
        """Block until the copy is done; the masks as numpy."""
        if self.event is not None:
            self.event.synchronize()
        return np.asarray(self.host.numpy())


def _to_view_masks(low_res: torch.Tensor, shape_xy: tuple[int, int], fill_holes: int
                   ) -> torch.Tensor:
    x, y = shape_xy
    logits = fill_holes_torch(low_res.float(), fill_holes)
    up = F.interpolate(logits[:, None], size=(y, x), mode="bilinear", align_corners=False)
    view = up[:, 0] > 0  # (B, H=Y, W=X)
    return view.transpose(1, 2).flip(1, 2)


def masks_to_host_async(low_res: torch.Tensor, shape_xy: tuple[int, int], fill_holes: int
                        ) -> HostMasks:
    """:func:`masks_to_host` with the copy queued, not waited for (on CUDA: into pinned
    memory, then an event); elsewhere the same as :func:`masks_to_host`."""
    masks = _to_view_masks(low_res, shape_xy, fill_holes)
    if masks.device.type != "cuda":
        return HostMasks(masks.cpu(), None)
    host = torch.empty(masks.shape, dtype=torch.bool, pin_memory=True)
    host.copy_(masks, non_blocking=True)
    event = torch.cuda.Event()
    event.record()
    return HostMasks(host, event)


def masks_to_host(low_res: torch.Tensor, shape_xy: tuple[int, int], fill_holes: int
                  ) -> torch.Tensor:
    """Low-resolution view logits ``(B, h, w)`` -> canonical ``(B, X, Y)`` bool masks on the CPU.

    Hole filling (``fill_holes`` > 0), bilinear upsampling to ``(H=Y, W=X)``, ``> 0`` and the
    radiological view -> canonical slice mapping all run on the logits' device; the chunk
    comes back in one copy."""
    return _to_view_masks(low_res, shape_xy, fill_holes).cpu()
