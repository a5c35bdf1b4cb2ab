// segloop viewer: opening and closing work (split out of viewer.js, issue 15).
//
// Upload a file, open a job (preview first, then the full volume: preview.js), switch jobs
// asking about unsaved edits, close a deleted job; undo/redo of versions, review and export.

import * as api from './api.js';
import { askUnsaved } from './guard.js';
import { fetchVolume, initialWindow, loadWindowed, markOnce, previewWanted, showPreview } from './preview.js';
import { offerPresets } from './wl.js';
import { refreshJobs, refreshObjects, refreshVersions } from './lists.js';
import { loadVersion, markDirty, saveEdits, showLabels } from './mask.js';
import { setTool } from './prompts.js';
import { OVERLAY_OPACITY, S, message, setState } from './state.js';
import { applyWindow, nv, onLocation, setNavAxis } from './view.js';
import { OBJ, TASKS, drafts, view2d } from './viewer.js';

const $ = (sel) => document.querySelector(sel);

// ------------------------------------------------------------------ open work
const JOB_BUTTONS = ['#btn-segment', '#btn-propagate', '#btn-refine',
  '#btn-review', '#btn-download', '#btn-download-seg', '#btn-add-object'];

/** Buttons that need an open job are disabled without one (DICOM-SEG: DICOM uploads only). */
export function updateEnabled() {
  for (const sel of JOB_BUTTONS) $(sel).disabled = !S.job;
  const dicom = S.job && (S.job.source_format === 'dicom' || S.job.source_format === '2d-dicom');
  $('#btn-download-seg').disabled = !dicom;
  $('#btn-download-png').disabled = !S.job || !S.job.image2d;
  const desc = $('#seg-description'); // the SEG's SeriesDescription: only where a SEG can be made
  if (desc) desc.classList.toggle('hidden', !dicom);
  $('#btn-download-seg').title = S.job && !dicom
    ? `DICOM-SEG needs a DICOM upload (this one is ${S.job.source_format})` : 'DICOM-SEG (DICOM uploads only)';
}

export async function openJob(jobId, known = null) {
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
export async function switchJob(jobId) {
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

export async function uploadAndOpen(file) {
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
export async function undoRedo(dir) {
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

export async function review() {
  if (!S.job) return;
  if (S.dirty) await saveEdits();
  const r = await api.postJSON(api.jobUrl(S.job.job_id, '/review'), {});
  message(`Version ${r.version} marked reviewed`, 'ok');
  await refreshVersions();
}

export async function exportMask(format) {
  if (!S.job) return;
  if (S.dirty) await saveEdits();
  const ext = { 'dicom-seg': 'dcm', png: 'png' }[format] || 'nii.gz';
  const style = format === 'png' ? '&style=labels' // a 2D mask file: label values
    : (format === 'dicom-seg' && OBJ ? OBJ.segQuery() : '');
  const name = await api.download(api.jobUrl(S.job.job_id, `/result?format=${format}${style}`), `${S.job.job_id}_mask.${ext}`);
  message(`Downloaded ${name}`, 'ok');
}

/** Close the open job (after it was deleted): an empty viewer. */
export function closeJob() {
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
