// NIfTI-1 helpers for label maps: read a (gzipped) NIfTI into a Uint8Array, write one.
// Voxel order is NIfTI's own (x fastest): index = x + y*nx + z*nx*ny, the same order as
// NiiVue's drawing bitmap for a volume already in closest-canonical RAS orientation.

/** Gunzip bytes when they start with the gzip magic number (uses the browser's DecompressionStream). */
export async function maybeGunzip(buf) {
  const u8 = new Uint8Array(buf);
  if (u8.length < 2 || u8[0] !== 0x1f || u8[1] !== 0x8b) return u8;
  const ds = new Response(new Blob([u8]).stream().pipeThrough(new DecompressionStream('gzip')));
  return new Uint8Array(await ds.arrayBuffer());
}

/** Gzip bytes (CompressionStream). */
export async function gzip(u8) {
  const cs = new Response(new Blob([u8]).stream().pipeThrough(new CompressionStream('gzip')));
  return new Uint8Array(await cs.arrayBuffer());
}

/**
 * Parse a NIfTI-1 label map. Returns {dims: [nx, ny, nz], data: Uint8Array(nx*ny*nz)}.
 * Integer and float voxel types are converted to uint8 labels (0..255).
 */
export async function readLabelNifti(buf) {
  const bytes = await maybeGunzip(buf);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let le = true;
  if (dv.getInt32(0, true) !== 348) {
    if (dv.getInt32(0, false) !== 348) throw new Error('not a NIfTI-1 file');
    le = false;
  }
  const ndim = dv.getInt16(40, le);
  const dims = [1, 1, 1];
  for (let i = 0; i < Math.min(ndim, 3); i++) dims[i] = dv.getInt16(42 + 2 * i, le);
  const datatype = dv.getInt16(70, le);
  const offset = Math.round(dv.getFloat32(108, le));
  const n = dims[0] * dims[1] * dims[2];
  const out = new Uint8Array(n);
  const readers = {
    2: [1, (o) => dv.getUint8(o)], 256: [1, (o) => dv.getInt8(o)],
    4: [2, (o) => dv.getInt16(o, le)], 512: [2, (o) => dv.getUint16(o, le)],
    8: [4, (o) => dv.getInt32(o, le)], 768: [4, (o) => dv.getUint32(o, le)],
    16: [4, (o) => dv.getFloat32(o, le)], 64: [8, (o) => dv.getFloat64(o, le)],
  };
  if (datatype === 2) {
    out.set(bytes.subarray(offset, offset + n));
  } else {
    const r = readers[datatype];
    if (!r) throw new Error(`unsupported NIfTI datatype ${datatype} for a label map`);
    for (let i = 0; i < n; i++) out[i] = Math.max(0, Math.min(255, Math.round(r[1](offset + i * r[0]))));
  }
  return { dims, data: out };
}

/**
 * Write a uint8 NIfTI-1 (.nii, single file) for a label map on a grid with the given
 * voxel->RAS affine (4x4, row major, as nested arrays) and voxel sizes (mm).
 */
export function writeLabelNifti(data, dims, affine, pixdim) {
  const header = new ArrayBuffer(352);
  const dv = new DataView(header);
  dv.setInt32(0, 348, true);
  dv.setInt16(40, 3, true);
  for (let i = 0; i < 3; i++) dv.setInt16(42 + 2 * i, dims[i], true);
  for (let i = 3; i < 7; i++) dv.setInt16(42 + 2 * i, 1, true);
  dv.setInt16(70, 2, true); // uint8
  dv.setInt16(72, 8, true); // bitpix
  dv.setFloat32(76, 1, true); // qfac
  for (let i = 0; i < 3; i++) dv.setFloat32(80 + 4 * i, pixdim[i] || 1, true);
  dv.setFloat32(108, 352, true); // vox_offset
  dv.setFloat32(112, 1, true); // scl_slope
  dv.setInt16(254, 1, true); // sform_code: scanner
  for (let r = 0; r < 3; r++) {
    for (let c = 0; c < 4; c++) dv.setFloat32(280 + 16 * r + 4 * c, affine[r][c], true);
  }
  const magic = [0x6e, 0x2b, 0x31, 0x00]; // "n+1\0"
  magic.forEach((b, i) => dv.setUint8(344 + i, b));
  const out = new Uint8Array(352 + data.length);
  out.set(new Uint8Array(header), 0);
  out.set(data, 352);
  return out;
}

/** Decode the run-length mask of a progress event: alternating runs of 0 and 1, 0 first. */
export function decodeRle(runs, n) {
  const out = new Uint8Array(n);
  let pos = 0;
  for (let i = 0; i < runs.length; i++) {
    if (i % 2 === 1) out.fill(1, pos, Math.min(n, pos + runs[i]));
    pos += runs[i];
  }
  return out;
}
