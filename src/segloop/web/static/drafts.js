// Drafts: unsaved brush/eraser edits autosaved on the server until they are saved (issue 15).
//
// A moment after each stroke the viewer sends the whole label bitmap (gzip NIfTI, canonical
// grid) to PUT /api/v1/jobs/{id}/draft?base_version=N. A draft is not a version: the history,
// undo/redo and exports never see it. It is offered back (Restore / Discard bar) whenever the
// job is opened again, in this browser or any other (GET .../draft, .../draft/mask); saving the
// edits makes them a normal version and deletes the draft, discarding deletes it. When the
// server cannot be reached the draft is kept in this browser's IndexedDB instead, and offered
// back from there. DraftKeeper is the page's side (when to write, the bar). Knows nothing of
// NiiVue; viewer.js gives it the open work and an encoder.

import { gzip, maybeGunzip, readLabelNifti } from './nifti.js';
import * as api from './api.js';

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

/** Keep `data` (a label bitmap) in this browser as the draft of job `jobId`, painted on `version`. */
export async function saveLocalDraft(jobId, version, dims, data) {
  const gz = await gzip(data);
  const rec = { job_id: jobId, version, dims: Array.from(dims), saved_at: new Date().toISOString(), data: gz };
  await run('readwrite', (s) => s.put(rec));
}

/** The job's draft kept in this browser {version, dims, saved_at, data: Uint8Array}, or null. */
export async function loadLocalDraft(jobId) {
  const rec = await run('readonly', (s) => s.get(jobId));
  if (!rec) return null;
  const data = await maybeGunzip(rec.data);
  return { ...rec, data };
}

/** Forget the job's draft kept in this browser. */
export async function dropLocalDraft(jobId) {
  await run('readwrite', (s) => s.delete(jobId));
}

/** Keep the label map `nii` (NIfTI bytes) on the server as the job's draft, painted on `version`. */
export async function putServerDraft(jobId, version, nii) {
  const body = await gzip(nii);
  return (await api.request('PUT', api.jobUrl(jobId, `/draft?base_version=${version}`), {
    body, headers: { 'Content-Type': 'application/octet-stream' },
  })).json();
}

/** The job's draft on the server {version, saved_at, author, data: Uint8Array}, or null. */
export async function loadServerDraft(jobId) {
  let info;
  try {
    info = await api.getJSON(api.jobUrl(jobId, '/draft'));
  } catch (e) {
    if (e.status === 404) return null;
    throw e;
  }
  const resp = await api.request('GET', api.jobUrl(jobId, '/draft/mask'));
  const nii = await readLabelNifti(await resp.arrayBuffer());
  return { job_id: jobId, version: info.base_version, saved_at: info.saved_at, author: info.author, data: nii.data, where: 'server' };
}

/** Delete the job's draft on the server and in this browser. */
export async function dropDraft(jobId) {
  await Promise.allSettled([
    api.request('DELETE', api.jobUrl(jobId, '/draft')),
    dropLocalDraft(jobId),
  ]);
}

/** Keep the open work as the job's draft: on the server, else (unreachable) in this browser;
 * 'server' or 'local'. */
export async function saveDraft(now) {
  try {
    await putServerDraft(now.jobId, now.version, now.encode());
    return 'server';
  } catch (e) {
    if (e.status && e.status < 500) throw e; // refused (too large, not allowed): say so
    await saveLocalDraft(now.jobId, now.version, now.dims, now.bitmap);
    return 'local';
  }
}

/** The job's draft: the server's, else one kept in this browser; null when there is none. */
export async function loadDraft(jobId) {
  let d = null;
  try {
    d = await loadServerDraft(jobId);
  } catch (e) {
    console.warn('server drafts unavailable', e);
  }
  if (d) return d;
  const local = await loadLocalDraft(jobId).catch(() => null);
  return local ? { ...local, where: 'local' } : null;
}

/**
 * The page's side of drafts: keep() a moment after each stroke, forget() once saved or
 * discarded, offer() a left-over draft in `bar` (its .what text, Restore / Discard buttons).
 * `current()` tells the open work: {jobId, version, dims, bitmap, dirty, encode} (null without a
 * job; encode() gives the bitmap as NIfTI bytes on the volume's grid);
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
    this.gen = 0;
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
    this.setStatus('pending'); // body[data-draft]: pending -> kept (or failed)
    const gen = ++this.gen; // a write finishing after a newer stroke does not say "kept"
    this.timer = setTimeout(() => {
      const now = this.current();
      if (!now || now.jobId !== at.jobId) return;
      const write = now.dirty ? saveDraft(now) : dropDraft(now.jobId).then(() => 'none');
      write.then((where) => { if (gen === this.gen) this.setStatus(where === 'none' ? 'none' : 'kept'); })
        .catch((e) => { if (gen === this.gen) this.setStatus('failed'); console.warn('draft not kept', e); });
    }, 800);
  }

  /** The edits were saved or discarded: no draft any more. */
  forget() {
    clearTimeout(this.timer);
    this.gen += 1;
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
