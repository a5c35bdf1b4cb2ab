// segloop viewer: the first image fast (issue 15).
//
// A large volume (over 8 Mi voxels) has a subsampled copy on the server
// (GET /api/v1/jobs/{id}/volume?preview=true, every f-th voxel on the same physical extent,
// about 4 Mi voxels). openJob shows it as soon as it arrives, read-only, while the full volume
// downloads; the full volume then replaces it and editing starts. `?preview=0` in the page URL
// turns this off (benchmarks/viewer_first_image.py compares both). performance marks
// segloop:first-image / segloop:full-image record when each was on screen.

const PREVIEW_MIN_VOXELS = 8 << 20;

export function previewWanted(job) {
  if (new URLSearchParams(location.search).get('preview') === '0') return false;
  return job.shape.reduce((a, b) => a * b, 1) > PREVIEW_MIN_VOXELS;
}

/** Fetch and show the preview of `job` in `nv` (its volumes are replaced); false when there is none. */
export async function showPreview(nv, api, job) {
  let buf;
  try {
    const resp = await api.request('GET', api.jobUrl(job.job_id, '/volume?preview=true'));
    buf = await resp.arrayBuffer();
  } catch (e) {
    return false; // an older job without a preview: the full volume comes next anyway
  }
  if (nv.drawBitmap) nv.closeDrawing();
  while (nv.volumes.length) nv.removeVolumeByIndex(0);
  await nv.loadFromArrayBuffer(buf, 'preview.nii.gz');
  nv.drawScene();
  markOnce('first-image');
  return true;
}

/** performance.mark('segloop:' + name), once per page load. */
export function markOnce(name) {
  if (!performance.getEntriesByName(`segloop:${name}`).length) performance.mark(`segloop:${name}`);
}
