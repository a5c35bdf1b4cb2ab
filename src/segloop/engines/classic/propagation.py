"""The classic engine across slices: tracking a mask from slice to slice (one slice:
``tracking``), and carrying a correction to the neighbouring slices up to the next anchors.

Must not import the classic engine's session module, torch, FastAPI, Celery or the CLI.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from scipy import ndimage as ndi

from segloop.engines.classic.additions import carry_addition, carry_model
from segloop.engines.classic.context import ClassicContext
from segloop.engines.classic.ends import JumpWatch, jump_fraction, weakest_link
from segloop.engines.classic.morphology import (
    Crop,
    bbox,
    dilate1,
    keep_components,
)
from segloop.engines.classic.reach import rim_only, run_on
from segloop.engines.classic.sheets import sheet_bands
from segloop.engines.classic.support import SupportWatch
from segloop.engines.classic.tracking import area_limit, track
from segloop.engines.state import SessionState
from segloop.types import BoolArray, SliceResult

__all__ = ["area_limit", "delta_step", "propagate_delta", "propagate_from", "retract", "span_total",
           "split_off", "track"]


def span_total(state: SessionState, z: int, object_id: int) -> int:
    """How many slices a propagation from slice z visits (both directions)."""
    st = state.get(object_id)
    return len(st.span(z, 1)) + len(st.span(z, -1))


def propagate_from(ctx: ClassicContext, state: SessionState, z: int, object_id: int,
                   offset: int = 0) -> Iterator[SliceResult]:
    """Fill the slices from z to the next anchors (both directions), tracking slice by slice;
    an emptied slice ends the object in that direction. With ``jump_frac`` set, a jump of
    the mask followed by a regrowth (``ends.JumpWatch``: a new object replacing the tracked
    one) ends it before the jump; slices from a pending jump on are yielded once settled. With
    ``support_min`` set, a run of ``support_run`` slices whose contour has lost the anchor's
    edge (``support.SupportWatch``: tracking sliding through same-intensity tissue) ends it at
    the run's first slice; the slices of a pending run are held back. With ``sheet_cover``
    set, a thin dark sheet across the target (``sheets.sheet_bands``: the disc between two
    vertebral bodies) ends it there; each direction is then yielded once done, and the
    slices of every sheet's band along the run-on are kept (``ctx.sheet_bands``)."""
    st = state.get(object_id)
    total = offset + span_total(state, z, object_id)
    done = offset
    opts = ctx.opts
    for direction in (1, -1):
        span = st.span(z, direction)
        if len(span) == 0:
            continue
        prev = st.mask[:, :, z].copy()
        stopped = not prev.any()
        model = ctx.models.get(object_id)
        anchor_area = int(prev.sum())
        low = anchor_area
        watch = None
        if opts.jump_frac is not None:
            watch = JumpWatch(opts.jump_frac, opts.jump_mm * ctx.sz, opts.jump_regrow, ctx.sp)
            watch.step(prev)
        support = None
        if opts.support_min is not None:
            support = SupportWatch(ctx.img[:, :, z], prev, opts.support_min, int(opts.support_run))
        held: list[int] = []  # slices computed, not yet yielded (pending a jump or a run)
        anchor = prev.copy()
        for s in span:
            if stopped or model is None:
                new = np.zeros(ctx.shape[:2], dtype=bool)
            else:
                new, model = track(ctx, object_id, s, s - direction, prev, model,
                                   area_limit(opts, anchor_area, low))
                if opts.end_frac is not None and new.sum() < opts.end_frac * anchor_area:
                    new = np.zeros_like(new)  # the target has ended (see ClassicOptions)
                if not new.any():
                    stopped = True
                low = min(low, int(new.sum()))
            st.mask[:, :, s] = new
            prev = new
            held.append(s)
            ready = len(held)
            if watch is not None and not stopped:
                cut = watch.step(new)
                if cut is not None:
                    # a new object replaced the tracked one: the target ended before the jump
                    dropped = held[len(held) - 1 - (watch.position - cut):]
                    for q in dropped:
                        st.mask[:, :, q] = False
                    ctx.jump_cut.setdefault(object_id, set()).update(dropped, span[span.index(s):])
                    stopped = True
                first = watch.settled()
                if first is not None and not stopped:
                    ready -= 1 + watch.position - first  # held[-1] is at watch.position
            if support is not None and not stopped:
                pending = support.step(ctx.img[:, :, s], new)
                if support.ended:
                    # the contour lost the target's edge: the target ended at the run's first
                    for q in held[len(held) - pending:]:
                        st.mask[:, :, q] = False
                    stopped = True
                else:
                    ready = min(ready, len(held) - pending)
            if opts.sheet_cover is not None:
                ready = 0  # the sheet test reads the whole direction (sheets.py)
            for q in held[:ready]:
                done += 1
                yield SliceResult(z=q, mask=st.mask[:, :, q].copy(), done=done, total=total)
            held = held[ready:]
        if opts.sheet_cover is not None and anchor.any():
            chain = [(z, anchor)]
            for q in held:
                if not st.mask[:, :, q].any():
                    break
                chain.append((q, st.mask[:, :, q]))
            starts, w, keep = sheet_bands(ctx, object_id, chain)
            if starts:
                for q, _ in chain[starts[0]:]:
                    st.mask[:, :, q] = False
                for (q, _), part in zip(chain[starts[0]:], keep, strict=False):
                    st.mask[:, :, q] = part  # ``sheet_column``: up to each column's dip
                ctx.sheet_cut.setdefault(object_id, set()).update(q for q, _ in chain[starts[0]:])
                # the slices of every sheet's band (a click past the first resumes up to one)
                ctx.sheet_bands.setdefault(object_id, set()).update(
                    q for i in starts for q, _ in chain[i:i + w])
        for q in held:
            done += 1
            yield SliceResult(z=q, mask=st.mask[:, :, q].copy(), done=done, total=total)


def propagate_delta(ctx: ClassicContext, state: SessionState, z: int, before: BoolArray,
                    object_id: int, offset: int) -> Iterator[SliceResult]:
    """Carry a correction of slice z to its neighbours, up to the neighbouring anchors.

    Each slice is re-tracked from the corrected neighbour; only the changes (added and
    removed voxels) connected to the changes of the previous slice are applied. Towards an
    anchor a change fades where it no longer applies instead of rewriting the object, except
    that a removed part goes on being removed (``retract``) on the slices where what it
    touches looks more like it than like the anchor's mask (a leak cut at its middle goes
    back to where it began); a click that emptied slice z ends the target at the weakest
    link of the masks between the anchor and z (``ends.weakest_link``) and empties every
    slice past it at once. Away from every anchor a change is carried as far as it applies
    ("from there on"), and a slice where the object had ended picks up tracking again from
    an addition. A click that split slice z (removed a part, kept the rest) also splits the
    removed part's continuation off each further slice (``split_off``), for as long as
    there is one. With ``carry_add`` set, what a positive click added is also carried on
    by its own intensity evidence (``additions.carry_addition``).
    """
    st = state.get(object_id)
    total = offset + span_total(state, z, object_id)
    done = offset
    c_model = carry_model(ctx, object_id, z, before, st.mask[:, :, z])
    # with ``hold_rim``, a negative click that only trimmed its slice's rim stays there (reach.py)
    trim = ctx.opts.hold_rim is not None and rim_only(before, st.mask[:, :, z])
    cap = resume_area(st.mask, z) if ctx.opts.resume_cap is not None else 0
    for direction in (1, -1):
        span = st.span(z, direction)
        if len(span) == 0 or trim:
            continue
        cur = st.mask[:, :, z]
        added = cur & ~before
        removed = before & ~cur
        cut = removed.copy()
        prev = cur.copy()
        model = ctx.models.get(object_id)
        active = model is not None and bool(added.any() or removed.any())
        outward = span.stop not in st.anchors  # the volume's end or the slice range's
        anchor = None if outward else st.mask[:, :, span.stop]
        retracting = anchor is not None and bool(removed.any())
        # a negative click that split its slice: what continues the part it removed is
        # split off the neighbouring slices too (``split_off``)
        splitting = bool(removed.any()) and bool(cur.any()) and not added.any()
        s_rem, s_kept = removed.copy(), cur.copy()
        means = (float(ctx.img[:, :, z][removed].mean()) if splitting else 0.0,
                 float(ctx.img[:, :, z][cur].mean()) if splitting else 0.0)
        c_prev = added.copy()  # what the click added, carried on (``carry_add``)
        # with ``resume_support``: the support watch of a tracking that an addition resumed
        # past the object's end, anchored on the clicked slice, and the slices it holds back
        resume: SupportWatch | None = None
        held: list[tuple[int, BoolArray]] = []  # (slice, its mask before the click)
        wait = 0
        past_end = 0
        if anchor is not None and before.any() and not cur.any():
            # the click emptied its slice: the target ended between the anchor and here,
            # at the weakest link of the chain of masks (segloop.engines.classic.ends)
            chain = [(span.stop, anchor), *((s, st.mask[:, :, s]) for s in reversed(span)),
                     (z, before)]
            past_end = len(span) - weakest_link(ctx.img, chain)
            if past_end:
                retracting = active = False
        for i, s in enumerate(span):
            old = st.mask[:, :, s].copy()
            new = old
            if i < past_end:
                new = np.zeros_like(old)
            retracted = False
            if retracting and anchor is not None:
                part = retract(ctx, s, old, removed | cut, (z, cut), (span.stop, anchor))
                if part.any():
                    new = old & ~part
                    added, removed = np.zeros_like(old), part
                    retracted = True
                else:
                    retracting = False
            if not retracted and active and model is not None:
                if prev.any():
                    tracked, _ = track(ctx, object_id, s, s - direction, prev, model)
                elif outward:
                    tracked = np.zeros_like(old)
                else:
                    # an emptied slice says nothing about the slices towards an anchor
                    active = False
                    tracked = old
                if outward and not old.any() and added.any() and not removed.any():
                    # the object had ended here: an addition resumes the tracking, but not
                    # across a jump of the mask onto slices that a jump had ended (with
                    # ``jump_frac``: the tracking sliding onto the neighbour again)
                    add_s, rem_s = tracked, np.zeros_like(old)
                    if run_on(ctx.opts, tracked, cur):  # past the end, as propagate_from (reach.py)
                        add_s = np.zeros_like(old)
                    if s in ctx.sheet_cut.get(object_id, ()) and (
                            ctx.opts.sheet_resume is None
                            or s in ctx.sheet_bands.get(object_id, ())):
                        # past a dark sheet (``sheet_cover``): a click beyond it adds its
                        # own slice, the tracking does not run on through the next copy;
                        # with ``sheet_resume`` it does, up to the next sheet's band
                        add_s = np.zeros_like(old)
                    if ctx.opts.jump_frac is not None and s in ctx.jump_cut.get(object_id, ()) \
                            and prev.any() and tracked.any() and \
                            jump_fraction(prev, tracked, ctx.sp, ctx.opts.jump_mm * ctx.sz) \
                            > ctx.opts.jump_frac:
                        add_s = np.zeros_like(old)
                    if ctx.opts.resume_cap is not None and \
                            add_s.sum() > ctx.opts.resume_cap * cap:
                        # past the object's end it tapers: the resumed tracking keeps to the
                        # previous slice's footprint once larger than the object was
                        # (``resume_area``)
                        add_s = add_s & prev
                    if ctx.opts.resume_support is not None and ctx.opts.support_min is not None \
                            and add_s.any():
                        # the resumed tracking ends where the clicked slice's edge is lost,
                        # as a propagation ends (``support_min``); its run is held back
                        if resume is None:
                            resume = SupportWatch(ctx.img[:, :, z], cur, ctx.opts.support_min,
                                                  int(ctx.opts.support_run))
                        wait = resume.step(ctx.img[:, :, s], add_s)
                        if resume.ended:
                            # the run's earlier slices (this one is not held yet) get
                            # back their masks from before the click
                            for q, o in held[len(held) - wait + 1:]:
                                st.mask[:, :, q] = o
                            add_s, wait, c_prev = np.zeros_like(old), 0, np.zeros_like(old)
                else:
                    add_s, rem_s = delta_step(ctx, old, tracked, added, removed, fade=not outward)
                new = (old | add_s) & ~rem_s
                added, removed = add_s, rem_s
                active = bool(added.any() or removed.any())
            if c_model is not None and ctx.opts.carry_add is not None and c_prev.any():
                new = new | carry_addition(ctx, object_id, s, new, c_prev, c_model,
                                           ctx.opts.carry_add)
                c_prev = new & ~old
            if splitting and new.any():
                part = split_off(ctx, s, new, s_rem, s_kept, not outward, means)
                new = new & ~part
                s_rem, s_kept = old & ~new, new
                splitting = bool(s_rem.any())
            st.mask[:, :, s] = new
            prev = new
            held.append((s, old))
            ready = len(held) - wait if active else len(held)
            for q, _ in held[:ready]:
                done += 1
                yield SliceResult(z=q, mask=st.mask[:, :, q].copy(), done=done, total=total)
            held = held[ready:]
        for q, _ in held:
            done += 1
            yield SliceResult(z=q, mask=st.mask[:, :, q].copy(), done=done, total=total)


def resume_area(mask: BoolArray, z: int) -> int:
    """The larger of the areas of slice z's mask and of the nearest other slice holding the
    object (``resume_cap``: the size a tracking resumed past the object's end from a click
    on slice z is not to outgrow; a click on a slice the object had left may take less than
    the object, which the tracking then recovers)."""
    nz = mask.shape[2]
    near = 0
    for d in range(1, nz):
        held = [q for q in (z - d, z + d) if 0 <= q < nz and mask[:, :, q].any()]
        if held:  # the lower one on a tie
            near = int(mask[:, :, held[0]].sum())
            break
    return max(int(mask[:, :, z].sum()), near)


def split_off(ctx: ClassicContext, s: int, old: BoolArray, removed: BoolArray, kept: BoolArray,
              towards_anchor: bool, means: tuple[float, float]) -> BoolArray:
    """The part of ``old`` (slice s) that continues what a negative click split off its slice.

    ``removed`` and ``kept``: what the previous slice lost and kept. The components of ``old``
    touching ``removed`` are divided between the two: each voxel goes with the nearer (mm)
    of its parts inside ``removed`` and inside ``kept``, and only within the slice-to-slice
    growth distance of ``removed``. Towards an anchor the removal may shift by a voxel but not
    grow (never larger than ``removed``), and the part's mean intensity must be nearer the
    cut's than the kept mask's (``means``, both on the clicked slice): a leak beside the
    target is taken back, the target's own shape changes are not; otherwise nothing.
    """
    bb = bbox(removed)
    if bb is None:
        return np.zeros_like(old)
    grow = ctx.grow_mm()
    # the part lies within ``grow`` of ``removed``; a kept voxel nearer than that to it lies
    # within twice that of ``removed``: the crop holds everything the division needs
    crop = Crop.around(bb, *ctx.margin(2.0 * grow), *old.shape)
    o, r, k = old[crop.sl], removed[crop.sl], kept[crop.sl]
    touch = keep_components(o, dilate1(r))
    neg = touch & r
    if not neg.any():
        return np.zeros_like(old)
    pos = touch & k
    part = touch
    if pos.any():
        d_neg = ndi.distance_transform_edt(~neg, sampling=ctx.sp)
        d_pos = ndi.distance_transform_edt(~pos, sampling=ctx.sp)
        part = touch & (d_neg < d_pos)
    part = keep_components(part & (ndi.distance_transform_edt(~r, sampling=ctx.sp) <= grow), neg)
    if towards_anchor:
        part &= dilate1(r)
        if part.sum() > r.sum():
            part &= r
        part = keep_components(part, neg)
        if part.any():
            mean = float(ctx.img[crop.x0:crop.x1, crop.y0:crop.y1, s][part].mean())
            if abs(mean - means[0]) >= abs(mean - means[1]):
                return np.zeros_like(old)
    out = np.zeros_like(old)
    out[crop.sl] = part
    return out


def retract(ctx: ClassicContext, s: int, old: BoolArray, touch: BoolArray,
            cut: tuple[int, BoolArray], anchor: tuple[int, BoolArray]) -> BoolArray:
    """The part of ``old`` (slice s, between a negative click and an anchor) that continues
    the part the click cut: its components touching ``touch`` (the cut and what was removed
    on the previous slice), when they resemble the cut (slice, mask) more than the anchor
    (slice, mask) in place (Dice, and at least half the cut's) and in intensity (mean);
    otherwise nothing, and the retraction ends."""
    part = keep_components(old, dilate1(touch))
    if not part.any():
        return part
    (zc, c), (za, a) = cut, anchor
    n = int(part.sum())
    d_cut = 2.0 * int((part & c).sum()) / (n + int(c.sum()))
    d_anchor = 2.0 * int((part & a).sum()) / (n + int(a.sum()))
    mean = float(ctx.img[:, :, s][part].mean())
    m_cut = float(ctx.img[:, :, zc][c].mean())
    m_anchor = float(ctx.img[:, :, za][a].mean()) if a.any() else np.inf
    if d_cut >= max(0.5, d_anchor) and abs(mean - m_cut) < abs(mean - m_anchor):
        return part
    return np.zeros_like(part)


def delta_step(ctx: ClassicContext, old: BoolArray, tracked: BoolArray, added: BoolArray,
               removed: BoolArray, fade: bool = True) -> tuple[BoolArray, BoolArray]:
    """Voxels to add to / remove from ``old`` on a slice, given the previous slice's changes.

    Changes continue those of the previous slice (connected to them) and spread at most
    the slice-to-slice growth distance; with ``fade`` an addition or removal is never
    larger than the previous slice's (without it, a removal may grow: a leak widening
    away from the target). Works on a crop around the masks involved.
    """
    add_s = np.zeros(old.shape, dtype=bool)
    rem_s = np.zeros(old.shape, dtype=bool)
    bb = bbox(old | tracked | added | removed)
    if bb is None:
        return add_s, rem_s
    grow = ctx.grow_mm()
    crop = Crop.around(bb, *ctx.margin(grow), *old.shape)
    o, t, a, r = (m[crop.sl] for m in (old, tracked, added, removed))
    if a.any():
        ac = keep_components(t & ~o, dilate1(a)) & ctx.near(a, grow)
        if ac.sum() > a.sum():  # a correction fades: never a larger change than before
            ac &= a
        add_s[crop.sl] = ac
    if r.any():
        rc = keep_components(o & ~t, dilate1(r)) & ctx.near(r, grow)
        if fade and rc.sum() > r.sum():
            rc &= r
        rem_s[crop.sl] = rc
    return add_s, rem_s
