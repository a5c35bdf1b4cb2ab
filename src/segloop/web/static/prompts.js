// segloop viewer: prompts and the tool in hand (split out of viewer.js, issue 15).
//
// The box and points drawn on a 2D tile (any plane: planes.js) on the prompt layer over
// NiiVue's canvas, its pointer events and the readout under the pointer; which tool is active
// and the brush size.

import { PLANE_NAME, planePointAt, planeShown, planeToCanvas } from './planes.js';
import { S, clamp, labelOf, message } from './state.js';
import { currentVox, nv, setView } from './view.js';
import { TOOLS, view2d } from './viewer.js';

const $ = (sel) => document.querySelector(sel);
const $$ = (sel) => Array.from(document.querySelectorAll(sel));

// ------------------------------------------------------------------ prompts (box / points)
export function canvasXY(e) {
  const c = $('#gl');
  const r = c.getBoundingClientRect();
  return [(e.clientX - r.left) * (c.width / r.width), (e.clientY - r.top) * (c.height / r.height)];
}

/** The slice point under a canvas position on any 2D tile ({axis, k, u, v}), or null. */
function promptPointAt(xy) {
  return planePointAt(nv, S.dims, currentVox(), xy);
}

/** Canvas position of plane point (u, v) in voxel units on the shown slice of `axis`. */
export function voxToCanvas(u, v, axis = 2) {
  const r = planeToCanvas(nv, S.dims, axis, u, v);
  return r || null;
}

export function drawOverlay() {
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

export function updatePromptInfo() {
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

export function clearPrompts() {
  S.prompts = null;
  S.drag = null;
  updatePromptInfo();
  if (nv) nv.drawScene();
}

/** The prompts on slice z of `axis` (a prompt on another slice or plane is dropped). */
export function promptsAt(z, axis = 2) {
  if (!S.prompts || S.prompts.z !== z || S.prompts.axis !== axis) {
    S.prompts = { z, axis, box: null, points: [] };
  }
  return S.prompts;
}

export function onOverlayDown(e) {
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

export function onOverlayMove(e) {
  const xy = canvasXY(e);
  hoverReadout(xy);
  if (!S.drag) return;
  const v = promptPointAt(xy);
  if (v && v.axis === S.drag.axis) {
    S.drag.b = [v.u, v.v];
    nv.drawScene();
  }
}

export function onOverlayUp() {
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

export function hoverReadout(xy) {
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
export function setTool(tool) {
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

export function setPenSize(n) {
  const v = clamp(n, 1, 50);
  $('#pen-size').value = String(v);
  if (nv) nv.opts.penSize = v;
  message(`Brush size ${v}`);
}
