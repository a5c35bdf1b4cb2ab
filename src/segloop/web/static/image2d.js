// segloop web viewer, 2D mode: a 2D image job (PNG, JPEG, TIFF, BMP, one DICOM frame) shown as a
// picture on a plain canvas, in colour, upright, with no slice controls.
//
// Coordinates: image pixels, x = column, y = row from the top-left, which are also the job's
// canonical voxel indices on its one slice (segloop.jobs.image2d_job). The labels stay in NiiVue's
// drawing bitmap (x fastest, width x height x 1), so loading versions, painting progress, saving
// edits (PUT .../mask), undo and export are the viewer's own code; this module only draws the
// picture, the label overlay and the prompts, and turns the pointer into box / points / brush.
//
// Zoom and pan: the wheel zooms around the pixel under the cursor (a picture has no slices to
// step); a middle-button drag pans with every tool, and so does a Shift-drag with every tool but
// Points (where Shift-click is a negative point); 0, the 1:1 button and a new job reset to the
// whole picture; + / - zoom around the centre. Prompts and the brush always land on the image
// pixel under the pointer (pixelAt uses the same transform as draw).

const $ = (sel) => document.querySelector(sel);

function hexToRgb(hex) {
  const h = (hex || '#ffff00').replace('#', '');
  return [0, 2, 4].map((i) => parseInt(h.slice(i, i + 2), 16));
}

export class Image2DView {
  /**
   * ctx: what the viewer lends this mode: state (its S), nv() (the Niivue instance), markDirty(d),
   * labelOf(objectId), promptsAt(z), promptsChanged(), overlayOpacity().
   */
  constructor(ctx) {
    this.ctx = ctx;
    this.canvas = $('#canvas2d');
    this.active = false;
    this.bitmap = null; // the picture (ImageBitmap)
    this.size = [0, 0]; // [width, height]
    this.drag = null; // box being dragged: {a: [x, y], b: [x, y]}
    this.painting = false;
    this.zoom = 1; // on top of the whole-picture fit
    this.pan = [0, 0]; // device pixels, added to the centred offset
    this.panning = null; // {x, y, pan}: a pan drag in progress (client pixels at its start)
    this.labels = document.createElement('canvas'); // the label overlay at image resolution
    this.canvas.addEventListener('pointerdown', (e) => this.onDown(e));
    this.canvas.addEventListener('pointermove', (e) => this.onMove(e));
    this.canvas.addEventListener('pointerup', (e) => this.onUp(e));
    this.canvas.addEventListener('pointercancel', (e) => this.onUp(e));
    this.canvas.addEventListener('contextmenu', (e) => { if (this.active) e.preventDefault(); });
    this.canvas.addEventListener('wheel', (e) => this.onWheel(e), { passive: false });
    this.canvas.addEventListener('auxclick', (e) => { if (this.active && e.button === 1) e.preventDefault(); });
    new ResizeObserver(() => { if (this.active) this.draw(); }).observe(this.canvas);
  }

  /** Show the job's picture (GET .../image as a Blob); hides the volume-only controls. */
  async open(job, blob) {
    this.bitmap = await createImageBitmap(blob);
    this.size = [job.shape[0], job.shape[1]];
    if (this.bitmap.width !== this.size[0] || this.bitmap.height !== this.size[1]) {
      throw new Error(`the picture is ${this.bitmap.width}x${this.bitmap.height}, the job ${this.size.join('x')}`);
    }
    this.labels.width = this.size[0];
    this.labels.height = this.size[1];
    this.zoom = 1;
    this.pan = [0, 0];
    this.active = true;
    document.body.classList.add('mode-2d');
    this.canvas.classList.remove('hidden');
    this.draw();
  }

  close() {
    this.active = false;
    this.bitmap = null;
    this.drag = null;
    document.body.classList.remove('mode-2d');
    this.canvas.classList.add('hidden');
  }

  /** Where the picture lies on the canvas (device pixels): scale and offset, fitted whole. */
  fit() {
    const c = this.canvas;
    const r = c.getBoundingClientRect();
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(r.width * dpr));
    const h = Math.max(1, Math.round(r.height * dpr));
    if (c.width !== w || c.height !== h) {
      c.width = w;
      c.height = h;
    }
    const [iw, ih] = this.size;
    const s = Math.min(w / iw, h / ih) * this.zoom;
    return { s, ox: (w - iw * s) / 2 + this.pan[0], oy: (h - ih * s) / 2 + this.pan[1], dpr };
  }

  /** Zoom by factor f keeping the canvas point (cx, cy) (device pixels; default the centre) fixed. */
  zoomBy(f, cx, cy) {
    if (!this.active) return;
    const { s, ox, oy } = this.fit();
    const z = Math.min(64, Math.max(0.25, this.zoom * f));
    const k = z / this.zoom;
    const px = cx === undefined ? this.canvas.width / 2 : cx;
    const py = cy === undefined ? this.canvas.height / 2 : cy;
    this.zoom = z;
    // the image point under (px, py) stays there: new offset = p - (p - old offset) * k
    const [iw, ih] = this.size;
    const s2 = s * k;
    this.pan = [px - (px - ox) * k - (this.canvas.width - iw * s2) / 2,
      py - (py - oy) * k - (this.canvas.height - ih * s2) / 2];
    this.draw();
  }

  /** The whole picture, centred (0 / the 1:1 button). */
  resetView() {
    this.zoom = 1;
    this.pan = [0, 0];
    this.draw();
  }

  onWheel(e) {
    if (!this.active) return;
    e.preventDefault();
    const r = this.canvas.getBoundingClientRect();
    const dpr = window.devicePixelRatio || 1;
    const unit = e.deltaMode === 1 ? 16 : (e.deltaMode === 2 ? 400 : 1);
    const f = Math.exp(-e.deltaY * unit * 0.002);
    this.zoomBy(f, (e.clientX - r.left) * dpr, (e.clientY - r.top) * dpr);
  }

  /** The image pixel [x, y] under a pointer event, or null outside the picture. */
  pixelAt(e) {
    const r = this.canvas.getBoundingClientRect();
    const { s, ox, oy, dpr } = this.fit();
    const x = Math.floor(((e.clientX - r.left) * dpr - ox) / s);
    const y = Math.floor(((e.clientY - r.top) * dpr - oy) / s);
    if (x < 0 || y < 0 || x >= this.size[0] || y >= this.size[1]) return null;
    return [x, y];
  }

  /** Client (CSS pixel) position of the centre of image pixel (x, y): for tests and scripting. */
  clientOf(x, y) {
    const r = this.canvas.getBoundingClientRect();
    const { s, ox, oy, dpr } = this.fit();
    return [r.left + (ox + (x + 0.5) * s) / dpr, r.top + (oy + (y + 0.5) * s) / dpr];
  }

  paintLabels() {
    const nv = this.ctx.nv();
    const [w, h] = this.size;
    const g = this.labels.getContext('2d');
    const img = g.createImageData(w, h);
    const bm = nv && nv.drawBitmap;
    if (bm && bm.length === w * h) {
      const lut = new Map(this.ctx.state.objects.map((o) => [o.label_value, hexToRgb(o.colour)]));
      for (let i = 0; i < w * h; i++) {
        const v = bm[i];
        if (!v) continue;
        const c = lut.get(v) || [255, 255, 0];
        img.data.set([c[0], c[1], c[2], 255], i * 4);
      }
    }
    g.putImageData(img, 0, 0);
  }

  draw() {
    if (!this.active || !this.bitmap) return;
    const { s, ox, oy, dpr } = this.fit();
    const g = this.canvas.getContext('2d');
    g.setTransform(1, 0, 0, 1, 0, 0);
    g.fillStyle = '#000';
    g.fillRect(0, 0, this.canvas.width, this.canvas.height);
    g.imageSmoothingEnabled = s < 1;
    g.drawImage(this.bitmap, ox, oy, this.size[0] * s, this.size[1] * s);
    this.paintLabels();
    g.globalAlpha = this.ctx.overlayOpacity();
    g.imageSmoothingEnabled = false;
    g.drawImage(this.labels, ox, oy, this.size[0] * s, this.size[1] * s);
    g.globalAlpha = 1;
    const p = this.ctx.state.prompts;
    let box = null;
    if (this.drag) {
      const { a, b } = this.drag;
      box = [Math.min(a[0], b[0]), Math.min(a[1], b[1]), Math.max(a[0], b[0]), Math.max(a[1], b[1])];
    } else if (p && p.box) {
      box = p.box;
    }
    if (box) {
      g.lineWidth = 2 * dpr;
      g.strokeStyle = '#ffd400';
      g.setLineDash([6 * dpr, 4 * dpr]);
      g.strokeRect(ox + box[0] * s, oy + box[1] * s, (box[2] + 1 - box[0]) * s, (box[3] + 1 - box[1]) * s);
      g.setLineDash([]);
    }
    for (const q of (p ? p.points : [])) {
      const cx = ox + (q.x + 0.5) * s;
      const cy = oy + (q.y + 0.5) * s;
      const r = 7 * dpr;
      g.fillStyle = q.label ? '#2ecc71' : '#ff4d4d';
      g.strokeStyle = '#000';
      g.lineWidth = 1.5 * dpr;
      g.beginPath();
      g.arc(cx, cy, r, 0, 2 * Math.PI);
      g.fill();
      g.stroke();
    }
  }

  /** Paint (brush: the current object's label; eraser: 0) a disc of the pen size at pixel (x, y). */
  paint(x, y) {
    const nv = this.ctx.nv();
    const [w, h] = this.size;
    if (!nv || !nv.drawBitmap || nv.drawBitmap.length !== w * h) return;
    const S = this.ctx.state;
    const value = S.tool === 'brush' ? this.ctx.labelOf(S.currentObject) : 0;
    const size = Math.max(1, Number($('#pen-size').value) || 3);
    const r = (size - 1) / 2;
    for (let yy = Math.max(0, Math.floor(y - r)); yy <= Math.min(h - 1, Math.ceil(y + r)); yy++) {
      for (let xx = Math.max(0, Math.floor(x - r)); xx <= Math.min(w - 1, Math.ceil(x + r)); xx++) {
        if ((xx - x) ** 2 + (yy - y) ** 2 <= r * r + 0.25) nv.drawBitmap[yy * w + xx] = value;
      }
    }
    this.ctx.markDirty(true);
  }

  onDown(e) {
    if (!this.active) return;
    e.preventDefault();
    const S = this.ctx.state;
    if (e.button === 1 || (e.button === 0 && e.shiftKey && S.tool !== 'points')) {
      this.panning = { x: e.clientX, y: e.clientY, pan: [...this.pan] };
      this.canvas.setPointerCapture(e.pointerId);
      return;
    }
    const v = this.pixelAt(e);
    if (!v) return;
    if (S.tool === 'box' && e.button === 0) {
      this.drag = { a: v, b: v };
      this.canvas.setPointerCapture(e.pointerId);
    } else if (S.tool === 'points' && (e.button === 0 || e.button === 2)) {
      this.ctx.promptsAt(0).points.push({ x: v[0], y: v[1], label: e.button === 2 || e.shiftKey ? 0 : 1 });
      this.ctx.promptsChanged();
    } else if ((S.tool === 'brush' || S.tool === 'eraser') && e.button === 0) {
      this.painting = true;
      this.canvas.setPointerCapture(e.pointerId);
      this.paint(v[0], v[1]);
    }
    this.draw();
  }

  onMove(e) {
    if (!this.active) return;
    if (this.panning) {
      const dpr = window.devicePixelRatio || 1;
      const p = this.panning;
      this.pan = [p.pan[0] + (e.clientX - p.x) * dpr, p.pan[1] + (e.clientY - p.y) * dpr];
      this.draw();
      return;
    }
    const v = this.pixelAt(e);
    if (!v) return;
    $('#cursor').textContent = `x ${v[0]}  y ${v[1]}`;
    if (this.drag) {
      this.drag.b = v;
      this.draw();
    } else if (this.painting) {
      this.paint(v[0], v[1]);
      this.draw();
    }
  }

  onUp() {
    if (!this.active) return;
    this.painting = false;
    this.panning = null;
    if (!this.drag) return;
    const { a, b } = this.drag;
    this.drag = null;
    const box = [Math.min(a[0], b[0]), Math.min(a[1], b[1]), Math.max(a[0], b[0]), Math.max(a[1], b[1])];
    if (box[2] - box[0] >= 1 || box[3] - box[1] >= 1) {
      this.ctx.promptsAt(0).box = box;
      this.ctx.promptsChanged();
    }
    this.draw();
  }
}
