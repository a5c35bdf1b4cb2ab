// segloop viewer: the mask overlay and unsaved edits (split out of viewer.js, issue 15).
//
// The mask is NiiVue's drawing bitmap: its colours (one per object), a version loaded into it,
// propagated slices painted as they arrive, and the unsaved brush/eraser strokes: their draft
// (drafts.js), undo/redo buttons and saving them as a new version. A save names the version the
// drawing was painted on (S.version, whose labels are S.saved); when another one became current
// meanwhile the server answers 409 and the page rebases its changed voxels onto it (docs/web.md).

import * as api from './api.js';
import { decodeRle, gzip, readLabelNifti, writeLabelNifti } from './nifti.js';
import { sliceIndices } from './planes.js';
import { StrokeHistory } from './strokes.js';
import { refreshVersions, syncObjects } from './lists.js';
import { S, fmtTime, hexToRgb, labelOf, message, setState } from './state.js';
import { nv } from './view.js';
import { OBJ, drafts } from './viewer.js';

const $ = (sel) => document.querySelector(sel);

// ------------------------------------------------------------------ mask overlay (drawing bitmap)
export function applyLut() {
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

export function showLabels(data) {
  if (!nv.drawBitmap || nv.drawBitmap.length !== data.length) nv.createEmptyDrawing();
  nv.drawBitmap.set(data);
  nv.refreshDrawing(true);
  S.strokes = new StrokeHistory(nv.drawBitmap);
}

/** A version's label map on the canonical grid and its number (`n` null: the current one). */
async function fetchVersion(n) {
  const nvox = S.dims[0] * S.dims[1] * S.dims[2];
  if (n === 0) return { data: new Uint8Array(nvox), version: 0 };
  const q = n === null ? '' : `&version=${n}`;
  const resp = await api.request('GET', api.jobUrl(S.job.job_id, `/result?format=nii.gz&grid=canonical${q}`));
  const version = Number(resp.headers.get('X-Mask-Version') || n || 0);
  const nii = await readLabelNifti(await resp.arrayBuffer());
  if (nii.data.length !== nvox) {
    throw new Error(`mask grid ${nii.dims.join('x')} does not match the volume ${S.dims.join('x')}`);
  }
  return { data: nii.data, version };
}

export async function loadVersion(n) {
  const { data } = await fetchVersion(n || 0);
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
export function paintSlice(z, rle, objectId, axis = 2) {
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

export function markDirty(d) {
  S.dirty = d;
  $('#btn-save').disabled = !d;
  $('#btn-save').textContent = d ? 'Save edits *' : 'Save edits';
  updateUndoRedo();
  if (OBJ) OBJ.onDirty(d); // the measurements follow unsaved strokes
}

// ------------------------------------------------------------------ drafts (unsaved strokes autosaved on the server)

/** What drafts.js needs of the open work. */
export function draftState() {
  if (!S.job || !nv || !nv.drawBitmap) return null;
  const hdr = nv.back.hdr;
  const encode = () => writeLabelNifti(nv.drawBitmap, S.dims, hdr.affine, hdr.pixDims.slice(1, 4));
  return { jobId: S.job.job_id, version: S.version, dims: S.dims, bitmap: nv.drawBitmap, dirty: S.dirty, encode };
}

export function restoreDraft(data) {
  nv.drawBitmap.set(data);
  nv.refreshDrawing(true);
  if (S.strokes.commit(nv.drawBitmap)) markDirty(true); // one stroke: Ctrl+Z takes it back
  message('Unsaved edits restored: Ctrl+S saves them as a new version', 'ok');
}

export function describeDraft(d, shown) {
  const on = d.version === shown ? '' : ` (painted on version ${d.version}; version ${shown} is shown)`;
  const where = d.where === 'local' ? 'in this browser' : `on the server${d.author ? ` (by ${d.author})` : ''}`;
  return `Unsaved edits from ${fmtTime(d.saved_at)} were kept ${where}${on}.`;
}

/** Undo: an unsaved stroke, else the current version's parent; redo: an undone stroke, else a
 * newer version made from this one. Disabled when there is nothing to do, or a task runs. */
export function updateUndoRedo() {
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

/** PUT the drawing as a new version made on `base`; its number. A 409 (another version became
 * current meanwhile) is thrown with its status, for saveEdits to rebase. */
async function putDrawing(base) {
  const hdr = nv.back.hdr;
  const nii = writeLabelNifti(nv.drawBitmap, S.dims, hdr.affine, hdr.pixDims.slice(1, 4));
  const resp = await api.request('PUT', api.jobUrl(S.job.job_id, `/mask?base_version=${base}`), {
    body: await gzip(nii), headers: { 'Content-Type': 'application/octet-stream' },
  });
  return (await resp.json()).version;
}

/** Move the unsaved edits onto the current version (made meanwhile by someone else, a tab,
 * an API edit or a task): the voxels this page changed since its base (drawing vs S.saved)
 * are laid over the current version; where both changed a voxel, this page's edit wins.
 * Returns the new base's number and how many voxels both had changed. */
async function rebase() {
  const cur = await fetchVersion(null);
  const bm = nv.drawBitmap;
  const base = S.saved;
  const theirs = cur.data;
  let both = 0;
  for (let i = 0; i < bm.length; i++) {
    if (bm[i] === base[i]) bm[i] = theirs[i];
    else if (theirs[i] !== base[i] && theirs[i] !== bm[i]) both += 1;
  }
  nv.refreshDrawing(true);
  S.version = cur.version;
  S.saved = theirs.slice();
  S.strokes = new StrokeHistory(bm); // the merged drawing is what Ctrl+Z starts from
  await syncObjects().catch((e) => console.warn(e)); // objects the other version added
  return { version: cur.version, both };
}

export async function saveEdits() {
  if (!S.job || !nv.drawBitmap) return;
  setState('busy', 'saving');
  let merged = null;
  let version;
  for (let tries = 1; ; tries++) {
    try {
      version = await putDrawing(S.version);
      break;
    } catch (e) {
      if (e.status !== 409 || tries >= 3) throw e;
      merged = await rebase();
    }
  }
  S.version = version;
  S.saved = nv.drawBitmap.slice();
  S.strokes = new StrokeHistory(nv.drawBitmap);
  markDirty(false);
  drafts.forget();
  document.body.dataset.version = String(version);
  if (OBJ) OBJ.refreshMeasures().catch((e) => console.warn(e));
  if (merged) {
    const both = merged.both ? ` (${merged.both} voxels changed by both: yours kept)` : '';
    message(`Edits saved as version ${version}: merged your edits onto version ${merged.version} made meanwhile${both}`, 'ok');
  } else {
    message(`Edits saved as version ${version}`, 'ok');
  }
  setState('idle');
  await refreshVersions();
}
