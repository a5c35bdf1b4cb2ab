"""The classic engine on CT: fat is no soft-tissue target (option ``fat_hu``).

Hounsfield units are absolute: fat lies at about -150..-30 HU, soft tissue at 0..+100, air
and gas below -500. A box drawn tightly around a thin soft-tissue target lying in fat (an
adrenal gland: a strip 2-5 voxels wide) holds much fat; GrabCut's model, fitted from the
inscribed ellipse against the ring around the box, then calls the fat target when the ring
is mostly the target's own tone (the liver beside the adrenal), and the tracking follows the
fat for slices past the target's end. On a volume in Hounsfield units, a box result that is
largely fat, where the box's soft tissue alone spans the box, is replaced by that soft tissue.

Must not import the classic engine's propagation or session modules, torch, FastAPI, Celery or
the CLI.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import ndimage as ndi

from segloop.engines.classic.context import ClassicContext
from segloop.engines.classic.intensity import F32, IntensityModel
from segloop.engines.classic.morphology import box_cover, clean, largest
from segloop.types import BoolArray

__all__ = ["AIR_HU", "looks_like_hu", "soft_part"]

#: below this a CT voxel is air or gas (a lung, a bowel's gas), not fat: no business of the rule
AIR_HU = -500.0


def looks_like_hu(modality: str | None, data: npt.NDArray[np.floating]) -> bool:
    """Whether a volume's values are Hounsfield units: its modality is CT and it holds air
    (values below ``AIR_HU``; a CT stored without its rescale, 0..4095, does not; nor does
    an MR or a volume of unknown modality, whatever its range)."""
    if modality is None or modality.upper() != "CT" or data.size == 0:
        return False
    return bool(float(np.min(data)) < AIR_HU)


def soft_part(ctx: ClassicContext, img: F32, fg: BoolArray, model: IntensityModel,
              inbox: BoolArray, ring: BoolArray) -> tuple[BoolArray, IntensityModel]:
    """The box result, or (on a volume in HU, ``fat_hu`` not None) the box's soft tissue.

    ``img``: the box's crop, denoised, in HU; fat: its values between ``AIR_HU`` and
    ``fat_hu``, soft tissue: from ``fat_hu`` up. When at least ``fat_share`` of the result is
    fat and the largest component of the box's soft tissue (cleaned as GrabCut's candidates
    are, holes filled) spans the box (``class_cover`` of its width and height: the tight
    box's target touches all four sides), that component replaces the result and the model
    is refitted to it (against the ring and the rest of the box). A box drawn around fat (a
    lipoma, say) has no soft tissue spanning it, a target of gas or air lies below
    ``AIR_HU``, and a soft-tissue result holds little fat: none of these changes.
    """
    opts = ctx.opts
    if opts.fat_hu is None or not ctx.hu or not fg.any():
        return fg, model
    fat = (img > AIR_HU) & (img < opts.fat_hu)
    if float(np.mean(fat[fg])) < opts.fat_share:
        return fg, model
    soft = inbox & (img >= opts.fat_hu)
    part = clean(soft, ctx.sp, opts.clean_mm, 0.0) & soft
    if not part.any():
        return fg, model
    part = np.asarray(ndi.binary_fill_holes(largest(part)), dtype=bool) & inbox & ~fat
    cover = opts.class_cover if opts.class_cover is not None else 0.85
    if part.sum() < 8 or box_cover(part, inbox) < cover:
        return fg, model
    bgv = np.concatenate([img[ring], img[inbox & ~ndi.binary_dilation(part)]])
    return part, ctx.new_model(img[part], bgv)
