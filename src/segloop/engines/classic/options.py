"""The classic engine's options: one frozen record, checked once when the engine is made.

Must not import the rest of the classic engine, torch, FastAPI, Celery or the CLI.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

from segloop.errors import EngineError

__all__ = ["ClassicOptions"]


@dataclass(frozen=True)
class ClassicOptions:
    """Tuning of the classic engine (defaults are the benchmarked settings; sizes in mm).

    ``smooth_mm`` (largest denoising sigma), ``smooth_frac`` (smallest sigma, as a fraction of
    the target's radius), ``ring_mm`` (background ring width), ``grow_mm`` (growth allowed
    between slices, per mm of slice spacing), ``clean_mm`` (smallest opening/closing radius),
    ``open_frac`` (opening radius as a fraction of the target's radius), ``stop_ratio``
    (propagation stops when the area falls below this fraction of the previous slice's),
    ``follow_frac`` (share of a new component that must lie in the previous mask), ``adapt``
    (weight of the model re-estimated on the previous slice), ``prior_weight`` (strength of the
    shape prior), ``max_growth`` (area growth per slice before the window tightens),
    ``min_key_lr`` (mean log-likelihood ratio under the prompted slice's model below which a
    component is dropped; None disables), ``carve_far`` (negative clicks: markers beyond this
    many times the click's depth), ``wand_mm`` (reach of a first positive click without a box),
    ``drop_central`` (a negative click at least this fraction of its component's greatest depth
    deep removes the whole component; None disables), ``area_cap`` (a propagated slice's
    largest area, as a multiple of the anchor slice's; None disables), ``taper`` (once the area
    has fallen below this fraction of the anchor's, it may grow back by ``max_growth`` at most;
    None disables), ``tight_box`` (a box result spanning less than this fraction of the box's
    width or height is checked against the box's other tissue; None disables), ``neg_frac``
    (negative clicks splitting a component: radius of the removed seed, as a fraction of the
    click's depth), ``neck_open`` (propagation: opening radius that growth beyond the previous
    slice must survive, as a fraction of the target's radius; 0 disables), ``end_frac``
    (propagation ends where the target's area falls below this fraction of the anchor
    slice's, in mm²: the thin tail of a target costs little when missed, a thin track run on
    past its end costs much; None disables), ``class_cover`` (a box result of two intensity
    classes is replaced by the one class that alone spans at least this fraction of the
    box's width and height, when that class is under ``class_area`` of the result's area:
    the box also held a neighbour of another intensity; None disables), ``class_split`` (and
    only when the two classes are truly two: their medians at least this many times the sum
    of their standard deviations apart; one noisy class split in two gives about 1.1),
    ``reach_gap`` (a box result stopping at least this fraction of the box's extent short of
    a side, and at least 2 voxels, takes back the target-like tissue connected to it that
    reaches that side: the tight box's target touches all four sides; None disables),
    ``leak_overlap`` (a negative click on target-like intensity whose
    surroundings' intensity density overlaps the object's foreground density by less than this
    Bhattacharyya coefficient also removes the part of the mask connected to it that is more
    likely under the click's density than the object's, at most ``leak_depth`` times the
    click's depth deep: a leak of another tissue goes whole, not as a round hole; None
    disables),
    ``carry_add`` (what a positive click added on its slice is carried on to the further
    slices, up to the next anchors, by a model of the added tissue against its surroundings,
    inside the previous slice's addition and at most this many times its area, see
    ``engines/classic/additions.py``; only from a slice that held the object before the
    click; None disables),
    ``jump_frac`` (propagation from a box or mask: where more than this fraction of a slice's
    mask, or of the previous slice's, lies farther from the other than ``jump_mm`` times the
    slice spacing (mm, in plane), the mask has jumped; when a slice from the jump on then
    exceeds ``jump_regrow`` times the area of the slice before the jump, a new object has
    replaced the tracked one and the target ends before the jump, see
    ``engines/classic/ends.py``; None disables), ``own_region`` (a positive click that the
    object's model calls background takes the connected region a local model explains, the
    click's neighbourhood against the tissue around a disk of this many times the object's
    radius (at least the old flood's reach), instead of the similarity flood, see
    ``engines/classic/click_region.py``; None disables), ``own_region_empty`` (with
    ``own_region``: only on a slice where the object was absent; any number enables, None
    disables), ``own_overlap`` (with ``own_region``: the flood acts instead where the click's
    tissue and the surroundings' densities overlap by this Bhattacharyya coefficient or more;
    None disables the check), ``ring_class`` (the box's key slice: GrabCut is retried from
    each intensity class of the inscribed ellipse (2 and 3 Otsu classes of the box); a retry
    spanning ``class_cover`` of the box whose model calls target-like less than this fraction
    of the ring around the box that the result's model does replaces the result: the result
    took the tissue the box sits in, see ``engines/classic/box_class.py``; volumes only: a 2D
    picture's session skips it, it lowered 21 of the 2D set's 141 images; None disables),
    ``ring_novel`` (the box's key slice: tissue of the box that the ring around it does not
    show, beyond the ring's ``ring_novel`` and ``1 - ring_novel`` quantiles, on the side of
    the ring the result lies and not beyond the result's own 10th/90th percentile, connected
    to the result, is added, and the model refitted, when it is at least ``novel_least`` of
    the result's area: a brain tumour's fainter oedema around its bright core is no
    neighbour, the box's surroundings would show a neighbour, see
    ``engines/classic/novel.py``; None disables),
    ``edge_mid`` (the box's key slice: a target whose median lies beyond the ring's
    ``edge_mid`` or ``1 - edge_mid`` quantile, one its surroundings do not show, such as the
    CSF of a ventricle, loses the voxels past the half-way intensity between its median and
    the ring's, the partial-volume band and a blurred septum, when at least ``edge_least`` of
    it remains; volumes only: a 2D picture's session skips it; see
    ``engines/classic/contrast.py``; None disables),
    ``support_min`` (propagation: where, on ``support_run`` tracked slices in a row, the
    share of the mask's contour that still shows the anchor slice's edge (its polarity, at
    least half its median strength) falls under this fraction of the anchor's share, the
    target ended at the first of them: tracking slid on into tissue of its own intensity,
    see ``engines/classic/support.py``; None disables), ``resume_support`` (with
    ``support_min``: a positive click's addition that restarts the tracking past the
    object's end stops where that rule, anchored on the clicked slice, says the target ended;
    any number enables, None disables), ``resume_cap`` (that resumed tracking, once larger
    than this many times the object's area where it was last seen, the larger of the clicked
    slice's mask and the nearest other slice holding the object
    (``propagation.resume_area``), keeps to the previous slice's footprint: past its end a
    target tapers; None disables),
    ``drop_detached`` (after a click that removed voxels:
    the object's pieces that no chain of neighbouring slices' components, overlapping or
    within this many growth distances of each other, joins to a slice the user vouched for
    (a box, a positive point, a set mask) are emptied on the slices the refinement may
    change, see ``engines/classic/detached.py``; None disables),
    ``picture_px`` (2D pictures only, see
    :func:`segloop.engines.image2d.segment_image`: a picture without a pixel size whose box's
    longer side exceeds this many pixels is segmented at a reduced size where that side spans
    this many pixels (area averaging), the mask brought back to full size; the engine's sizes
    were tuned on targets some 20-200 voxels across and read pixels as mm, so on a 700-pixel
    lung or skin lesion its 6-pixel ring, 1-pixel cleaning and smoothing see rib and pigment
    texture, not the object; has no effect on volumes; None disables),
    ``window_fill`` (a positive click's region grown by the
    object's model that holds at least this fraction of its window's rim, where a local model
    of the click's tissue finds no edge either (``own_overlap``), is bounded by the window,
    not by the image: it is cut to the half window around the click, see
    ``engines/classic/reach.py``; None disables), ``hold_rim`` (a negative click that only
    trimmed its slice's rim, no removed voxel with all four neighbours removed, is not carried
    to the other slices; any number enables, None disables), ``rim_cut`` (a negative click
    on the mask's outermost layer, a voxel with a 4-neighbour outside the mask, removes only
    that layer's voxels of its cut: a one-voxel spurious rim goes, the target inside it
    stays; any number enables, None disables), ``rim_add`` (likewise a positive click next
    to the mask, a voxel with a 4-neighbour in the mask, adds only the layer of voxels along
    the mask: a one-voxel missed rim is taken, not the seed disk's voxels beyond it; any
    number enables, None disables), ``local_empty`` (on a slice where the object was absent,
    a positive click's region by the object's model is replaced by the local model's region
    of ``click_region.local_region`` when that one is under this fraction of its size: the
    object's model took the target-like surroundings too; None disables), ``resume_end``
    (an addition that restarts the tracking past the object's end stops where the tracked
    area falls under ``end_frac`` of the clicked slice's mask, as a propagation from a box
    does; any number enables, None disables), ``sheet_cover`` (propagation from a box or mask:
    the target ends at the first slice where a thin dark sheet crosses it, at least this
    fraction of its columns dipping below both sides along z within a band of ``sheet_scale``
    times the anchor's equivalent radius, by ``sheet_depth`` times the anchor's intensity IQR
    and ``sheet_noise`` times the noise level, while under ``sheet_ring`` of the columns of
    a ring 3-9 mm outside do: the disc between two vertebral bodies, see
    ``engines/classic/sheets.py``; None disables; on since the fifteenth pass, with
    ``sheet_column``, after a stacked-targets dev set of 10 vertebrae, ribs and a disc and 8
    controls left every control unchanged, ``benchmarks/devset.md``), ``sheet_resume``
    (with ``sheet_cover``: a positive click on a slice a sheet emptied resumes the tracking
    outward as far as the next sheet's band found on the propagation's run-on, instead of
    adding its own slice only; any number enables, None disables), ``sheet_column`` (with
    ``sheet_cover``: on the first sheet's band slices each column of the mask is kept up to
    its own dip, where the tilted plate lies ahead, instead of the whole band being emptied;
    any number enables, None disables),
    ``fat_hu`` (CT volumes in Hounsfield units
    only: a box result of which at least ``fat_share`` lies between -500 HU and this value
    (fat), where the box's tissue from this value up spans the box, is made again from
    that soft tissue with the fat as background: fat is no soft-tissue target, see
    ``engines/classic/fat.py``; None disables), ``picture_click`` (2D pictures with a box only:
    a positive click adds the part of the box around it that an s-t minimum cut gives to the
    mask's tissue plus the click's against the ring around the box, the click a hard seed (to
    the region the volume step grows); a negative click removes the part of the mask the cut
    gives to the ring's tissue plus the click's; the cut's contrast-weighted neighbour terms
    have this strength, see ``engines/classic/picture_click.py``; the picture's colour feature
    is then fitted to the box alone, so a click does not change the box's own result; has no
    effect on volumes; None disables).
    """

    smooth_mm: float = 1.0
    ring_mm: float = 6.0
    grow_mm: float = 1.0
    clean_mm: float = 1.0
    stop_ratio: float = 0.2
    follow_frac: float = 0.5
    adapt: float = 0.5
    prior_weight: float = 1.0
    max_growth: float = 0.2
    open_frac: float = 0.1
    carve_far: float = 1.0
    min_key_lr: float | None = -0.5
    smooth_frac: float = 0.02
    wand_mm: float = 100.0
    drop_central: float | None = 0.8
    area_cap: float | None = 1.2
    taper: float | None = 0.5
    tight_box: float | None = 0.6
    neg_frac: float = 0.35
    neck_open: float = 0.25
    end_frac: float | None = 0.15
    class_cover: float | None = 0.85
    class_area: float = 0.75
    class_split: float = 1.5
    reach_gap: float | None = 0.05
    leak_overlap: float | None = 0.6
    leak_depth: float = 1.2
    carry_add: float | None = 1.0
    jump_frac: float | None = 0.2
    jump_mm: float = 1.0
    jump_regrow: float = 1.0
    own_region: float | None = 1.0
    own_region_empty: float | None = 1.0
    own_overlap: float | None = 0.6
    ring_class: float | None = 0.5
    ring_novel: float | None = 0.02
    novel_least: float = 0.1
    picture_px: float | None = 128.0
    window_fill: float | None = 0.5
    hold_rim: float | None = 1.0
    rim_cut: float | None = 1.0
    rim_add: float | None = 1.0
    local_empty: float | None = 0.5
    resume_end: float | None = 1.0
    sheet_cover: float | None = 0.5
    sheet_ring: float = 0.2
    sheet_scale: float = 0.3
    sheet_depth: float = 0.4
    sheet_noise: float = 2.0
    sheet_resume: float | None = 1.0
    sheet_column: float | None = 1.0
    fat_hu: float | None = -50.0
    fat_share: float = 0.3
    picture_click: float | None = 1.0
    edge_mid: float | None = None
    edge_least: float = 0.8
    support_min: float | None = 0.4
    support_run: float = 2.0
    resume_support: float | None = 1.0
    resume_cap: float | None = None
    drop_detached: float | None = 1.0

    @classmethod
    def from_mapping(cls, options: Mapping[str, object]) -> ClassicOptions:
        """Options from ``NAME=value`` pairs (``get_engine("classic", **options)``).

        Raises :class:`EngineError` naming an unknown option, or one whose value is not a
        number (``None`` or ``"none"`` only where the option can be disabled).
        """
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise EngineError(f"unknown classic engine option(s) {', '.join(unknown)};"
                              f" known: {', '.join(sorted(known))}")
        values: dict[str, float | None] = {}
        for name, raw in options.items():
            optional = "None" in str(known[name].type)
            if optional and (raw is None or (isinstance(raw, str) and raw.lower() == "none")):
                values[name] = None  # `--engine-opt area_cap=none` disables the check
                continue
            try:
                values[name] = float(raw)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                kind = "a number or None" if optional else "a number"
                raise EngineError(f"classic engine option {name} takes {kind}, got {raw!r}") from None
        return cls(**values)  # type: ignore[arg-type]
