// segloop viewer: the first image fast (issue 15).
//
// A large volume (over 8 Mi voxels) has a subsampled copy on the server
// (GET /api/v1/jobs/{id}/volume?preview=true, every f-th voxel in-plane and every 2f-th slice on
// the same physical extent: segloop.jobs.files.preview_steps). openJob shows it as soon as it
// arrives, read-only, while the full volume downloads (both downloads start together:
// fetchVolume); the full volume then replaces it and editing starts. The canonical volume is served uncompressed (no inflating in the page).
// `?preview=0` in the page URL turns the preview off (benchmarks/viewer_first_image.py compares
// both). performance marks segloop:first-image / segloop:full-image record when each was on
// screen; segloop:preview-downloaded, volume-downloaded, drawing-created and version-shown mark
// the steps between (the benchmark's --phases prints them all).

import { windowOf } from './wl.js';

const PREVIEW_MIN_VOXELS = 8 << 20;

/** The window a job opens with: the soft-tissue preset for CT, else NiiVue's robust range. */
export function initialWindow(job) {
  return job.modality === 'CT' ? '400,40' : 'auto';
}

/**
 * Load a NIfTI ArrayBuffer into `nv` with the window `win` set before NiiVue's first upload to
 * the GPU: every later change of window re-renders the whole volume and its gradients
 * (updateGLVolume), which on a CPU WebGL (SwiftShader) costs seconds for a large volume.
 */
export async function loadWindowed(nv, buf, name, win) {
  const before = nv.onVolumeAddedFromUrl;
  nv.onVolumeAddedFromUrl = (opts, vol) => {
    if (win) [vol.cal_min, vol.cal_max] = windowOf(win, vol);
  };
  try {
    await nv.loadFromArrayBuffer(buf, name);
  } finally {
    nv.onVolumeAddedFromUrl = before;
  }
}

export function previewWanted(job) {
  if (new URLSearchParams(location.search).get('preview') === '0') return false;
  return job.shape.reduce((a, b) => a * b, 1) > PREVIEW_MIN_VOXELS;
}

/** Start downloading the job's full volume now (an ArrayBuffer promise), so it arrives while
 * the preview is fetched and drawn; openJob awaits it afterwards. */
export function fetchVolume(api, job) {
  const p = api.request('GET', api.jobUrl(job.job_id, '/volume')).then((r) => r.arrayBuffer());
  p.catch(() => {}); // awaited (and reported) by openJob; no unhandled-rejection noise meanwhile
  return p;
}

/** Fetch and show the preview of `job` in `nv` (its volumes are replaced); false when there is none. */
export async function showPreview(nv, api, job) {
  let buf;
  try {
    const resp = await api.request('GET', api.jobUrl(job.job_id, '/volume?preview=true'));
    buf = await resp.arrayBuffer();
    markOnce('preview-downloaded');
  } catch (e) {
    return false; // an older job without a preview: the full volume comes next anyway
  }
  if (nv.drawBitmap) nv.closeDrawing();
  while (nv.volumes.length) nv.removeVolumeByIndex(0);
  await loadWindowed(nv, buf, 'preview.nii', initialWindow(job)); // NiiVue inflates an older job's gzip by its magic
  nv.drawScene();
  markOnce('first-image');
  return true;
}

/** performance.mark('segloop:' + name), once per page load. */
export function markOnce(name) {
  if (!performance.getEntriesByName(`segloop:${name}`).length) performance.mark(`segloop:${name}`);
}
