// segloop web viewer: NiiVue (WebGL2) + the segloop jobs API.
//
// Coordinates: the viewer displays the API's closest-canonical RAS volume (GET .../volume), so a
// NiiVue voxel index (x, y, z) is the API's voxel index: x = array axis 0, y = axis 1, z = axial
// slice. The mask overlay is NiiVue's drawing bitmap in that same order (x fastest), filled
// from GET .../result?format=nii.gz&grid=canonical and saved back with PUT .../mask. Prompts
// go on any 2D tile (planes.js): a box or points on a coronal or sagittal slice are sent with
// the plane's `axis`, and the engine propagates along that axis.

import * as api from './api.js';
import { Image2DView } from './image2d.js';
import { decodeRle, gzip, readLabelNifti, writeLabelNifti } from './nifti.js';
import { DraftKeeper } from './drafts.js';
import { askUnsaved, guardUnload } from './guard.js';
import { AXIS_NAME, VIEW_AXIS, moveTo, tileAxisAt, wheelStep } from './slices.js';
import { StrokeHistory } from './strokes.js';
import { CUSTOM, cyclePresets, matchingPreset, offerPresets, windowOf } from './wl.js';
import { createObjects, OBJECT_SHORTCUTS } from './objects.js';
import { fetchVolume, initialWindow, loadWindowed, markOnce, previewWanted, showPreview } from './preview.js';
import { createTools, TOOL_SHORTCUTS } from './tools.js';
import { createWorkfiles } from './workfiles.js';
import { leanNiivue, strokeRuns } from './nvlean.js';
import { createTasks, TASK_KIND } from './tasks.js';
import { PLANE_NAME, planePointAt, planeShown, planeToCanvas, sliceIndices } from './planes.js';

const $ = (sel) => document.querySelector(sel);
const $$ = (sel) => Array.from(document.querySelectorAll(sel));

const VIEWS = { axial: 0, coronal: 1, sagittal: 2, multi: 3, render: 4 };
const OVERLAY_OPACITY = 0.6;

/** Everything the page knows; exposed as window.segloop.state for debugging and tests. */
const S = {
  job: null, // job record from the API
  dims: [0, 0, 0],
  objects: [],
  currentObject: 1,
  tool: 'navigate',
  view: 'axial',
  prompts: null, // {z, axis, box: [u0,v0,u1,v1] | null, points: [{x, y, label}]}: slice z of axis
  drag: null, // box being dragged: {z, axis, a: [u,v], b: [u,v]}
  version: 0, // mask version shown
  saved: null, // Uint8Array: labels of `version` (to revert unsaved edits)
  dirty: false, // brush/eraser edits not saved yet
  strokes: null, // StrokeHistory of the unsaved brush/eraser strokes
  navAxis: 2, // the axis keys and the slider step along (the view's, or the last 2D tile hovered)
  versions: [],
  engines: [],
  defaultEngine: '',
  tasks: {}, // task_id -> {kind, object_id, started}
  activeTask: null,
  ended: new Set(), // task ids whose done/failed/cancelled event has arrived
  es: null,
  esReady: null,
  lastEvent: null,
  eventCounts: {}, // SSE events received, by type
  paintedSlices: 0, // propagated slices painted before their version arrived
};

let NV = null; // the NiiVue module
let nv = null; // the Niivue instance
let view2d = null; // the 2D image mode (image2d.js): active while a 2D image job is open
let TOOLS = null; // tools.js: stop a leak, clean up, painting constraints, sphere brush
let OBJ = null; // objects.js: hide/lock/delete, opacity/outline, measurements
let FILES = null; // workfiles.js: open a mask, delete a job
let TASKS = null; // tasks.js: the event stream, submit and cancel, the progress bar

// ------------------------------------------------------------------ small UI helpers
function message(text, kind = '') {
  const m = $('#message');
  m.textContent = text;
  m.className = kind;
  m.title = text;
}

function banner(html) {
  const b = $('#banner');
  b.innerHTML = html;
  b.classList.toggle('hidden', !html);
}

function setState(state, text) {
  const p = $('#state');
  p.dataset.state = state;
  p.textContent = text || state;
}

function fail(err) {
  console.warn(err);
  message(userText(err && err.message ? err.message : String(err)), 'error');
  // a refused request (409: not now, e.g. nothing to undo) leaves the page as it was
  if (err && err.status === 409) setState(S.activeTask ? 'busy' : 'idle');
  else setState('error', 'error');
}

/** The server's wording made for a web user (it is written for API and CLI users). */
function userText(text) {
  if (/POST initial-mask before propagate/.test(text)) {
    return 'This object has no mask yet: draw a box (B) or points (P) and segment a slice (S) first, then propagate.';
  }
  const m = /engine '([^']+)' cannot run here: (.*)/.exec(text);
  if (m) {
    const why = /weights/.test(m[2]) ? 'its model weights are not installed on this server' : 'it is not installed on this server';
    return `The engine ${m[1]} cannot run: ${why}. Pick another engine, or ask the server's administrator.`;
  }
  return text;
}

const clamp = (v, lo, hi) => Math.max(lo, Math.min(hi, v));

function hexToRgb(hex) {
  const h = (hex || '#ff0000').replace('#', '');
  return [0, 2, 4].map((i) => parseInt(h.slice(i, i + 2), 16));
}

function labelOf(objectId) {
  const o = S.objects.find((x) => x.object_id === objectId);
  return o ? o.label_value : objectId;
}

function fmtTime(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  return d.toLocaleString([], { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' });
}

// ------------------------------------------------------------------ NiiVue setup
async function initNiivue(url) {
  NV = await import(url);
  const D = NV.DRAG_MODE;
  nv = new NV.Niivue({
    backColor: [0, 0, 0, 1],
    crosshairColor: [0.25, 0.75, 1, 0.85],
    crosshairWidth: 0.3,
    show3Dcrosshair: true,
    dragAndDropEnabled: false,
    isColorbar: false,
    isOrientCube: false,
    isRadiologicalConvention: true,
    multiplanarShowRender: NV.SHOW_RENDER.ALWAYS,
    multiplanarLayout: NV.MULTIPLANAR_TYPE.AUTO,
    isForceMouseClickToVoxelCenters: true,
    sliceType: NV.SLICE_TYPE.AXIAL,
    penSize: 3,
    isFilledPen: false,
    maxDrawUndoBitmaps: 16,
    logLevel: 'warn',
    loadingText: '',
  });
  // NiiVue 0.69 ignores mouseEventConfig given to the constructor: set it on the instance
  nv.setMouseEventConfig({
    leftButton: { primary: D.crosshair, withShift: D.pan, withCtrl: D.windowing },
    rightButton: D.windowing,
    centerButton: D.pan,
  });
  // NiiVue's own canvas hotkeys (C: clip plane, P: cycle it, V: view) would fight the page's keys
  nv.opts.clipPlaneHotKey = '';
  nv.opts.cycleClipPlaneHotKey = '';
  nv.opts.viewModeHotKey = '';
  await nv.attachToCanvas($('#gl'));
  // no gradients, no whole-bitmap undo encoding, strokes upload their slices only, the
  // intensity range without a whole-volume loop, one framebuffer check per texture
  leanNiivue(nv, NV.NVImage);
  nv.setDrawOpacity(OBJ ? OBJ.opacity() : OVERLAY_OPACITY);
  nv.onLocationChange = onLocation;
  nv.onDrawingChanged = (action) => {
    if (action !== 'draw' || !(S.tool === 'brush' || S.tool === 'eraser')) return;
    const runs = strokeRuns(nv, S.dims); // the slices the stroke crossed (null: unknown)
    if (TOOLS) TOOLS.afterStroke(runs); // constraints (eraser: this object only; locks; range)
    if (S.strokes && S.strokes.commit(nv.drawBitmap, runs)) {
      markDirty(true);
      drafts.keep();
    }
  };
  nv.onMouseUp = () => updateWlReadout();
  // redraw the prompt layer whenever NiiVue redraws (zoom, pan, resize, slice change)
  const draw = nv.drawScene.bind(nv);
  nv.drawScene = (...args) => {
    const r = draw(...args);
    drawOverlay();
    return r;
  };
}

function currentVox() {
  if (!nv || !nv.back) return [0, 0, 0];
  return Array.from(nv.frac2vox(nv.scene.crosshairPos));
}

/** Move to slice `i` along `axis` (default: the axis keys and the slider step along). */
function setSlice(i, axis = S.navAxis) {
  if (!nv || !nv.back) return;
  const d = moveTo(currentVox(), S.dims, axis, i);
  if (d[axis]) nv.moveCrosshairInVox(d[0], d[1], d[2]);
}

/** Step `n` slices along `axis`. */
function stepSlice(n, axis = S.navAxis) {
  setSlice(currentVox()[axis] + n, axis);
}

/** The axis keys and the slider step along; the slider follows it. */
function setNavAxis(axis) {
  S.navAxis = axis;
  $('#slice-axis').textContent = AXIS_NAME[axis];
  $('#slice').max = String(Math.max(0, S.dims[axis] - 1));
  if (S.job) updateSliceBar(currentVox());
}

function updateSliceBar(v) {
  const a = S.navAxis;
  $('#slice').value = String(v[a]);
  $('#slice-label').textContent = `${v[a]} / ${S.dims[a] - 1}`;
}

/** The wheel over a 2D tile steps its slices (up = higher index) with every tool. */
function onWheel(e) {
  if (!nv || !nv.back) return;
  if (e.ctrlKey) {
    e.preventDefault();
    e.stopImmediatePropagation();
    zoomBy(e.deltaY < 0 ? 1.1 : 1 / 1.1);
    return;
  }
  const axis = tileAxisAt(nv, canvasXY(e));
  if (axis < 0) return; // the 3D render: NiiVue zooms it
  e.preventDefault();
  e.stopImmediatePropagation();
  const n = wheelStep(e);
  if (n) stepSlice(n, axis);
}

function onLocation(data) {
  const v = data && data.vox ? Array.from(data.vox) : currentVox();
  const val = data && data.values && data.values.length ? data.values[0].value : undefined;
  updateSliceBar(v);
  const unit = S.job && S.job.modality === 'CT' ? ' HU' : '';
  const vs = val === undefined ? '' : ` = ${Number.isInteger(val) ? val : val.toFixed(1)}${unit}`;
  $('#cursor').textContent = `crosshair x ${v[0]}  y ${v[1]}  z ${v[2]}${vs}`;
  S.crosshair = { vox: v, value: val };
  updatePromptInfo();
}

/** Show the current window as W/L, and the preset it matches (else "Custom"). */
function updateWlReadout() {
  if (!nv || !nv.back) return;
  const lo = nv.back.cal_min;
  const hi = nv.back.cal_max;
  $('#wl-readout').textContent = `W ${Math.round(hi - lo)} L ${Math.round((hi + lo) / 2)}`;
  $('#wl-preset').value = matchingPreset($('#wl-preset'), nv.back);
}

function applyWindow(value) {
  if (!nv || !nv.back || value === CUSTOM) return;
  const [lo, hi] = windowOf(value, nv.back);
  if (lo !== nv.back.cal_min || hi !== nv.back.cal_max) {
    [nv.back.cal_min, nv.back.cal_max] = [lo, hi];
    nv.updateGLVolume();
  }
  updateWlReadout();
}

function setView(view) {
  S.view = view;
  $$('#views button').forEach((b) => b.classList.toggle('active', b.dataset.view === view));
  if (nv) nv.setSliceType(VIEWS[view]);
  setNavAxis(VIEW_AXIS[view] ?? 2);
}

/** Zoom and pan back to the whole image (the 2D mode's picture, or NiiVue's 2D views). */
function resetZoom() {
  if (view2d && view2d.active) view2d.resetView();
  else if (nv) nv.setPan2Dxyzmm([0, 0, 0, 1]);
}

function zoomBy(f) {
  if (view2d && view2d.active) { view2d.zoomBy(f); return; }
  if (!nv) return;
  const p = nv.scene.pan2Dxyzmm;
  nv.setPan2Dxyzmm([p[0], p[1], p[2], clamp(p[3] * f, 0.25, 25)]);
}

// ------------------------------------------------------------------ mask overlay (drawing bitmap)
function applyLut() {
  if (!nv) return;
  const lut = new Uint8ClampedArray(256 * 4);
  for (let i = 1; i < 256; i++) lut.set([255, 255, 0, 255], i * 4); // labels without an object
  const labels = Array.from({ length: 256 }, (_, i) => String(i));
  for (const o of S.objects) {
    lut.set([...hexToRgb(o.colour), OBJ ? OBJ.alpha(o) : 255], o.label_value * 4);
    labels[o.label_value] = o.name;
  }
  nv.drawLut = { lut, labels };
  if (OBJ) nv.drawRimOpacity = OBJ.rim();
  // the drawing's colours live in the colour-map texture: refresh that, not every volume layer
  // (updateGLVolume re-renders the whole volume and its gradients: seconds on a CPU WebGL)
  nv.refreshColormaps();
  nv.drawScene();
}

function showLabels(data) {
  if (!nv.drawBitmap || nv.drawBitmap.length !== data.length) nv.createEmptyDrawing();
  nv.drawBitmap.set(data);
  nv.refreshDrawing(true);
  S.strokes = new StrokeHistory(nv.drawBitmap);
}

async function loadVersion(n) {
  const nvox = S.dims[0] * S.dims[1] * S.dims[2];
  let data;
  if (!n) {
    data = new Uint8Array(nvox);
  } else {
    const url = api.jobUrl(S.job.job_id, `/result?format=nii.gz&grid=canonical&version=${n}`);
    const resp = await api.request('GET', url);
    const nii = await readLabelNifti(await resp.arrayBuffer());
    if (nii.data.length !== nvox) {
      throw new Error(`mask grid ${nii.dims.join('x')} does not match the volume ${S.dims.join('x')}`);
    }
    data = nii.data;
  }
  S.version = n;
  S.saved = data.slice();
  showLabels(data);
  markDirty(false);
  document.body.dataset.version = String(n);
  if (OBJ) OBJ.refreshMeasures().catch((e) => console.warn(e));
  await syncObjects().catch((e) => console.warn(e));
}

/** Paint one propagated slice of an object as it arrives (progress event `masks`). */
let repaintPending = false;
function paintSlice(z, rle, objectId, axis = 2) {
  if (!nv || !nv.drawBitmap) return;
  const at = sliceIndices(S.dims, axis, z); // a slice of the plane the task propagates along
  const m = decodeRle(rle, at.length);
  const label = labelOf(objectId);
  const bm = nv.drawBitmap;
  const snap = S.strokes ? S.strokes.snapshot : null; // not a stroke
  S.paintedSlices += 1;
  for (let i = 0; i < at.length; i++) {
    const j = at[i];
    if (m[i]) bm[j] = label;
    else if (bm[j] === label) bm[j] = 0;
    if (snap) snap[j] = bm[j];
  }
  if (!repaintPending) {
    repaintPending = true;
    requestAnimationFrame(() => {
      repaintPending = false;
      nv.refreshDrawing(true);
    });
  }
}

function markDirty(d) {
  S.dirty = d;
  $('#btn-save').disabled = !d;
  $('#btn-save').textContent = d ? 'Save edits *' : 'Save edits';
  updateUndoRedo();
  if (OBJ) OBJ.onDirty(d); // the measurements follow unsaved strokes
}

// ------------------------------------------------------------------ drafts (unsaved strokes autosaved on the server)
let drafts = null; // DraftKeeper, made in bindUi

/** What drafts.js needs of the open work. */
function draftState() {
  if (!S.job || !nv || !nv.drawBitmap) return null;
  const hdr = nv.back.hdr;
  const encode = () => writeLabelNifti(nv.drawBitmap, S.dims, hdr.affine, hdr.pixDims.slice(1, 4));
  return { jobId: S.job.job_id, version: S.version, dims: S.dims, bitmap: nv.drawBitmap, dirty: S.dirty, encode };
}

function restoreDraft(data) {
  nv.drawBitmap.set(data);
  nv.refreshDrawing(true);
  if (S.strokes.commit(nv.drawBitmap)) markDirty(true); // one stroke: Ctrl+Z takes it back
  message('Unsaved edits restored: Ctrl+S saves them as a new version', 'ok');
}

function describeDraft(d, shown) {
  const on = d.version === shown ? '' : ` (painted on version ${d.version}; version ${shown} is shown)`;
  const where = d.where === 'local' ? 'in this browser' : `on the server${d.author ? ` (by ${d.author})` : ''}`;
  return `Unsaved edits from ${fmtTime(d.saved_at)} were kept ${where}${on}.`;
}

/** Undo: an unsaved stroke, else the current version's parent; redo: an undone stroke, else a
 * newer version made from this one. Disabled when there is nothing to do, or a task runs. */
function updateUndoRedo() {
  const idle = Boolean(S.job) && !S.activeTask;
  const strokes = S.strokes ? S.strokes.count : 0;
  const undone = S.strokes ? S.strokes.undone.length : 0;
  const canUndo = idle && (S.dirty || S.version > 0);
  const canRedo = idle && (undone > 0 || (!S.dirty && S.versions.some((v) => v.parent === S.version && v.version !== S.version)));
  $('#btn-undo').disabled = !canUndo;
  $('#btn-redo').disabled = !canRedo;
  $('#btn-undo').title = S.dirty ? `Undo the last brush/eraser stroke (Ctrl+Z; ${strokes} unsaved)` : 'Undo: back to the previous version (Ctrl+Z)';
  $('#btn-redo').title = undone ? 'Redo the stroke undone (Ctrl+Y)' : 'Redo: forward to the newer version (Ctrl+Y)';
  document.body.dataset.strokes = String(strokes);
}

async function saveEdits() {
  if (!S.job || !nv.drawBitmap) return;
  const hdr = nv.back.hdr;
  const nii = writeLabelNifti(nv.drawBitmap, S.dims, hdr.affine, hdr.pixDims.slice(1, 4));
  setState('busy', 'saving');
  const resp = await api.request('PUT', api.jobUrl(S.job.job_id, '/mask'), {
    body: await gzip(nii), headers: { 'Content-Type': 'application/octet-stream' },
  });
  const out = await resp.json();
  S.version = out.version;
  S.saved = nv.drawBitmap.slice();
  S.strokes = new StrokeHistory(nv.drawBitmap);
  markDirty(false);
  drafts.forget();
  document.body.dataset.version = String(out.version);
  if (OBJ) OBJ.refreshMeasures().catch((e) => console.warn(e));
  message(`Edits saved as version ${out.version}`, 'ok');
  setState('idle');
  await refreshVersions();
}

// ------------------------------------------------------------------ prompts (box / points)
function canvasXY(e) {
  const c = $('#gl');
  const r = c.getBoundingClientRect();
  return [(e.clientX - r.left) * (c.width / r.width), (e.clientY - r.top) * (c.height / r.height)];
}

/** The slice point under a canvas position on any 2D tile ({axis, k, u, v}), or null. */
function promptPointAt(xy) {
  return planePointAt(nv, S.dims, currentVox(), xy);
}

/** Canvas position of plane point (u, v) in voxel units on the shown slice of `axis`. */
function voxToCanvas(u, v, axis = 2) {
  const r = planeToCanvas(nv, S.dims, axis, u, v);
  return r || null;
}

function drawOverlay() {
  if (view2d && view2d.active) { view2d.draw(); return; }
  const ov = $('#overlay');
  const gl = $('#gl');
  if (ov.width !== gl.width || ov.height !== gl.height) {
    ov.width = gl.width;
    ov.height = gl.height;
  }
  const ctx = ov.getContext('2d');
  ctx.clearRect(0, 0, ov.width, ov.height);
  if (!nv || !nv.back) return;
  const here = (o) => o && planeShown(nv, o.axis) && currentVox()[o.axis] === o.z;
  const dpr = gl.width / Math.max(1, gl.getBoundingClientRect().width);
  let box = null;
  let axis = 2;
  if (here(S.drag)) {
    const { a, b } = S.drag;
    box = [Math.min(a[0], b[0]), Math.min(a[1], b[1]), Math.max(a[0], b[0]), Math.max(a[1], b[1])];
    axis = S.drag.axis;
  } else if (here(S.prompts) && S.prompts.box) {
    box = S.prompts.box;
    axis = S.prompts.axis;
  }
  if (box) {
    const p0 = voxToCanvas(box[0], box[1], axis);
    const p1 = voxToCanvas(box[2] + 1, box[3] + 1, axis);
    if (p0 && p1) {
      ctx.lineWidth = 2 * dpr;
      ctx.strokeStyle = '#ffd400';
      ctx.setLineDash([6 * dpr, 4 * dpr]);
      ctx.strokeRect(Math.min(p0[0], p1[0]), Math.min(p0[1], p1[1]), Math.abs(p1[0] - p0[0]), Math.abs(p1[1] - p0[1]));
      ctx.setLineDash([]);
    }
  }
  if (here(S.prompts)) {
    for (const p of S.prompts.points) {
      const c = voxToCanvas(p.x + 0.5, p.y + 0.5, S.prompts.axis);
      if (!c) continue;
      const r = 7 * dpr;
      ctx.fillStyle = p.label ? '#2ecc71' : '#ff4d4d';
      ctx.strokeStyle = '#000';
      ctx.lineWidth = 1.5 * dpr;
      ctx.beginPath();
      ctx.arc(c[0], c[1], r, 0, 2 * Math.PI);
      ctx.fill();
      ctx.stroke();
      ctx.strokeStyle = '#fff';
      ctx.lineWidth = 2 * dpr;
      ctx.beginPath();
      ctx.moveTo(c[0] - r * 0.55, c[1]);
      ctx.lineTo(c[0] + r * 0.55, c[1]);
      if (p.label) {
        ctx.moveTo(c[0], c[1] - r * 0.55);
        ctx.lineTo(c[0], c[1] + r * 0.55);
      }
      ctx.stroke();
    }
  }
  if (TOOLS) TOOLS.drawCursor(ctx);
}

function updatePromptInfo() {
  const el = $('#prompt-info');
  const p = S.prompts;
  if (!p || (!p.box && !p.points.length)) {
    el.textContent = S.tool === 'box' ? 'Drag a box on a slice (any plane).'
      : S.tool === 'points' ? 'Click + points; Shift/right-click − points.' : 'No prompt yet.';
    return;
  }
  const parts = [];
  if (p.box) parts.push(`box [${p.box.join(', ')}]`);
  const pos = p.points.filter((q) => q.label).length;
  if (p.points.length) parts.push(`${pos} +, ${p.points.length - pos} − points`);
  const here = currentVox()[p.axis] === p.z ? '' : ' (scroll back there to see it)';
  const plane = p.axis === 2 ? '' : `${PLANE_NAME[p.axis]} `;
  el.textContent = `Prompt on ${plane}slice ${p.z}: ${parts.join(', ')}${here}`;
}

function clearPrompts() {
  S.prompts = null;
  S.drag = null;
  updatePromptInfo();
  if (nv) nv.drawScene();
}

/** The prompts on slice z of `axis` (a prompt on another slice or plane is dropped). */
function promptsAt(z, axis = 2) {
  if (!S.prompts || S.prompts.z !== z || S.prompts.axis !== axis) {
    S.prompts = { z, axis, box: null, points: [] };
  }
  return S.prompts;
}

function onOverlayDown(e) {
  if (!S.job || (TOOLS && TOOLS.owns(S.tool))) return;
  e.preventDefault();
  const v = promptPointAt(canvasXY(e));
  if (!v) {
    message('Prompts go on a slice: use a 2D view (1, 2, 3) or a 2D tile of the multiplanar view.', 'error');
    return;
  }
  if (S.tool === 'box' && e.button === 0) {
    S.drag = { z: v.k, axis: v.axis, a: [v.u, v.v], b: [v.u, v.v] };
    $('#overlay').setPointerCapture(e.pointerId);
    nv.drawScene();
  } else if (S.tool === 'points' && (e.button === 0 || e.button === 2)) {
    const label = e.button === 2 || e.shiftKey ? 0 : 1;
    promptsAt(v.k, v.axis).points.push({ x: v.u, y: v.v, label });
    updatePromptInfo();
    nv.drawScene();
  }
}

function onOverlayMove(e) {
  const xy = canvasXY(e);
  hoverReadout(xy);
  if (!S.drag) return;
  const v = promptPointAt(xy);
  if (v && v.axis === S.drag.axis) {
    S.drag.b = [v.u, v.v];
    nv.drawScene();
  }
}

function onOverlayUp() {
  if (!S.drag) return;
  const { z, axis, a, b } = S.drag;
  S.drag = null;
  const box = [Math.min(a[0], b[0]), Math.min(a[1], b[1]), Math.max(a[0], b[0]), Math.max(a[1], b[1])];
  if (box[2] - box[0] < 1 && box[3] - box[1] < 1) {
    nv.drawScene();
    return; // a click, not a box
  }
  promptsAt(z, axis).box = box;
  updatePromptInfo();
  nv.drawScene();
}

function hoverReadout(xy) {
  if (!nv || !nv.back) return;
  const ti = nv.tileIndex(xy[0], xy[1]);
  if (ti < 0 || nv.screenSlices[ti].axCorSag > 2) return;
  const f = nv.canvasPos2frac(xy);
  if (f[0] < 0) return;
  const v = Array.from(nv.frac2vox(f));
  const val = nv.back.getValue(v[0], v[1], v[2]);
  const c = S.crosshair ? `crosshair x ${S.crosshair.vox.join(' ')}` : '';
  $('#cursor').textContent = `${c}   ·   cursor x ${v[0]}  y ${v[1]}  z ${v[2]} = ${Number.isInteger(val) ? val : val.toFixed(1)}`;
}

// ------------------------------------------------------------------ tools
function setTool(tool) {
  S.tool = tool;
  $$('#tools button').forEach((b) => b.classList.toggle('active', b.dataset.tool === tool));
  const prompting = tool === 'box' || tool === 'points';
  $('#canvas-wrap').classList.toggle('prompting', prompting);
  if (TOOLS) TOOLS.onTool(tool);
  if (nv && nv.back) {
    if (tool === 'brush' || tool === 'eraser') {
      nv.opts.penSize = Number($('#pen-size').value) || 3;
      nv.setDrawingEnabled(true);
      nv.setPenValue(tool === 'brush' ? labelOf(S.currentObject) : 0, false);
    } else {
      nv.setDrawingEnabled(false);
    }
    if (prompting && S.view === 'render') setView('multi'); // prompts go on 2D tiles
  }
  updatePromptInfo();
}

function setPenSize(n) {
  const v = clamp(n, 1, 50);
  $('#pen-size').value = String(v);
  if (nv) nv.opts.penSize = v;
  message(`Brush size ${v}`);
}

// ------------------------------------------------------------------ lists: jobs, objects, versions, engines
async function refreshJobs() {
  let jobs;
  try {
    jobs = await api.getJSON(api.jobs);
  } catch (e) {
    $('#jobs').innerHTML = '';
    const li = document.createElement('li');
    li.className = 'muted';
    li.textContent = e.status === 401 ? `${e.message} — click “Key” (top right) to enter it.` : e.message;
    $('#jobs').appendChild(li);
    if (e.status === 401) message('This server needs an API key: click “Key” (top right).', 'error');
    return;
  }
  const ul = $('#jobs');
  ul.innerHTML = '';
  if (!jobs.length) {
    const li = document.createElement('li');
    li.className = 'muted small';
    li.textContent = 'No jobs yet.';
    ul.appendChild(li);
  }
  for (const j of jobs) {
    const li = document.createElement('li');
    li.dataset.jobId = j.job_id;
    li.classList.toggle('current', S.job && S.job.job_id === j.job_id);
    li.title = `${j.job_id}\n${j.source_format}, ${j.modality || '?'}, ${j.shape.join('×')}, spacing ${j.spacing.map((s) => s.toFixed(2)).join('×')} mm`;
    const box = document.createElement('div');
    box.className = 'grow';
    const name = document.createElement('div');
    name.className = 'ellipsis';
    name.textContent = j.filename || j.job_id.slice(0, 8);
    const meta = document.createElement('div');
    meta.className = 'small muted';
    meta.textContent = `${j.modality || j.source_format} ${j.shape.join('×')} · v${j.current_version} · ${fmtTime(j.created)}`;
    box.append(name, meta);
    li.append(box);
    if (FILES) FILES.decorateJob(li, j);
    li.addEventListener('click', () => switchJob(j.job_id).catch(fail));
    ul.appendChild(li);
  }
}

async function refreshObjects() {
  S.objects = await api.getJSON(api.jobUrl(S.job.job_id, '/objects'));
  renderObjects();
}

/** After any new version shown (a task, an edit, another tab, a MONAI Label client): objects
 * may have been added or renamed elsewhere; the list is rebuilt only when they differ (so a
 * name being typed in it is left alone otherwise). */
async function syncObjects() {
  if (!S.job) return;
  const jobId = S.job.job_id;
  const objects = await api.getJSON(api.jobUrl(jobId, '/objects'));
  if (!S.job || S.job.job_id !== jobId || JSON.stringify(objects) === JSON.stringify(S.objects)) return;
  S.objects = objects;
  renderObjects();
}

function renderObjects() {
  if (!S.objects.some((o) => o.object_id === S.currentObject) && S.objects.length) {
    S.currentObject = S.objects[0].object_id;
  }
  applyLut();
  const ul = $('#objects');
  ul.innerHTML = '';
  for (const o of S.objects) {
    const li = document.createElement('li');
    li.dataset.objectId = String(o.object_id);
    li.classList.toggle('current', o.object_id === S.currentObject);
    const colour = document.createElement('input');
    colour.type = 'color';
    colour.value = o.colour.slice(0, 7);
    colour.title = 'Colour';
    colour.addEventListener('change', () => patchObject(o.object_id, { colour: colour.value }).catch(fail));
    const name = document.createElement('input');
    name.type = 'text';
    name.value = o.name;
    name.title = 'Name (Enter to save)';
    name.addEventListener('change', () => patchObject(o.object_id, { name: name.value }).catch(fail));
    const badge = document.createElement('span');
    badge.className = 'badge';
    badge.textContent = `label ${o.label_value}`;
    li.append(colour, name, badge);
    li.addEventListener('click', (e) => {
      if (e.target === li || e.target === badge) selectObject(o.object_id);
    });
    name.addEventListener('focus', () => selectObject(o.object_id, false));
    ul.appendChild(li);
    if (OBJ) OBJ.decorate(li, o);
  }
}

function selectObject(id, rerender = true) {
  S.currentObject = id;
  $$('#objects li').forEach((li) => li.classList.toggle('current', Number(li.dataset.objectId) === id));
  if (S.tool === 'brush') nv.setPenValue(labelOf(id), false);
  if (rerender) message(`Object: ${(S.objects.find((o) => o.object_id === id) || {}).name || id}`);
}

async function patchObject(id, body) {
  await api.request('PATCH', api.jobUrl(S.job.job_id, `/objects/${id}`), { json: body });
  await refreshObjects();
}

async function addObject() {
  if (!S.job) return;
  const o = await api.postJSON(api.jobUrl(S.job.job_id, '/objects'), {});
  S.currentObject = o.object_id;
  await refreshObjects();
  selectObject(o.object_id);
}

async function refreshVersions() {
  if (!S.job) return;
  S.versions = await api.getJSON(api.jobUrl(S.job.job_id, '/versions'));
  const ul = $('#versions');
  ul.innerHTML = '';
  for (const v of [...S.versions].reverse()) {
    const li = document.createElement('li');
    li.classList.toggle('current', v.current);
    const t = document.createElement('span');
    t.className = 'grow';
    t.textContent = `v${v.version} · ${v.source}${v.engine ? ` · ${v.engine}` : ''} · ${v.author}`;
    t.title = `created ${v.created}${v.parent !== null ? `, from v${v.parent}` : ''}`;
    li.appendChild(t);
    if (v.reviewed) {
      const b = document.createElement('span');
      b.className = 'badge ok';
      b.textContent = `reviewed${v.reviewed_by ? ` by ${v.reviewed_by}` : ''}`;
      li.appendChild(b);
    }
    const time = document.createElement('span');
    time.className = 'muted';
    time.textContent = fmtTime(v.created);
    li.appendChild(time);
    ul.appendChild(li);
  }
  const cur = S.versions.find((v) => v.current);
  $('#btn-review').disabled = !cur;
  updateUndoRedo();
}

async function loadEngines() {
  const sel = $('#engine');
  try {
    const r = await api.getJSON('/api/v1/system/engines');
    S.engines = r.engines;
    S.defaultEngine = r.default;
    S.unavailable = r.unavailable || {};
  } catch (e) {
    S.engines = [];
    S.unavailable = {};
  }
  sel.innerHTML = '';
  const def = document.createElement('option');
  def.value = '';
  def.textContent = `server default (${S.defaultEngine || 'auto'})`;
  sel.appendChild(def);
  for (const name of S.engines) {
    const o = document.createElement('option');
    o.value = name;
    const why = S.unavailable[name];
    // engines that cannot run on this server are listed, greyed out, with the reason as a tooltip
    o.textContent = why ? `${name} (not installed here)` : name;
    o.disabled = Boolean(why);
    if (why) o.title = why;
    sel.appendChild(o);
  }
  const saved = localStorage.getItem('segloop.engine');
  if (saved && S.engines.includes(saved) && !S.unavailable[saved]) sel.value = saved;
}

// ------------------------------------------------------------------ open work
const JOB_BUTTONS = ['#btn-segment', '#btn-propagate', '#btn-refine',
  '#btn-review', '#btn-download', '#btn-download-seg', '#btn-add-object'];

/** Buttons that need an open job are disabled without one (DICOM-SEG: DICOM uploads only). */
function updateEnabled() {
  for (const sel of JOB_BUTTONS) $(sel).disabled = !S.job;
  const dicom = S.job && (S.job.source_format === 'dicom' || S.job.source_format === '2d-dicom');
  $('#btn-download-seg').disabled = !dicom;
  $('#btn-download-png').disabled = !S.job || !S.job.image2d;
  const desc = $('#seg-description'); // the SEG's SeriesDescription: only where a SEG can be made
  if (desc) desc.classList.toggle('hidden', !dicom);
  $('#btn-download-seg').title = S.job && !dicom
    ? `DICOM-SEG needs a DICOM upload (this one is ${S.job.source_format})` : 'DICOM-SEG (DICOM uploads only)';
}

async function openJob(jobId, known = null) {
  if (!nv) throw new Error('the viewer library (NiiVue) is not loaded');
  setState('busy', 'loading');
  message('Loading volume…');
  // the upload's answer is the job record already; the full volume downloads alongside the preview
  const job = known && known.job_id === jobId ? known : await api.getJSON(api.jobUrl(jobId));
  const full = fetchVolume(api, job);
  if (previewWanted(job) && await showPreview(nv, api, job)) message('Showing a preview; loading the full volume…');
  const buf = await full;
  markOnce('volume-downloaded');
  if (nv.drawBitmap) nv.closeDrawing();
  while (nv.volumes.length) nv.removeVolumeByIndex(0);
  await loadWindowed(nv, buf, 'canonical.nii', initialWindow(job));
  markOnce('first-image');
  S.job = job;
  S.dims = [nv.back.dims[1], nv.back.dims[2], nv.back.dims[3]];
  S.tasks = {};
  S.activeTask = null; // nothing of the previous job's task carries over
  S.prompts = null;
  S.versions = [];
  TASKS.showProgress(false);
  // a new job opens at its centre, unzoomed (NiiVue keeps the previous crosshair otherwise)
  nv.scene.crosshairPos = nv.vox2frac(S.dims.map((n) => Math.floor(n / 2)));
  nv.setPan2Dxyzmm([0, 0, 0, 1]);
  if (S.dims.join() !== job.shape.join()) {
    console.warn('volume shape differs from the job record', S.dims, job.shape);
  }
  if (job.image2d) { // a picture: shown in colour by the 2D mode, labels stay in the drawing bitmap
    const img = await api.request('GET', api.jobUrl(jobId, '/image'));
    await view2d.open(job, await img.blob());
  } else {
    view2d.close();
  }
  nv.createEmptyDrawing();
  markOnce('drawing-created');
  nv.setDrawOpacity(OBJ ? OBJ.opacity() : ($('#show-overlay').checked ? OVERLAY_OPACITY : 0));
  setNavAxis(S.navAxis);
  if (window.innerHeight < 900) $('#jobs-box').open = false; // the panel fits a laptop screen
  $('#empty-hint').classList.add('hidden');
  $('#job-title').textContent = `${job.filename || job.job_id} — ${job.modality || ''} ${job.shape.join('×')} · ${job.spacing.map((s) => s.toFixed(2)).join('×')} mm · ${job.orientation || ''}`;
  $('#job-title').classList.remove('muted');
  updateEnabled();
  history.replaceState(null, '', `#job=${job.job_id}`);
  offerPresets($('#wl-preset'), job.modality === 'CT');
  applyWindow(initialWindow(job)); // set at load already: no second upload of the volume
  TASKS.openEvents(job.job_id);
  if (OBJ) OBJ.reset();
  await refreshObjects();
  await loadVersion(job.current_version);
  markOnce('version-shown');
  await refreshVersions();
  await refreshJobs();
  setTool(S.tool);
  onLocation(null);
  setState('idle');
  message(`Opened ${job.filename || job.job_id}`, 'ok');
  await drafts.offer();
  document.body.dataset.job = job.job_id;
  markOnce('full-image');
}

/** Open another job, asking first when there are unsaved edits; false when the user stays. */
async function switchJob(jobId) {
  if (S.job && S.job.job_id === jobId) return true;
  if (!(await leaveJob('Open the other job?'))) {
    if (S.job) history.replaceState(null, '', `#job=${S.job.job_id}`);
    return false;
  }
  await openJob(jobId);
  return true;
}

/** Before unsaved edits would be lost: save, discard or stay (false). */
async function leaveJob(what) {
  if (!S.job || !S.dirty) return true;
  const choice = await askUnsaved($('#unsaved-dialog'), what);
  if (choice === 'stay') return false;
  if (choice === 'save') await saveEdits();
  else {
    showLabels(S.saved);
    markDirty(false);
    drafts.forget();
  }
  return true;
}

async function uploadAndOpen(file) {
  if (!(await leaveJob(`Open ${file.name}?`))) return;
  const bar = $('#upload-progress');
  bar.classList.remove('hidden');
  bar.firstElementChild.style.width = '0%';
  $('#upload-error').classList.add('hidden');
  setState('busy', 'uploading');
  message(`Uploading ${file.name}…`);
  try {
    const job = await api.uploadFile(file, (f) => { bar.firstElementChild.style.width = `${Math.round(f * 100)}%`; });
    markOnce('job-created');
    await openJob(job.job_id, job);
  } catch (e) {
    // the server's reason may already start with the file name: say it once
    const reason = e.message.startsWith(`${file.name}: `) ? e.message.slice(file.name.length + 2) : e.message;
    message(`${file.name} was rejected: ${reason}`, 'error');
    const el = $('#upload-error');
    el.textContent = `${file.name} was rejected: ${reason}`;
    el.classList.remove('hidden');
    setState('error', 'rejected');
  } finally {
    bar.classList.add('hidden');
  }
}

// ------------------------------------------------------------------ undo / redo / review / export
async function undoRedo(dir) {
  if (!S.job) return;
  if (S.strokes && (S.dirty || dir === 'redo')) { // one brush/eraser stroke at a time
    const ok = dir === 'undo' ? S.strokes.undo(nv.drawBitmap) : S.strokes.redo(nv.drawBitmap);
    if (ok) {
      nv.refreshDrawing(true);
      markDirty(S.strokes.count > 0);
      drafts.keep();
      message(`${dir === 'undo' ? 'Undid' : 'Redid'} a stroke (${S.strokes.count} unsaved)`);
      return;
    }
  }
  if (dir === 'undo' && S.dirty) {
    showLabels(S.saved);
    markDirty(false);
    drafts.forget();
    message('Unsaved edits discarded');
    return;
  }
  if ($(`#btn-${dir}`).disabled) {
    message(S.activeTask ? 'Wait for the running task (or cancel it) first.'
      : dir === 'undo' ? 'Nothing to undo: this is the first version.' : 'Nothing to redo.');
    return;
  }
  const r = await api.postJSON(api.jobUrl(S.job.job_id, `/${dir}`));
  await loadVersion(r.current_version);
  await refreshVersions();
  setState('idle');
  message(`${dir === 'undo' ? 'Undo' : 'Redo'}: showing version ${r.current_version}`, 'ok');
}

async function review() {
  if (!S.job) return;
  if (S.dirty) await saveEdits();
  const r = await api.postJSON(api.jobUrl(S.job.job_id, '/review'), {});
  message(`Version ${r.version} marked reviewed`, 'ok');
  await refreshVersions();
}

async function exportMask(format) {
  if (!S.job) return;
  if (S.dirty) await saveEdits();
  const ext = { 'dicom-seg': 'dcm', png: 'png' }[format] || 'nii.gz';
  const style = format === 'png' ? '&style=labels' // a 2D mask file: label values
    : (format === 'dicom-seg' && OBJ ? OBJ.segQuery() : '');
  const name = await api.download(api.jobUrl(S.job.job_id, `/result?format=${format}${style}`), `${S.job.job_id}_mask.${ext}`);
  message(`Downloaded ${name}`, 'ok');
}

// ------------------------------------------------------------------ keyboard
const SHORTCUTS = [
  ['↑ / ↓, PgUp / PgDn, wheel', 'next / previous slice of the view shown (in Multi: of the tile last under the mouse); Shift: 5 slices'],
  ['Home / End', 'first / last slice'],
  ['1 2 3 4 5', 'axial, coronal, sagittal, 3D, multiplanar + 3D'],
  ['M', 'cycle the multiplanar layout'],
  ['W', 'cycle the window/level presets that fit the volume (CT presets on CT only); right- or Ctrl-drag: free window/level, double-click: reset'],
  ['+ / − / 0, Ctrl+wheel', 'zoom in / out / reset (middle- or Shift-drag pans)'],
  ['N', 'navigate tool (crosshair)'],
  ['B', 'box tool: drag a box on a slice of any plane (axial, coronal or sagittal tile)'],
  ['P', 'points tool: click +, Shift/right-click −, on any plane'],
  ['C', 'clear the prompt'],
  ['S', 'segment slice (2D mask from the prompt, on the prompt\'s plane)'],
  ['G', 'propagate through the volume, along the axis the object was drawn on'],
  ['R', 'refine from the prompt on this slice'],
  ['Esc', 'cancel the running task, else clear the prompt'],
  ['D / E', 'brush / eraser;  [ ]  brush size'],
  ['Ctrl+S', 'save brush edits as a new version'],
  ['Ctrl+Z / Ctrl+Y', 'undo / redo one brush/eraser stroke while edits are unsaved, else across mask versions (Ctrl+Shift+Z redoes too)'],
  ['A / Q', 'add an object / next object'],
  ['O', 'show / hide the overlay'],
  ['L', 'radiological / neurological convention'],
  ['Shift+D', 'download the mask (NIfTI, uploaded grid)'],
  ['? or H', 'this help'],
];

function buildHelp() {
  const t = $('#help-table');
  for (const [k, what] of [...SHORTCUTS, ...TOOL_SHORTCUTS, ...OBJECT_SHORTCUTS]) {
    const tr = document.createElement('tr');
    const a = document.createElement('td');
    a.innerHTML = k.split(', ').map((x) => `<kbd>${x}</kbd>`).join(' ');
    const b = document.createElement('td');
    b.textContent = what;
    tr.append(a, b);
    t.appendChild(tr);
  }
}

function onKey(e) {
  const tag = (e.target && e.target.tagName) || '';
  const typing = (tag === 'INPUT' && e.target.type !== 'range' && e.target.type !== 'checkbox') || tag === 'TEXTAREA' || tag === 'SELECT';
  if (typing && e.key !== 'Escape') return;
  if ($('#help').open || $('#key-dialog').open) return;
  if ((TOOLS && TOOLS.onKey(e)) || (OBJ && OBJ.onKey(e))) {
    e.preventDefault();
    e.stopPropagation();
    return;
  }
  const k = e.key;
  const ctrl = e.ctrlKey || e.metaKey;
  const run = (p) => Promise.resolve(p).catch(fail);
  let handled = true;
  const step = e.shiftKey ? 5 : 1;
  if (ctrl && (k === 's' || k === 'S')) { // like the Save button: only unsaved strokes make a version
    if (S.dirty) run(saveEdits());
    else message('Nothing to save: every task and edit is stored as a version already');
  } else if (ctrl && (k === 'z' || k === 'Z')) run(undoRedo(e.shiftKey ? 'redo' : 'undo'));
  else if (ctrl && (k === 'y' || k === 'Y')) run(undoRedo('redo'));
  else if (ctrl) handled = false;
  else if (k === 'ArrowUp' || k === 'PageUp' || k === 'ArrowRight') stepSlice(step);
  else if (k === 'ArrowDown' || k === 'PageDown' || k === 'ArrowLeft') stepSlice(-step);
  else if (k === 'Home') setSlice(0);
  else if (k === 'End') setSlice(S.dims[S.navAxis] - 1);
  else if (k === '1') setView('axial');
  else if (k === '2') setView('coronal');
  else if (k === '3') setView('sagittal');
  else if (k === '4') setView('render');
  else if (k === '5') setView('multi');
  else if (k === 'm' || k === 'M') {
    const sel = $('#layout-select');
    sel.selectedIndex = (sel.selectedIndex + 1) % sel.options.length;
    sel.dispatchEvent(new Event('change'));
  } else if (k === 'w' || k === 'W') {
    const sel = $('#wl-preset');
    const all = cyclePresets(sel);
    applyWindow(all[(all.indexOf(sel.value) + 1) % all.length]);
    message(`Window: ${sel.options[sel.selectedIndex].text}`);
  } else if (k === '+' || k === '=') zoomBy(1.2);
  else if (k === '-' || k === '_') zoomBy(1 / 1.2);
  else if (k === '0') resetZoom();
  else if (k === 'n' || k === 'N') setTool('navigate');
  else if (k === 'b' || k === 'B') setTool('box');
  else if (k === 'p' || k === 'P') setTool('points');
  else if (k === 'd' && !e.shiftKey) setTool('brush');
  else if (k === 'D' && e.shiftKey) run(exportMask('nii.gz'));
  else if (k === 'e' || k === 'E') setTool('eraser');
  else if (k === 'c' || k === 'C') clearPrompts();
  else if (k === 's' || k === 'S') run(TASKS.submit(TASK_KIND.INITIAL_MASK));
  else if (k === 'g' || k === 'G') run(TASKS.submit(TASK_KIND.PROPAGATE));
  else if (k === 'r' || k === 'R') run(TASKS.submit(TASK_KIND.REFINE));
  else if (k === 'Escape') {
    if (S.activeTask) run(TASKS.cancelTask());
    else clearPrompts();
  } else if (k === '[') setPenSize(Number($('#pen-size').value) - 1);
  else if (k === ']') setPenSize(Number($('#pen-size').value) + 1);
  else if (k === 'a' || k === 'A') run(addObject());
  else if (k === 'q' || k === 'Q') {
    if (S.objects.length) {
      const i = S.objects.findIndex((o) => o.object_id === S.currentObject);
      selectObject(S.objects[(i + 1) % S.objects.length].object_id);
    }
  } else if (k === 'o' || k === 'O') {
    const cb = $('#show-overlay');
    cb.checked = !cb.checked;
    cb.dispatchEvent(new Event('change'));
  } else if (k === 'l' || k === 'L') {
    const cb = $('#radiological');
    cb.checked = !cb.checked;
    cb.dispatchEvent(new Event('change'));
  } else if (k === '?' || k === 'h' || k === 'H') $('#help').showModal();
  else handled = false;
  if (handled) {
    e.preventDefault();
    e.stopPropagation();
  } else if (e.target === $('#gl')) {
    e.stopPropagation(); // NiiVue's own canvas keys (drag modes, 3D turns, version alert) stay off
  }
}

// ------------------------------------------------------------------ wiring
function bindUi() {
  buildHelp();
  const run = (f) => () => Promise.resolve().then(f).catch(fail);
  $('#btn-help').addEventListener('click', () => $('#help').showModal());
  $('#btn-key').addEventListener('click', () => {
    $('#key-input').value = api.apiKey();
    $('#key-dialog').showModal();
  });
  $('#key-dialog').addEventListener('close', () => {
    if ($('#key-dialog').returnValue === 'save') {
      api.setApiKey($('#key-input').value.trim());
      refreshJobs();
      loadEngines();
    }
  });
  guardUnload(() => S.dirty);
  window.addEventListener('hashchange', () => {
    const m = /job=([0-9a-f-]{36})/.exec(location.hash);
    if (m && nv) switchJob(m[1]).catch(fail);
  });
  $('#file-input').addEventListener('change', (e) => {
    const f = e.target.files && e.target.files[0];
    if (f) uploadAndOpen(f);
    e.target.value = '';
  });
  let depth = 0;
  document.addEventListener('dragenter', (e) => { e.preventDefault(); depth++; document.body.classList.add('dragging'); });
  document.addEventListener('dragleave', () => { depth = Math.max(0, depth - 1); if (!depth) document.body.classList.remove('dragging'); });
  document.addEventListener('dragover', (e) => e.preventDefault());
  document.addEventListener('drop', (e) => {
    e.preventDefault();
    depth = 0;
    document.body.classList.remove('dragging');
    const f = e.dataTransfer && e.dataTransfer.files && e.dataTransfer.files[0];
    if (f) uploadAndOpen(f);
  });
  $('#btn-refresh-jobs').addEventListener('click', (e) => { e.preventDefault(); refreshJobs(); });
  $$('#tools button').forEach((b) => b.addEventListener('click', () => setTool(b.dataset.tool)));
  $('#pen-size').addEventListener('change', () => setPenSize(Number($('#pen-size').value)));
  $('#btn-segment').addEventListener('click', run(() => TASKS.submit(TASK_KIND.INITIAL_MASK)));
  $('#btn-propagate').addEventListener('click', run(() => TASKS.submit(TASK_KIND.PROPAGATE)));
  $('#btn-refine').addEventListener('click', run(() => TASKS.submit(TASK_KIND.REFINE)));
  $('#btn-cancel').addEventListener('click', run(() => TASKS.cancelTask()));
  $('#btn-save').addEventListener('click', run(saveEdits));
  drafts = new DraftKeeper({ bar: $('#draft-bar'), current: draftState, onRestore: restoreDraft, describe: describeDraft });
  $('#btn-undo').addEventListener('click', run(() => undoRedo('undo')));
  $('#btn-redo').addEventListener('click', run(() => undoRedo('redo')));
  $('#btn-review').addEventListener('click', run(review));
  $('#btn-download').addEventListener('click', run(() => exportMask('nii.gz')));
  $('#btn-download-seg').addEventListener('click', run(() => exportMask('dicom-seg')));
  $('#btn-download-png').addEventListener('click', run(() => exportMask('png')));
  $('#btn-add-object').addEventListener('click', run(addObject));
  $$('#views button').forEach((b) => b.addEventListener('click', () => setView(b.dataset.view)));
  $('#layout-select').addEventListener('change', () => nv && nv.setMultiplanarLayout(Number($('#layout-select').value)));
  $('#wl-preset').addEventListener('change', () => applyWindow($('#wl-preset').value));
  $('#show-overlay').addEventListener('change', () => nv && nv.setDrawOpacity(OBJ ? OBJ.opacity() : ($('#show-overlay').checked ? OVERLAY_OPACITY : 0)));
  $('#radiological').addEventListener('change', () => nv && nv.setRadiologicalConvention($('#radiological').checked));
  $('#btn-zoom-reset').addEventListener('click', resetZoom);
  $('#engine').addEventListener('change', () => localStorage.setItem('segloop.engine', $('#engine').value));
  $('#slice').addEventListener('input', () => setSlice(Number($('#slice').value)));
  const ov = $('#overlay');
  ov.addEventListener('pointerdown', onOverlayDown);
  ov.addEventListener('pointermove', onOverlayMove);
  ov.addEventListener('pointerup', onOverlayUp);
  ov.addEventListener('pointercancel', onOverlayUp);
  ov.addEventListener('contextmenu', (e) => e.preventDefault());
  // one wheel for every tool (the prompt layer and NiiVue's canvas): slices of the tile under it
  ov.addEventListener('wheel', onWheel, { passive: false });
  $('#gl').addEventListener('wheel', onWheel, { capture: true, passive: false });
  $('#gl').addEventListener('pointermove', (e) => {
    const xy = canvasXY(e);
    hoverReadout(xy);
    if (S.view === 'multi') { // keys and the slider follow the 2D tile last under the mouse
      const axis = tileAxisAt(nv, xy);
      if (axis >= 0 && axis !== S.navAxis) setNavAxis(axis);
    }
    // window/level is live while right- (or Ctrl-) dragging: NiiVue updates it on its mousemove
    if (e.buttons & 2 || (e.buttons & 1 && e.ctrlKey)) setTimeout(updateWlReadout, 0);
  });
  $('#gl').addEventListener('pointerup', () => setTimeout(updateWlReadout, 0));
  $('#gl').addEventListener('dblclick', () => setTimeout(updateWlReadout, 0)); // NiiVue resets the window
  document.addEventListener('keydown', onKey, true);
  // NiiVue's key-up hotkeys on its canvas (C, P, V) would change the view behind the page's back
  document.addEventListener('keyup', (e) => { if (e.target === $('#gl')) e.stopPropagation(); }, true);
}

/** For tests and scripting: client (CSS pixel) position of plane point (u, v) on the shown
 * slice of `axis` (default axial: voxel x, y; coronal: x, z; sagittal: y, z). */
function voxelToClient(x, y, axis = 2) {
  const c = voxToCanvas(x + 0.5, y + 0.5, axis);
  if (!c) return null;
  const gl = $('#gl');
  const r = gl.getBoundingClientRect();
  return [r.left + c[0] * (r.width / gl.width), r.top + c[1] * (r.height / gl.height)];
}

/** Close the open job (after it was deleted): an empty viewer. */
function closeJob() {
  if (S.es) S.es.close();
  S.es = null;
  if (nv) {
    if (nv.drawBitmap) nv.closeDrawing();
    while (nv.volumes.length) nv.removeVolumeByIndex(0);
    nv.drawScene();
  }
  S.job = null;
  S.version = 0;
  S.objects = [];
  markDirty(false);
  $('#objects').innerHTML = '';
  $('#versions').innerHTML = '';
  $('#empty-hint').classList.remove('hidden');
  $('#job-title').textContent = 'no volume open';
  $('#job-title').classList.add('muted');
  history.replaceState(null, '', location.pathname);
  delete document.body.dataset.job;
  updateEnabled();
}

/** What tools.js, objects.js and workfiles.js may use of this page. */
function hookContext() {
  return {
    S, api, nv: () => nv, message, fail, setState, currentVox, labelOf, canvasXY, loadVersion,
    refreshVersions, refreshObjects, refreshJobs, saveEdits, markDirty, clearPrompts, applyLut,
    closeJob, setTool: (t) => setTool(t), redraw: () => drawOverlay(),
    isLocked: (id) => (OBJ ? OBJ.isLocked(id) : false),
    edit: (body, done) => TOOLS.edit(body, done),
    userText, paintSlice, updateUndoRedo, syncObjects, tools: () => TOOLS,
  };
}

async function boot() {
  const hc = hookContext();
  TOOLS = createTools(hc);
  TASKS = createTasks(hc);
  OBJ = createObjects(hc);
  FILES = createWorkfiles(hc);
  TOOLS.build();
  OBJ.build();
  FILES.build();
  bindUi();
  view2d = new Image2DView({
    state: S, nv: () => nv, markDirty, labelOf, promptsAt,
    promptsChanged: updatePromptInfo,
    overlayOpacity: () => ($('#show-overlay').checked ? OVERLAY_OPACITY : 0),
  });
  updateEnabled();
  setTool('navigate');
  setView('axial');
  let cfg = { niivue: false };
  try {
    cfg = await (await fetch('/web/config.json')).json();
  } catch (e) { /* older server */ }
  if (!cfg.niivue) {
    banner('The viewer library NiiVue is not installed on this server: run <code>npm ci</code> in the segloop '
      + 'checkout (it installs <code>@niivue/niivue</code> into <code>node_modules/</code>), then restart '
      + '<code>segloop serve</code>.');
    setState('error', 'no viewer');
  } else {
    try {
      await initNiivue(cfg.niivue_url);
    } catch (e) {
      banner(`The viewer could not start: ${e.message}. It needs a browser with WebGL2.`);
      setState('error', 'no WebGL2');
    }
  }
  await loadEngines();
  await refreshJobs();
  window.segloop = { state: S, nv, openJob, submit: (kind) => TASKS.submit(kind), voxelToClient, setSlice, currentVox, setView, setTool, switchJob, view2d, tools: TOOLS, objects: OBJ };
  const m = /job=([0-9a-f-]{36})/.exec(location.hash);
  if (m && nv) await openJob(m[1]).catch(fail);
  document.body.dataset.ready = '1';
}

boot().catch(fail);
