// segloop viewer: measurements of the label bitmap on screen (issue 15: measure unsaved strokes).
//
// The same numbers as GET /api/v1/jobs/{id}/measurements (segloop.edit.measure) but computed
// in the browser from NiiVue's drawing bitmap, so the line under each object follows unsaved
// brush/eraser strokes at once, without a round trip: per label value the voxel count, volume
// (mL, voxels x the canonical spacing), the inclusive bounding box, its extent in mm and the
// number of axial slices holding it. Bitmap order is NIfTI's (x fastest). Pure; no DOM.

/**
 * Measurements of every label value in `bitmap` (Uint8Array, nx*ny*nz) on a grid of `dims`
 * voxels of `spacing` mm: {label_value: {label_value, voxels, volume_ml, bbox_min, bbox_max,
 * extent_mm, slices}}.
 */
export function measureBitmap(bitmap, dims, spacing) {
  const [nx, ny, nz] = dims;
  const count = new Float64Array(256);
  const lo = [new Int32Array(256).fill(1 << 30), new Int32Array(256).fill(1 << 30), new Int32Array(256).fill(1 << 30)];
  const hi = [new Int32Array(256).fill(-1), new Int32Array(256).fill(-1), new Int32Array(256).fill(-1)];
  const slices = new Int32Array(256);
  const lastZ = new Int32Array(256).fill(-1);
  const plane = nx * ny;
  for (let z = 0; z < nz; z++) {
    const off = z * plane;
    for (let y = 0; y < ny; y++) {
      const row = off + y * nx;
      for (let x = 0; x < nx; x++) {
        const v = bitmap[row + x];
        if (!v) continue;
        count[v] += 1;
        if (x < lo[0][v]) lo[0][v] = x;
        if (x > hi[0][v]) hi[0][v] = x;
        if (y < lo[1][v]) lo[1][v] = y;
        if (y > hi[1][v]) hi[1][v] = y;
        if (lastZ[v] !== z) {
          lastZ[v] = z;
          slices[v] += 1;
          if (z < lo[2][v]) lo[2][v] = z;
          hi[2][v] = z;
        }
      }
    }
  }
  const voxelMl = spacing[0] * spacing[1] * spacing[2] / 1000;
  const out = {};
  for (let v = 1; v < 256; v++) {
    if (!count[v]) continue;
    const bmin = [lo[0][v], lo[1][v], lo[2][v]];
    const bmax = [hi[0][v], hi[1][v], hi[2][v]];
    out[v] = {
      label_value: v,
      voxels: count[v],
      volume_ml: Math.round(count[v] * voxelMl * 1e4) / 1e4,
      bbox_min: bmin,
      bbox_max: bmax,
      extent_mm: bmin.map((a, i) => (bmax[i] - a + 1) * spacing[i]),
      slices: slices[v],
    };
  }
  return out;
}
