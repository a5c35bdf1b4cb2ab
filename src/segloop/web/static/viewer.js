// segloop web viewer: NiiVue (WebGL2) + the segloop jobs API.
//
// Coordinates: the viewer displays the API's closest-canonical RAS volume (GET .../volume), so a
// NiiVue voxel index (x, y, z) is the API's voxel index: x = array axis 0, y = axis 1, z = axial
// slice. The mask overlay is NiiVue's drawing bitmap in that same order (x fastest), filled
// from GET .../result?format=nii.gz&grid=canonical and saved back with PUT .../mask. Prompts
// go on any 2D tile (planes.js): a box or points on a coronal or sagittal slice are sent with
// the plane's `axis`, and the engine propagates along that axis.
//
// This module is the page's entry: it makes the parts (tools.js, tasks.js, objects.js,
// workfiles.js, the 2D image mode), binds the buttons and boots. The rest lives in state.js
// (state and messages), view.js (NiiVue and navigation), mask.js (the overlay and unsaved edits),
// prompts.js (box/points and the tool), lists.js (jobs, objects, versions, engines), open.js
// (opening work, undo, export) and keys.js (shortcuts).

import * as api from './api.js';
import { DraftKeeper } from './drafts.js';
import { guardUnload } from './guard.js';
import { Image2DView } from './image2d.js';
import { createObjects } from './objects.js';
import { tileAxisAt } from './slices.js';
import { TASK_KIND, createTasks } from './tasks.js';
import { createTools } from './tools.js';
import { createWorkfiles } from './workfiles.js';
import { buildHelp, onKey } from './keys.js';
import { addObject, loadEngines, refreshJobs, refreshObjects, refreshVersions, syncObjects } from './lists.js';
import { applyLut, describeDraft, draftState, loadVersion, markDirty, paintSlice, restoreDraft, saveEdits, updateUndoRedo } from './mask.js';
import { closeJob, exportMask, openJob, review, switchJob, undoRedo, updateEnabled, uploadAndOpen } from './open.js';
import { canvasXY, clearPrompts, drawOverlay, hoverReadout, onOverlayDown, onOverlayMove, onOverlayUp, promptsAt, setPenSize, setTool, updatePromptInfo, voxToCanvas } from './prompts.js';
import { OVERLAY_OPACITY, S, banner, fail, labelOf, message, setState, userText } from './state.js';
import { applyWindow, currentVox, initNiivue, nv, onWheel, resetZoom, setNavAxis, setSlice, setView, updateWlReadout } from './view.js';

const $ = (sel) => document.querySelector(sel);
const $$ = (sel) => Array.from(document.querySelectorAll(sel));

export let view2d = null; // the 2D image mode (image2d.js): active while a 2D image job is open
export let TOOLS = null; // tools.js: stop a leak, clean up, painting constraints, sphere brush
export let OBJ = null; // objects.js: hide/lock/delete, opacity/outline, measurements
export let FILES = null; // workfiles.js: open a mask, delete a job
export let TASKS = null; // tasks.js: the event stream, submit and cancel, the progress bar
export let drafts = null; // DraftKeeper, made in bindUi

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
