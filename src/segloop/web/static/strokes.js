// Per-stroke undo/redo of brush and eraser edits that are not saved yet.
//
// Each stroke is kept as the voxels it changed (index, value before, value after), found by
// comparing the drawing bitmap with a snapshot taken after the previous stroke, so memory grows
// with what was painted, not with the volume. Knows nothing of NiiVue or the page: the viewer
// hands it the bitmap (a Uint8Array) and redraws.

/** Unsaved strokes on one bitmap: commit() after each stroke, undo()/redo() one at a time. */
export class StrokeHistory {
  constructor(bitmap, limit = 100) {
    this.snapshot = bitmap.slice();
    this.done = [];
    this.undone = [];
    this.limit = limit;
  }

  /** Strokes that can be undone. */
  get count() {
    return this.done.length;
  }

  /** Record the stroke just painted into `bitmap`; false when it changed nothing. `runs`:
   * the index ranges [start, end) the stroke can have changed (null: the whole bitmap). */
  commit(bitmap, runs = null) {
    const snap = this.snapshot;
    const idx = [];
    for (const [a, b] of runs || [[0, bitmap.length]]) {
      for (let i = a; i < b; i++) if (bitmap[i] !== snap[i]) idx.push(i);
    }
    if (!idx.length) return false;
    const at = Uint32Array.from(idx);
    const before = new Uint8Array(at.length);
    const after = new Uint8Array(at.length);
    for (let k = 0; k < at.length; k++) {
      before[k] = snap[at[k]];
      after[k] = bitmap[at[k]];
      snap[at[k]] = after[k];
    }
    this.done.push({ at, before, after });
    if (this.done.length > this.limit) this.done.shift();
    this.undone = [];
    return true;
  }

  /** Undo the last stroke in `bitmap`; false when there is none. */
  undo(bitmap) {
    const s = this.done.pop();
    if (!s) return false;
    for (let k = 0; k < s.at.length; k++) {
      bitmap[s.at[k]] = s.before[k];
      this.snapshot[s.at[k]] = s.before[k];
    }
    this.undone.push(s);
    return true;
  }

  /** Redo the last undone stroke in `bitmap`; false when there is none. */
  redo(bitmap) {
    const s = this.undone.pop();
    if (!s) return false;
    for (let k = 0; k < s.at.length; k++) {
      bitmap[s.at[k]] = s.after[k];
      this.snapshot[s.at[k]] = s.after[k];
    }
    this.done.push(s);
    return true;
  }
}
