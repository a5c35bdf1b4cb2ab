// Drafts: unsaved brush/eraser edits kept in this browser (IndexedDB) until they are saved.
//
// The viewer writes the whole label bitmap (gzip-compressed) a moment after each stroke, and
// drops the draft when the edits are saved or discarded. A draft left behind (the tab was closed,
// reloaded or crashed) is offered back when its job is opened again. One draft per job:
// {job_id, version it was painted on, saved_at, dims, data (gzip)}. DraftKeeper is the page's side
// (when to write, the Restore / Discard bar). Knows nothing of NiiVue or the API.

import { gzip, maybeGunzip } from './nifti.js';

const DB = 'segloop';
const STORE = 'drafts';

function openDb() {
  return new Promise((resolve, reject) => {
    const req = indexedDB.open(DB, 1);
    req.onupgradeneeded = () => req.result.createObjectStore(STORE, { keyPath: 'job_id' });
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

async function run(mode, f) {
  const db = await openDb();
  try {
    return await new Promise((resolve, reject) => {
      const tx = db.transaction(STORE, mode);
      const req = f(tx.objectStore(STORE));
      tx.oncomplete = () => resolve(req.result);
      tx.onerror = () => reject(tx.error);
    });
  } finally {
    db.close();
  }
}

/** Keep `data` (a label bitmap) as the draft of job `jobId`, painted on `version`. */
export async function saveDraft(jobId, version, dims, data) {
  const gz = await gzip(data);
  const rec = { job_id: jobId, version, dims: Array.from(dims), saved_at: new Date().toISOString(), data: gz };
  await run('readwrite', (s) => s.put(rec));
}

/** The job's draft {version, dims, saved_at, data: Uint8Array}, or null. */
export async function loadDraft(jobId) {
  const rec = await run('readonly', (s) => s.get(jobId));
  if (!rec) return null;
  const data = await maybeGunzip(rec.data);
  return { ...rec, data };
}

/** Forget the job's draft (saved, discarded, or restored and then saved). */
export async function dropDraft(jobId) {
  await run('readwrite', (s) => s.delete(jobId));
}

/**
 * The page's side of drafts: keep() a moment after each stroke, forget() once saved or
 * discarded, offer() a left-over draft in `bar` (its .what text, Restore / Discard buttons).
 * `current()` tells the open work: {jobId, version, dims, bitmap, dirty} (null without a job);
 * `onRestore(data)` puts a restored draft's labels on screen.
 */
export class DraftKeeper {
  constructor({ bar, current, onRestore, describe }) {
    this.bar = bar;
    this.current = current;
    this.onRestore = onRestore;
    this.describe = describe; // (draft, versionShown) -> the bar's sentence
    this.offered = null;
    this.timer = null;
    bar.querySelector('.restore').addEventListener('click', () => this.restore());
    bar.querySelector('.drop').addEventListener('click', () => this.forget());
  }

  setStatus(s) {
    document.body.dataset.draft = s;
  }

  hideOffer() {
    this.offered = null;
    this.bar.classList.add('hidden');
  }

  /** A moment after the last stroke, keep the unsaved edits as the job's draft. */
  keep() {
    clearTimeout(this.timer);
    this.hideOffer(); // new strokes replace a draft that was offered
    const at = this.current();
    if (!at) return;
    this.timer = setTimeout(() => {
      const now = this.current();
      if (!now || now.jobId !== at.jobId) return;
      const write = now.dirty ? saveDraft(now.jobId, now.version, now.dims, now.bitmap) : dropDraft(now.jobId);
      write.then(() => this.setStatus(now.dirty ? 'kept' : 'none')).catch((e) => console.warn('draft not kept', e));
    }, 800);
  }

  /** The edits were saved or discarded: no draft any more. */
  forget() {
    clearTimeout(this.timer);
    this.hideOffer();
    this.setStatus('none');
    const at = this.current();
    if (at) dropDraft(at.jobId).catch((e) => console.warn(e));
  }

  /** A draft left from an earlier visit (tab closed or reloaded unsaved): offer it back. */
  async offer() {
    this.hideOffer();
    const at = this.current();
    if (!at) return;
    let d = null;
    try {
      d = await loadDraft(at.jobId);
    } catch (e) {
      console.warn('drafts unavailable', e);
    }
    const now = this.current();
    if (!d || !now || now.jobId !== at.jobId) return;
    if (d.data.length !== now.bitmap.length || d.data.every((v, i) => v === now.bitmap[i])) {
      this.forget(); // another grid, or nothing the version shown lacks
      return;
    }
    this.bar.querySelector('.what').textContent = this.describe(d, now.version);
    this.bar.classList.remove('hidden');
    this.offered = d;
  }

  restore() {
    const d = this.offered;
    const now = this.current();
    this.hideOffer();
    if (d && now && d.job_id === now.jobId) this.onRestore(d.data);
  }
}
