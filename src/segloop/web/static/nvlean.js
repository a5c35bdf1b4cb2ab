// segloop viewer: what NiiVue computes that this page never uses (or computes the long way), turned
// off (issue 15).
//
// On a CPU WebGL (SwiftShader: headless Chromium, many VMs) a 512x512x300 CT took over a minute
// from "volume loaded" to "editable"; most of it was work NiiVue 0.69 does for features segloop
// does not use. Each change below replaces one NiiVue method on the instance (NiiVue's module is
// untouched) and says which feature it costs:
//
// 1. Gradients. Every upload of the background volume renders a blurred copy and a Sobel
//    gradient of it (two RGBA textures of the volume's size, 2 x dims[3] render passes, one
//    zero-filled upload). Only the 3D render with illumination reads them
//    (gradientTextureAmount > 0 or gradientOpacity > 0; segloop's 3D view is matte). Until one
//    of those is set, both textures are allocated 1 x 1 x depth, so the passes draw one pixel.
// 2. Drawing undo. After every stroke (and on every createEmptyDrawing) NiiVue run-length
//    encodes the whole drawing bitmap into a ring of 16 for its drawUndo(); segloop never calls
//    drawUndo: strokes.js keeps per-stroke undo of the voxels a stroke changed. The encoding is
//    skipped (drawUndo() restores nothing).
// 3. Drawing uploads. While the pen is down NiiVue uploads the full bitmap on every mouse
//    move, and every refreshDrawing scans the whole bitmap for a non-zero voxel (only its
//    drawing-smoothing option uses the answer; segloop leaves that off). A stroke only changes
//    voxels of the slices the pen crossed on its plane, so while a stroke is in progress only
//    that slab is uploaded; every other refresh (a version, a task's slices, an edit) uploads
//    the whole bitmap, without the scan. createEmptyDrawing makes its texture zero-filled and
//    then uploaded the (zero) bitmap again: that second upload is skipped. strokeRuns() tells
//    the page the same slab, so its own passes after a stroke (paint constraints in tools.js,
//    per-stroke undo in strokes.js) compare those slices only, not the whole bitmap.
//
// 4. Intensity range. Every volume NiiVue loads gets calMinMax(): it copies the middle half of
//    each axis (a loop visiting every voxel of the volume, 78 Mi for a 512x512x300 CT: over a
//    second of CPU), then takes min/max and a 1001-bin histogram of that copy for the 2-98 %
//    robust range. Here the middle block is copied row by row (typed-array slices) and NiiVue's
//    own calMinMax runs on that block: the same numbers (cal_min/max, robust_min/max,
//    global_min/max), without the whole-volume loop. Where NiiVue would fall back to the whole
//    volume (no variability in the block), for a fixed-range colour map, and for 4D volumes,
//    NiiVue's own path runs unchanged. calMinMax is a method of NiiVue's NVImage class and is
//    called while the image is being built, before any instance exists; so the quick version is
//    put on the class only while this viewer's addVolumeFromUrl is loading, and taken off after.
// 5. Framebuffer checks. NiiVue's gradient passes (run on every volume upload, at the 1 x 1 size
//    of 1. while illumination is off) call checkFramebufferStatus after attaching each slice:
//    a synchronous round trip to the GPU process that also waits for the slice drawn before
//    it, 2 x dims[3] times. Another layer of the same texture attached to the same framebuffer
//    is complete when one layer was (same format, size and level), so that answer is reused
//    until the framebuffer, an attachment's texture or level, or any texture's storage changes.
//
// leanNiivue(nv, NVImage) applies all five once, after attachToCanvas.

const TEXTURE6_GRADIENT = 33990; // gl.TEXTURE6: NiiVue's gradient texture unit
const TEXTURE8_GRADIENT_TEMP = 33992; // gl.TEXTURE8: the blurred copy (shared with PAQD atlases)
const PEN = 0; // NiiVue's PEN_TYPE.PEN

/** True when NiiVue's 3D render will read the gradient texture. */
function gradientsWanted(nv) {
  return nv.gradientTextureAmount > 0 || nv.opts.gradientOpacity > 0;
}

/** 1. Gradient textures of 1 x 1 x depth until the 3D render asks for illumination. */
export function skipGradients(nv) {
  const rgbaTex = nv.rgbaTex.bind(nv);
  nv.rgbaTex = (texID, activeID, dims, isInit = false) => {
    // the blurred copy is the only TEXTURE8 texture made zero-filled at the volume's size
    const gradient = activeID === TEXTURE6_GRADIENT ||
      (activeID === TEXTURE8_GRADIENT_TEMP && isInit && dims[1] * dims[2] > 4);
    if (gradient && !gradientsWanted(nv)) return rgbaTex(texID, activeID, [dims[0], 1, 1, dims[3]], isInit);
    return rgbaTex(texID, activeID, dims, isInit);
  };
  const illumination = nv.setVolumeRenderIllumination.bind(nv);
  nv.setVolumeRenderIllumination = async (amount = 0) => {
    const before = gradientsWanted(nv);
    await illumination(amount);
    if (!before && gradientsWanted(nv) && nv.back) nv.updateGLVolume(); // now at full size
  };
}

/** 2. No whole-bitmap run-length encoding for NiiVue's drawUndo (segloop has strokes.js). */
export function dropDrawUndo(nv) {
  nv.drawAddUndoBitmap = () => {};
}

/** The plane a pen stroke is in progress on, and the slices it crossed; null when none. */
function penSlab(nv, stroke) {
  const axCorSag = nv.drawPenAxCorSag; // 0 axial (z fixed), 1 coronal (y), 2 sagittal (x)
  if (!nv.opts.drawingEnabled || nv.opts.penType !== PEN || Number.isNaN(nv.drawPenLocation[0]) ||
      axCorSag < 0 || axCorSag > 2) return null;
  const axis = 2 - axCorSag; // voxel axis: sagittal slices are x, coronal y, axial z
  const at = nv.drawPenLocation[axis];
  // NiiVue starts a new stroke with a new drawPenFillPts array
  if (stroke.pts !== nv.drawPenFillPts || stroke.axis !== axis) {
    Object.assign(stroke, { pts: nv.drawPenFillPts, axis, lo: at, hi: at });
  }
  stroke.lo = Math.min(stroke.lo, at);
  stroke.hi = Math.max(stroke.hi, at);
  return stroke;
}

/** Upload slices lo..hi along `axis` of the drawing bitmap into NiiVue's drawing texture. */
function uploadSlab(nv, axis, lo, hi) {
  const [nx, ny, nz] = [nv.back.dims[1], nv.back.dims[2], nv.back.dims[3]];
  const bm = nv.drawBitmap;
  const gl = nv.gl;
  const n = hi - lo + 1;
  let box; // [x, y, z, width, height, depth]
  let data;
  if (axis === 2) { // axial slices are contiguous
    box = [0, 0, lo, nx, ny, n];
    data = bm.subarray(lo * nx * ny, (hi + 1) * nx * ny);
  } else if (axis === 1) {
    box = [0, lo, 0, nx, n, nz];
    data = new Uint8Array(nx * n * nz);
    for (let z = 0; z < nz; z++) {
      for (let y = lo; y <= hi; y++) {
        const src = (z * ny + y) * nx;
        data.set(bm.subarray(src, src + nx), (z * n + (y - lo)) * nx);
      }
    }
  } else {
    box = [lo, 0, 0, n, ny, nz];
    data = new Uint8Array(n * ny * nz);
    let k = 0;
    for (let z = 0; z < nz; z++) {
      for (let y = 0; y < ny; y++) {
        const row = (z * ny + y) * nx;
        for (let x = lo; x <= hi; x++) data[k++] = bm[row + x];
      }
    }
  }
  gl.activeTexture(gl.TEXTURE7); // NiiVue's drawing texture unit
  gl.bindTexture(gl.TEXTURE_3D, nv.drawTexture);
  gl.pixelStorei(gl.UNPACK_ALIGNMENT, 1);
  gl.texSubImage3D(gl.TEXTURE_3D, 0, ...box, gl.RED, gl.UNSIGNED_BYTE, data);
}

const STROKES = new WeakMap(); // nv -> the pen stroke in progress or last made {pts, axis, lo, hi}

/**
 * The voxel index runs [start, end) of the slices the current (or last) pen stroke crossed, in
 * a drawing bitmap of `dims` (X, Y, Z; x fastest): what a stroke can have changed, so the page
 * compares only those. Null when unknown (NiiVue's own upload path was used): compare it all.
 */
export function strokeRuns(nv, dims) {
  const st = STROKES.get(nv);
  if (!st || st.pts === null || st.pts !== nv.drawPenFillPts) return null;
  const [nx, ny, nz] = dims;
  const runs = [];
  if (st.axis === 2) runs.push([st.lo * nx * ny, (st.hi + 1) * nx * ny]);
  else if (st.axis === 1) {
    for (let z = 0; z < nz; z++) runs.push([(z * ny + st.lo) * nx, (z * ny + st.hi + 1) * nx]);
  } else {
    for (let r = 0; r < ny * nz; r++) runs.push([r * nx + st.lo, r * nx + st.hi + 1]);
  }
  return runs;
}

/** 3. Upload the slab a pen stroke crossed while it is in progress, else the whole bitmap;
 * no scan, no second upload in createEmptyDrawing. NiiVue's own path where it differs (the
 * 2D-texture mode of huge volumes, drawing smoothing, click-to-segment). */
export function uploadLean(nv) {
  const refresh = nv.refreshDrawing.bind(nv);
  const stroke = { pts: null, axis: -1, lo: 0, hi: 0 };
  STROKES.set(nv, stroke);
  let creating = false;
  nv.refreshDrawing = (isForceRedraw = true, useClickToSegmentBitmap = false) => {
    const own = !useClickToSegmentBitmap && !nv.opts.is2DSliceShader && !(nv.opts.smoothDrawing > 0) &&
      nv.drawBitmap && nv.drawTexture && nv.back && nv.back.dims &&
      nv.drawBitmap.length === nv.back.dims[1] * nv.back.dims[2] * nv.back.dims[3];
    if (!own) {
      stroke.pts = null; // slices not followed: strokeRuns() says unknown
      return refresh(isForceRedraw, useClickToSegmentBitmap);
    }
    if (!creating) {
      const slab = penSlab(nv, stroke);
      if (slab) uploadSlab(nv, slab.axis, slab.lo, slab.hi);
      else uploadSlab(nv, 2, 0, nv.back.dims[3] - 1);
    }
    if (isForceRedraw) nv.drawScene();
    return undefined;
  };
  const create = nv.createEmptyDrawing.bind(nv);
  nv.createEmptyDrawing = () => {
    creating = !nv.opts.is2DSliceShader; // r8Tex(..., isInit = true): created zero-filled
    try {
      create();
    } finally {
      creating = false;
    }
  };
}

/** The middle block calMinMax measures (the middle half of each axis, as NiiVue cuts it) of a
 * volume of `dims` (NIfTI: dims[1..3]), copied row by row: {block, size: [x, y, z]}. */
export function middleBlock(img, dims) {
  const n = [dims[1], dims[2], dims[3]];
  const lo = n.map((d) => Math.floor(0.25 * d));
  const size = n.map((d, i) => d - 2 * lo[i]);
  const block = new img.constructor(size[0] * size[1] * size[2]);
  let k = 0;
  for (let z = lo[2]; z < lo[2] + size[2]; z++) {
    for (let y = lo[1]; y < lo[1] + size[1]; y++) {
      const row = (z * n[1] + y) * n[0] + lo[0];
      block.set(img.subarray(row, row + size[0]), k);
      k += size[0];
    }
  }
  return { block, size };
}

const RANGE_FIELDS = ['cal_min', 'cal_max', 'robust_min', 'robust_max', 'global_min', 'global_max',
  'ignoreZeroVoxels'];

/** NiiVue's calMinMax (`own`, a method of NVImage) on `image`, measured on the middle block. */
function quickCalMinMax(own, image, vol, isBorder) {
  const { hdr, img } = image;
  const nvox = hdr && img ? hdr.dims[1] * hdr.dims[2] * hdr.dims[3] : 0;
  if (!isBorder || !nvox || img.length !== nvox || typeof img.subarray !== 'function') {
    return own.call(image, vol, isBorder);
  }
  const { block, size } = middleBlock(img, hdr.dims);
  const dims = hdr.dims.slice();
  [dims[1], dims[2], dims[3]] = size;
  const stand = {
    hdr: { ...hdr, dims }, img: block, frame4D: 0, _colormap: image._colormap,
    ignoreZeroVoxels: image.ignoreZeroVoxels, trustCalMinMax: image.trustCalMinMax,
    percentileFrac: image.percentileFrac,
  };
  const r = own.call(stand, vol, false);
  // no variability in the block (NiiVue then measures the whole volume), a colour map's fixed
  // range, a label volume: NiiVue's own path, for NiiVue's own answer
  if (r[0] === r[2] && r[1] === r[3]) return own.call(image, vol, isBorder);
  for (const k of RANGE_FIELDS) if (k in stand) image[k] = stand[k];
  hdr.scl_slope = stand.hdr.scl_slope; // NiiVue turns a zero slope into 1
  return r;
}

/** 4. calMinMax on the middle block, copied by rows, while this viewer loads a volume. */
export function quickRange(nv, NVImage) {
  const proto = NVImage.prototype;
  const add = nv.addVolumeFromUrl.bind(nv);
  let own = null; // NiiVue's calMinMax, while a load of this viewer is in progress
  let loading = 0;
  nv.addVolumeFromUrl = async (...args) => {
    if (loading++ === 0) {
      own = proto.calMinMax;
      proto.calMinMax = function calMinMax(vol = Number.POSITIVE_INFINITY, isBorder = true) {
        return quickCalMinMax(own, this, vol, isBorder);
      };
    }
    try {
      return await add(...args);
    } finally {
      if (--loading === 0) proto.calMinMax = own;
    }
  };
}

/** 5. One checkFramebufferStatus per framebuffer, texture and level, not one per layer. */
export function fewerFramebufferChecks(nv) {
  const gl = nv.gl;
  const check = gl.checkFramebufferStatus.bind(gl);
  const bind = gl.bindFramebuffer.bind(gl);
  const attachLayer = gl.framebufferTextureLayer.bind(gl);
  let bound = null; // the framebuffer bound to FRAMEBUFFER
  let attached = new Map(); // attachment -> [texture, level], since `bound` was bound
  let complete = false; // the last real check said COMPLETE, and only layers changed since
  const forget = (f) => (...a) => { complete = false; return f(...a); };
  gl.bindFramebuffer = (target, fb) => {
    if (target !== gl.FRAMEBUFFER || fb !== bound) {
      complete = false;
      attached = new Map();
    }
    if (target === gl.FRAMEBUFFER) bound = fb;
    return bind(target, fb);
  };
  gl.framebufferTextureLayer = (target, attachment, texture, level, layer) => {
    const was = attached.get(attachment);
    if (target !== gl.FRAMEBUFFER || !was || was[0] !== texture || was[1] !== level) complete = false;
    attached.set(attachment, [texture, level]);
    return attachLayer(target, attachment, texture, level, layer);
  };
  for (const name of ['framebufferTexture2D', 'framebufferRenderbuffer', 'texImage3D', 'texStorage3D',
    'texImage2D', 'texStorage2D', 'deleteTexture', 'deleteFramebuffer', 'renderbufferStorage']) {
    gl[name] = forget(gl[name].bind(gl));
  }
  gl.checkFramebufferStatus = (target) => {
    if (complete && target === gl.FRAMEBUFFER) return gl.FRAMEBUFFER_COMPLETE;
    const status = check(target);
    complete = target === gl.FRAMEBUFFER && status === gl.FRAMEBUFFER_COMPLETE;
    return status;
  };
}

/** All of the above, once per NiiVue instance (`NVImage`: NiiVue's image class, for 4.). */
export function leanNiivue(nv, NVImage) {
  skipGradients(nv);
  dropDrawUndo(nv);
  uploadLean(nv);
  quickRange(nv, NVImage);
  fewerFramebufferChecks(nv);
}
