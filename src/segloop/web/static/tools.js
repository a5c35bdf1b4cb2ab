// segloop viewer: the editing tools of issue 15 (stop a leak, clean up, paint constraints, sphere brush).
//
// Mask operations run on the server (POST /api/v1/jobs/{id}/edit, segloop.edit): each makes a new
// mask version, so Undo goes back to before it. Painting constraints act on NiiVue's drawing bitmap
// after each brush/eraser stroke (the stroke is compared with a copy taken at pointer-down): the
// eraser erases the current object only, the brush paints over other objects only when asked, and
// only where the intensity is in the chosen range; locked objects are never changed. The sphere
// brush paints balls (3D) itself, with the same constraints. viewer.js calls the hooks of the
// object returned by createTools(ctx); this module owns no state of viewer.js. Slices are those
// of the plane being stepped through (S.navAxis: the view's, or the 2D tile last under the
// mouse): stop here, clear up/down, fill between and the slice range act along that axis, and
// the range remembers its axis (the server refuses a range of another plane than the step's).

import { IN_PLANE, PLANE_NAME } from './planes.js';

const $ = (sel) => document.querySelector(sel);

/** Tool names this module handles on the prompt layer (pointer events on #overlay). */
const OWN_TOOLS = ['remove', 'sphere'];

const PANEL = `
<details id="edit-box">
<summary><h2 class="inline">Fix &amp; clean</h2></summary>
<div class="actions" title="Propagate and Refine keep the object between these slices (empty: no limit)">
  <label class="inline small">range <span id="range-axis">z</span> <input id="range-first" type="number" min="0" placeholder="first"></label>
  <label class="inline small">– <input id="range-last" type="number" min="0" placeholder="last"></label>
  <button id="btn-stop-here" class="small" title="Stop here: the object ends on this slice (on the side away from where it was drawn); clears it beyond and limits later propagations (K)">Stop here</button>
  <button id="btn-range-clear" class="small ghost" title="No slice range (Shift+K)">×</button>
</div>
<div class="actions">
  <button id="btn-clear-up" class="small" title="Clear the current object on this slice and all slices above (Shift+↑ … : U)">Clear ↑ from here</button>
  <button id="btn-clear-down" class="small" title="Clear the current object on this slice and all slices below (Shift+U)">Clear ↓ from here</button>
</div>
<div class="actions">
  <button id="btn-fill-between" class="small" title="Interpolate the object on the empty slices between the slices that hold it (I)">Fill between slices</button>
  <button id="btn-islands" class="small" title="Remove connected parts of the object smaller than this many voxels (Shift+I)">Remove islands &lt;</button>
  <input id="islands-min" type="number" min="1" value="50" title="voxels">
  <button id="btn-smooth" class="small" title="Smooth the object (Gaussian, kernel in mm)">Smooth</button>
  <input id="smooth-mm" type="number" min="0.5" max="50" step="0.5" value="3" title="kernel width, mm">
</div>
<div class="actions small">
  <label class="inline" title="Brush and sphere may paint over other objects (off: other objects are kept)"><input type="checkbox" id="paint-over"> paint over other objects</label>
  <label class="inline" title="Paint only voxels whose intensity is in this range"><input type="checkbox" id="paint-range"> only intensities</label>
  <input id="paint-lo" type="number" value="-100" title="lowest intensity painted">
  <input id="paint-hi" type="number" value="300" title="highest intensity painted">
</div>
</details>`;

export const TOOL_SHORTCUTS = [
  ['X', 'remove-region tool: click a region = remove it on that slice (any plane); Shift+click = in 3D'],
  ['Shift+B', 'sphere brush (3D ball of the brush size)'],
  ['K / Shift+K', 'stop here (the object ends on this slice of the plane you step through) / no slice range'],
  ['U / Shift+U', 'clear the current object from this slice up / down (along the plane you step through)'],
  ['I / Shift+I', 'fill between slices / remove small islands'],
  ['− points only + R', 'Refine with only − points removes the region each point lands in'],
];

export function createTools(ctx) {
  const { S, api } = ctx;
  const nv = () => ctx.nv();
  let before = null; // drawing bitmap at brush/eraser pointer-down
  let sphereLast = null; // last voxel painted by the sphere brush in this stroke
  let mouse = null; // last canvas position over the viewer (for the brush cursor)
  let rangeAxis = 2; // the axis whose slices the range counts

  // ---------------------------------------------------------------- panel
  function build() {
    const sec = document.createElement('section');
    sec.id = 'edit-tools';
    sec.innerHTML = PANEL;
    // folded on a laptop screen so the side panel fits without scrolling; its shortcuts work folded
    sec.querySelector('#edit-box').open = window.innerHeight >= 900;
    const toolsSection = $('#tools').closest('section');
    toolsSection.after(sec);
    const grid = $('#tools');
    const size = grid.querySelector('label');
    for (const [tool, text, title] of [
      ['remove', '✂ Remove', 'Click a region of a mask to remove it on that slice; Shift+click removes it in 3D (X)'],
      ['sphere', '● Sphere', 'Paint balls (3D) of the brush size into the current object (Shift+B)'],
    ]) {
      const b = document.createElement('button');
      b.dataset.tool = tool;
      b.textContent = text;
      b.title = title;
      grid.insertBefore(b, size);
    }
    const run = (f) => () => Promise.resolve().then(f).catch(ctx.fail);
    $('#btn-stop-here').addEventListener('click', run(stopHere));
    $('#btn-range-clear').addEventListener('click', () => setRange(null, null));
    $('#btn-clear-up').addEventListener('click', run(() => clearFrom('up')));
    $('#btn-clear-down').addEventListener('click', run(() => clearFrom('down')));
    $('#btn-fill-between').addEventListener('click', run(fillBetween));
    // a range typed by hand counts slices of the plane stepped through
    for (const id of ['#range-first', '#range-last']) $(id).addEventListener('change', () => setRangeAxis(S.navAxis ?? 2));
    $('#btn-islands').addEventListener('click', run(removeIslands));
    $('#btn-smooth').addEventListener('click', run(() => edit({ op: 'smooth', kernel_mm: Number($('#smooth-mm').value) || 3 }, 'Smoothed')));
    const ov = $('#overlay');
    ov.addEventListener('pointerdown', (e) => onDown(e).catch(ctx.fail));
    ov.addEventListener('pointermove', onMove);
    ov.addEventListener('pointerup', onUp);
    ov.addEventListener('pointercancel', onUp);
    const gl = $('#gl');
    gl.addEventListener('pointerdown', (e) => {
      if ((S.tool === 'brush' || S.tool === 'eraser') && e.button === 0 && nv() && nv().drawBitmap) {
        before = nv().drawBitmap.slice();
      }
    }, { capture: true });
    for (const el of [gl, ov]) {
      el.addEventListener('pointermove', (e) => { mouse = ctx.canvasXY(e); if (cursorShown()) ctx.redraw(); });
      el.addEventListener('pointerleave', () => { mouse = null; ctx.redraw(); });
    }
  }

  // ---------------------------------------------------------------- helpers
  const objectByLabel = (v) => S.objects.find((o) => o.label_value === v);
  const current = () => S.objects.find((o) => o.object_id === S.currentObject);
  const locked = (label) => { const o = objectByLabel(label); return !!(o && ctx.isLocked(o.object_id)); };

  /** The voxel under a canvas position on any 2D tile: {vox: [x,y,z], plane: 0 ax | 1 cor | 2 sag}. */
  function voxAt(xy) {
    const n = nv();
    if (!n || !n.back) return null;
    const ti = n.tileIndex(xy[0], xy[1]);
    if (ti < 0 || n.screenSlices[ti].axCorSag > 2) return null;
    const f = n.canvasPos2frac(xy);
    if (f[0] < 0) return null;
    return { vox: Array.from(n.frac2vox(f)), plane: n.screenSlices[ti].axCorSag, frac: f };
  }

  function range() {
    const f = $('#range-first').value.trim();
    const l = $('#range-last').value.trim();
    return { first: f === '' ? null : Number(f), last: l === '' ? null : Number(l) };
  }

  function setRangeAxis(axis) {
    rangeAxis = axis;
    $('#range-axis').textContent = 'xyz'[axis];
    $('#range-axis').title = `${PLANE_NAME[axis]} slices`;
  }

  function setRange(first, last, axis = rangeAxis) {
    setRangeAxis(axis);
    $('#range-first').value = first === null ? '' : String(first);
    $('#range-last').value = last === null ? '' : String(last);
    const plane = axis === 2 ? '' : ` (${PLANE_NAME[axis]})`;
    ctx.message(first === null && last === null ? 'No slice range' : `Slice range ${first ?? '…'}–${last ?? '…'}${plane}`);
  }

  /** The axis slices are stepped along, and the current slice on it. */
  function navSlice() {
    const axis = S.navAxis ?? 2;
    return [axis, ctx.currentVox()[axis]];
  }

  async function edit(body, done) {
    if (!S.job) throw new Error('Open a volume first: drop a file or pick an earlier job.');
    if (S.activeTask) throw new Error('A task is running: wait for it or cancel it (Esc).');
    const oid = body.object_id || S.currentObject;
    if (ctx.isLocked(oid)) throw new Error('This object is locked: unlock it (its “locked” button) to change it.');
    if (S.dirty) await ctx.saveEdits();
    const r = await api.postJSON(api.jobUrl(S.job.job_id, '/edit'), { object_id: oid, base_version: S.version, ...body });
    if (!r.changed) {
      ctx.message(`${done}: nothing to change`);
      return r;
    }
    await ctx.loadVersion(r.version);
    await ctx.refreshVersions();
    ctx.message(`${done}: ${r.changed} voxels → version ${r.version}`, 'ok');
    return r;
  }

  // ---------------------------------------------------------------- stop a leak
  async function stopHere() {
    if (!S.job) return;
    const [axis, z] = navSlice();
    await ctx.refreshObjects(); // the anchor as the server has it now (a task may have moved it)
    const o = current();
    // the anchor is a slice of the plane the object was drawn on: compared on that plane only
    const sameAxis = PLANE_NAME.indexOf((o && o.anchor_axis) || 'axial') === axis;
    const anchor = sameAxis && o && o.anchor_slice !== null && o.anchor_slice !== undefined ? o.anchor_slice : null;
    const r = axis === rangeAxis ? range() : { first: null, last: null };
    const plane = PLANE_NAME[axis];
    const name = axis === 2 ? 'slice' : `${plane} slice`;
    if (anchor !== null && z < anchor) {
      setRange(z, r.last, axis);
      await edit({ op: 'keep-slices', first_slice: z, axis: plane }, `Stopped below ${name} ${z}`);
    } else {
      setRange(r.first, z, axis);
      await edit({ op: 'keep-slices', last_slice: z, axis: plane }, `Stopped above ${name} ${z}`);
    }
  }

  async function clearFrom(dir) {
    if (!S.job) return;
    const [axis, z] = navSlice();
    const plane = PLANE_NAME[axis];
    const body = dir === 'up' ? { op: 'clear-slices', first_slice: z, last_slice: S.dims[axis] - 1, axis: plane }
      : { op: 'clear-slices', first_slice: 0, last_slice: z, axis: plane };
    await edit(body, `Cleared from ${axis === 2 ? '' : `${plane} `}slice ${z} ${dir}`);
  }

  async function fillBetween() {
    await edit({ op: 'fill-between', axis: PLANE_NAME[navSlice()[0]] }, 'Filled between slices');
  }

  async function removeIslands() {
    await edit({ op: 'remove-islands', min_voxels: Math.max(1, Number($('#islands-min').value) || 50) }, 'Removed islands');
  }

  /** Remove the region under a voxel: the object whose label is there, on its slice of
   * `axis` (the plane clicked on) or in 3D. */
  async function removeAt(vox, threeD, axis = 2) {
    const label = nv().drawBitmap[vox[0] + S.dims[0] * (vox[1] + S.dims[1] * vox[2])];
    const o = objectByLabel(label);
    if (!label || !o) throw new Error('Click inside a mask to remove that region.');
    const where = threeD ? 'in 3D' : `on ${axis === 2 ? '' : `${PLANE_NAME[axis]} `}slice ${vox[axis]}`;
    return edit({ op: 'remove-region', object_id: o.object_id, point: vox, three_d: threeD, axis: PLANE_NAME[axis] },
      `Removed the region ${where} of ${o.name}`);
  }

  /** Refine with only − points: each removes the region it lands in (on its slice). */
  function negativeOnly(p) {
    return !!p && !p.box && p.points.length > 0 && p.points.every((q) => !q.label);
  }

  async function removeAtPoints(p) {
    const axis = p.axis ?? 2;
    const [ua, va] = IN_PLANE[axis];
    for (const q of p.points) {
      const vox = [0, 0, 0];
      vox[axis] = p.z;
      vox[ua] = q.x;
      vox[va] = q.y;
      await removeAt(vox, false, axis);
    }
    ctx.clearPrompts();
  }

  /** first_slice / last_slice (and the plane they count) for Propagate and Refine when a
   * range is set. */
  function rangeParams() {
    const r = range();
    const out = {};
    if (r.first !== null) out.first_slice = r.first;
    if (r.last !== null) out.last_slice = r.last;
    if (r.first !== null || r.last !== null) out.range_axis = PLANE_NAME[rangeAxis];
    return out;
  }

  // ---------------------------------------------------------------- painting constraints
  function allowed(i, old, value, lo, hi, useRange) {
    if (old === value) return true;
    if (locked(old)) return false;
    if (value === 0) return old === labelNow(); // the eraser erases the current object only
    if (old !== 0 && !$('#paint-over').checked) return false;
    if (useRange) {
      const x = i % S.dims[0];
      const y = Math.floor(i / S.dims[0]) % S.dims[1];
      const z = Math.floor(i / (S.dims[0] * S.dims[1]));
      const v = nv().back.getValue(x, y, z);
      if (!(v >= lo && v <= hi)) return false;
    }
    return true;
  }

  const labelNow = () => ctx.labelOf(S.currentObject);

  /** After a brush/eraser stroke: undo the voxels the constraints forbid (looked for in the
   * index ranges `runs` the stroke can have changed; null: everywhere). */
  function afterStroke(runs = null) {
    const n = nv();
    if (!before || !n || !n.drawBitmap || before.length !== n.drawBitmap.length) return;
    const bm = n.drawBitmap;
    const useRange = $('#paint-range').checked;
    const lo = Number($('#paint-lo').value);
    const hi = Number($('#paint-hi').value);
    let kept = 0;
    for (const [a, b] of runs || [[0, bm.length]]) {
      for (let i = a; i < b; i++) {
        if (bm[i] !== before[i] && !allowed(i, before[i], bm[i], lo, hi, useRange)) {
          bm[i] = before[i];
          kept++;
        }
      }
    }
    before = null;
    if (kept) {
      n.refreshDrawing(true);
      S.constrainedVoxels = (S.constrainedVoxels || 0) + kept;
    }
  }

  // ---------------------------------------------------------------- sphere brush
  function sphereAt(c) {
    const n = nv();
    const bm = n.drawBitmap;
    const [nx, ny, nz] = S.dims;
    const sp = n.back.hdr.pixDims.slice(1, 4);
    const rmm = (Number($('#pen-size').value) || 3) / 2 * Math.min(sp[0], sp[1]);
    const rv = sp.map((s) => Math.floor(rmm / s));
    const value = labelNow();
    const useRange = $('#paint-range').checked;
    const lo = Number($('#paint-lo').value);
    const hi = Number($('#paint-hi').value);
    let painted = 0;
    for (let dz = -rv[2]; dz <= rv[2]; dz++) {
      const z = c[2] + dz;
      if (z < 0 || z >= nz) continue;
      for (let dy = -rv[1]; dy <= rv[1]; dy++) {
        const y = c[1] + dy;
        if (y < 0 || y >= ny) continue;
        for (let dx = -rv[0]; dx <= rv[0]; dx++) {
          const x = c[0] + dx;
          if (x < 0 || x >= nx) continue;
          if ((dx * sp[0]) ** 2 + (dy * sp[1]) ** 2 + (dz * sp[2]) ** 2 > rmm * rmm) continue;
          const i = x + nx * (y + ny * z);
          if (bm[i] !== value && allowed(i, bm[i], value, lo, hi, useRange)) {
            bm[i] = value;
            painted++;
          }
        }
      }
    }
    return painted;
  }

  function sphereStroke(to) {
    const from = sphereLast || to;
    const steps = Math.max(1, Math.ceil(Math.max(...to.map((v, k) => Math.abs(v - from[k])))));
    let painted = 0;
    for (let s = 1; s <= steps; s++) {
      const t = s / steps;
      painted += sphereAt(from.map((v, k) => Math.round(v + (to[k] - v) * t)));
    }
    sphereLast = to;
    if (painted) {
      nv().refreshDrawing(true);
      ctx.markDirty(true);
    }
  }

  // ---------------------------------------------------------------- pointer events of own tools
  async function onDown(e) {
    if (!OWN_TOOLS.includes(S.tool) || !S.job) return;
    e.preventDefault();
    const hit = voxAt(ctx.canvasXY(e));
    if (!hit) return;
    if (S.tool === 'remove' && e.button === 0) {
      await removeAt(hit.vox, e.shiftKey, 2 - hit.plane);
    } else if (S.tool === 'sphere' && e.button === 0) {
      if (ctx.isLocked(S.currentObject)) throw new Error('This object is locked: unlock it (its “locked” button) to paint it.');
      $('#overlay').setPointerCapture(e.pointerId);
      sphereLast = null;
      sphereStroke(hit.vox);
    }
  }

  function onMove(e) {
    if (S.tool !== 'sphere' || sphereLast === null) return;
    const hit = voxAt(ctx.canvasXY(e));
    if (hit) sphereStroke(hit.vox);
  }

  function onUp() {
    if (S.tool === 'sphere' && sphereLast !== null) {
      sphereLast = null;
      // one sphere stroke is one step of the unsaved-strokes undo (Ctrl+Z), like a brush stroke
      if (S.strokes && nv() && S.strokes.commit(nv().drawBitmap)) ctx.markDirty(true);
    }
  }

  // ---------------------------------------------------------------- brush size cursor
  function cursorShown() {
    return ['brush', 'eraser', 'sphere'].includes(S.tool);
  }

  /** Draw the brush outline at the mouse (a square: NiiVue's pen; a circle: the sphere). */
  function drawCursor(g) {
    if (!cursorShown() || !mouse || !nv() || !nv().back) return;
    const hit = voxAt(mouse);
    if (!hit) return;
    const n = nv();
    const axis = hit.plane === 2 ? 1 : 0; // an in-plane axis of the tile
    const f2 = hit.frac.slice();
    f2[axis] += 1 / S.dims[axis];
    const a = n.frac2canvasPosWithTile(hit.frac, hit.plane);
    const b = n.frac2canvasPosWithTile(f2, hit.plane);
    if (!a || !b) return;
    const pxPerVox = Math.hypot(b.pos[0] - a.pos[0], b.pos[1] - a.pos[1]);
    const size = Number($('#pen-size').value) || 3;
    g.save();
    g.lineWidth = 1.5;
    g.strokeStyle = S.tool === 'eraser' ? '#ffffff' : '#ffd400';
    g.setLineDash([4, 3]);
    if (S.tool === 'sphere') {
      g.beginPath();
      g.arc(mouse[0], mouse[1], (size / 2) * pxPerVox, 0, 2 * Math.PI);
      g.stroke();
    } else {
      const half = (2 * Math.floor(size / 2) + 1) / 2 * pxPerVox;
      g.strokeRect(mouse[0] - half, mouse[1] - half, 2 * half, 2 * half);
    }
    g.restore();
  }

  // ---------------------------------------------------------------- keys
  function onKey(e) {
    const k = e.key;
    if (e.ctrlKey || e.metaKey || e.altKey) return false;
    const run = (p) => Promise.resolve(p).catch(ctx.fail);
    if (k === 'x' || k === 'X') ctx.setTool('remove');
    else if (k === 'B' && e.shiftKey) ctx.setTool('sphere');
    else if (k === 'k' && !e.shiftKey) run(stopHere());
    else if (k === 'K' && e.shiftKey) setRange(null, null);
    else if (k === 'u' && !e.shiftKey) run(clearFrom('up'));
    else if (k === 'U' && e.shiftKey) run(clearFrom('down'));
    else if (k === 'i' && !e.shiftKey) run(fillBetween());
    else if (k === 'I' && e.shiftKey) run(removeIslands());
    else return false;
    return true;
  }

  return {
    build, owns: (tool) => OWN_TOOLS.includes(tool), onTool: (tool) => {
      $('#canvas-wrap').classList.toggle('prompting', tool === 'box' || tool === 'points' || OWN_TOOLS.includes(tool));
      $('#canvas-wrap').classList.toggle('painting', tool === 'sphere');
    },
    afterStroke, drawCursor, onKey, rangeParams, negativeOnly, removeAtPoints, edit, setRange,
  };
}
