// Prompts and slice masks on any plane: where a voxel of a coronal or sagittal slice is on the
// canvas and back, and which voxels of the label bitmap a slice of a plane covers.
//
// A plane is named by the voxel axis its slices step along (slices.js: x = 0 sagittal, y = 1
// coronal, z = 2 axial). A point on a slice has plane coordinates (u, v): the two other voxel
// axes in order (axial: x, y; coronal: x, z; sagittal: y, z), as the API's `axis` parameter
// counts them (segloop.types.Plane). Knows NiiVue only through the instance handed in.

/** The API's plane names, by slice axis. */
export const PLANE_NAME = Object.freeze(['sagittal', 'coronal', 'axial']);

/** The (u, v) voxel axes of the slices of each axis. */
export const IN_PLANE = Object.freeze([[1, 2], [0, 2], [0, 1]]);

const clamp = (v, lo, hi) => Math.max(lo, Math.min(hi, v));

/**
 * The slice point under canvas position `xy` on any 2D tile: {axis, k, u, v, vox}, where k is
 * the slice index along `axis` (`current`, the crosshair voxel, gives it) and (u, v) the plane
 * coordinates; null off the 2D tiles.
 */
export function planePointAt(nv, dims, current, xy) {
  if (!nv || !nv.back) return null;
  const ti = nv.tileIndex(xy[0], xy[1]);
  if (ti < 0) return null;
  const acs = nv.screenSlices[ti].axCorSag; // NiiVue: 0 axial, 1 coronal, 2 sagittal
  if (acs < 0 || acs > 2) return null;
  const f = nv.canvasPos2frac(xy);
  if (f[0] < 0) return null;
  const axis = 2 - acs;
  const vox = [0, 1, 2].map((a) => clamp(Math.floor(f[a] * dims[a]), 0, dims[a] - 1));
  vox[axis] = current[axis];
  const [ua, va] = IN_PLANE[axis];
  return { axis, k: vox[axis], u: vox[ua], v: vox[va], vox };
}

/** Canvas position of plane point (u, v) (voxel units) on the shown slice of `axis`, or null
 * when no tile shows that plane. */
export function planeToCanvas(nv, dims, axis, u, v) {
  const f = Array.from(nv.scene.crosshairPos);
  const [ua, va] = IN_PLANE[axis];
  f[ua] = u / dims[ua];
  f[va] = v / dims[va];
  const r = nv.frac2canvasPosWithTile(f, 2 - axis);
  return r ? r.pos : null;
}

/** Whether a 2D tile of `axis` is on screen. */
export function planeShown(nv, axis) {
  return !!nv && nv.screenSlices.some((s) => s.axCorSag === 2 - axis);
}

/**
 * Bitmap indices (x-fastest NIfTI order) of slice `k` of `axis`, u-fastest: the order of the
 * slice masks of progress events (segloop.jobs.progress.mask_runs on the plane's view).
 */
export function sliceIndices(dims, axis, k) {
  const [nx, ny] = dims;
  const [ua, va] = IN_PLANE[axis];
  const nu = dims[ua];
  const nv = dims[va];
  const stride = [1, nx, nx * ny];
  const out = new Int32Array(nu * nv);
  const base = k * stride[axis];
  for (let v = 0; v < nv; v++) {
    for (let u = 0; u < nu; u++) out[u + nu * v] = base + u * stride[ua] + v * stride[va];
  }
  return out;
}
