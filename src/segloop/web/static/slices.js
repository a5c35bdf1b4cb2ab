// Which way slices go: the voxel axis each view (or NiiVue tile) steps along, and the wheel's
// direction. One place, so keys, wheel and slider agree in every view and with every tool.
//
// Axes are voxel axes of the canonical RAS volume: x = 0 (sagittal slices), y = 1 (coronal),
// z = 2 (axial). Knows NiiVue only through the instance handed in; nothing of the page.

/** The axis the slices of a view step along; views without one (3D, Multi) have none here. */
export const VIEW_AXIS = Object.freeze({ axial: 2, coronal: 1, sagittal: 0 });

/** A plane's name by the axis its slices step along. */
export const AXIS_NAME = Object.freeze(['Sagittal', 'Coronal', 'Axial']);

/** The slice axis of the 2D tile under canvas position `xy`, or -1 (3D render, outside). */
export function tileAxisAt(nv, xy) {
  if (!nv || !nv.back) return -1;
  const ti = nv.tileIndex(xy[0], xy[1]);
  if (ti < 0) return -1;
  const acs = nv.screenSlices[ti].axCorSag; // NiiVue: 0 axial, 1 coronal, 2 sagittal, >2 render
  return acs >= 0 && acs <= 2 ? 2 - acs : -1;
}

/** Slices to step for a wheel event: wheel up (away from you) is the next, higher slice. */
export function wheelStep(e) {
  return e.deltaY < 0 ? 1 : e.deltaY > 0 ? -1 : 0;
}

/** The crosshair move (in voxels) from `vox` to slice `i` along `axis`, clamped to `dims`. */
export function moveTo(vox, dims, axis, i) {
  const to = Math.max(0, Math.min(dims[axis] - 1, Math.round(i)));
  const d = [0, 0, 0];
  d[axis] = to - vox[axis];
  return d;
}
