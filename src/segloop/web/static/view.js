// segloop viewer: the NiiVue instance and moving around in it (split out of viewer.js, issue 15).
//
// Makes the Niivue instance (nvlean.js takes off what the page never uses), and owns what
// changes the view, never the data: the slice and the axis keys step along, the wheel, the
// crosshair readout, window/level, the view (axial ... render) and zoom.

import { leanNiivue, strokeRuns } from './nvlean.js';
import { AXIS_NAME, VIEW_AXIS, moveTo, tileAxisAt, wheelStep } from './slices.js';
import { CUSTOM, matchingPreset, windowOf } from './wl.js';
import { markDirty } from './mask.js';
import { canvasXY, drawOverlay, updatePromptInfo } from './prompts.js';
import { OVERLAY_OPACITY, S, VIEWS, clamp } from './state.js';
import { OBJ, TOOLS, drafts, view2d } from './viewer.js';

const $ = (sel) => document.querySelector(sel);
const $$ = (sel) => Array.from(document.querySelectorAll(sel));

let NV = null; // the NiiVue module
export let nv = null; // the Niivue instance

// ------------------------------------------------------------------ NiiVue setup
export async function initNiivue(url) {
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

export function currentVox() {
  if (!nv || !nv.back) return [0, 0, 0];
  return Array.from(nv.frac2vox(nv.scene.crosshairPos));
}

/** Move to slice `i` along `axis` (default: the axis keys and the slider step along). */
export function setSlice(i, axis = S.navAxis) {
  if (!nv || !nv.back) return;
  const d = moveTo(currentVox(), S.dims, axis, i);
  if (d[axis]) nv.moveCrosshairInVox(d[0], d[1], d[2]);
}

/** Step `n` slices along `axis`. */
export function stepSlice(n, axis = S.navAxis) {
  setSlice(currentVox()[axis] + n, axis);
}

/** The axis keys and the slider step along; the slider follows it. */
export function setNavAxis(axis) {
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
export function onWheel(e) {
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

export function onLocation(data) {
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
export function updateWlReadout() {
  if (!nv || !nv.back) return;
  const lo = nv.back.cal_min;
  const hi = nv.back.cal_max;
  $('#wl-readout').textContent = `W ${Math.round(hi - lo)} L ${Math.round((hi + lo) / 2)}`;
  $('#wl-preset').value = matchingPreset($('#wl-preset'), nv.back);
}

export function applyWindow(value) {
  if (!nv || !nv.back || value === CUSTOM) return;
  const [lo, hi] = windowOf(value, nv.back);
  if (lo !== nv.back.cal_min || hi !== nv.back.cal_max) {
    [nv.back.cal_min, nv.back.cal_max] = [lo, hi];
    nv.updateGLVolume();
  }
  updateWlReadout();
}

export function setView(view) {
  S.view = view;
  $$('#views button').forEach((b) => b.classList.toggle('active', b.dataset.view === view));
  if (nv) nv.setSliceType(VIEWS[view]);
  setNavAxis(VIEW_AXIS[view] ?? 2);
}

/** Zoom and pan back to the whole image (the 2D mode's picture, or NiiVue's 2D views). */
export function resetZoom() {
  if (view2d && view2d.active) view2d.resetView();
  else if (nv) nv.setPan2Dxyzmm([0, 0, 0, 1]);
}

export function zoomBy(f) {
  if (view2d && view2d.active) { view2d.zoomBy(f); return; }
  if (!nv) return;
  const p = nv.scene.pan2Dxyzmm;
  nv.setPan2Dxyzmm([p[0], p[1], p[2], clamp(p[3] * f, 0.25, 25)]);
}
