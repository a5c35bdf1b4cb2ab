// Drafts: unsaved brush/eraser edits kept in this browser (IndexedDB) until they are saved.
//
// The viewer writes the whole label bitmap (gzip-compressed) a moment after each stroke, and
// drops the draft when the edits are saved or discarded. A draft left behind (the tab was closed,
// reloaded or crashed) is offered back when its job is opened again. One draft per job:
// {job_id, version it was painted on, saved_at, dims, data (gzip)}. Knows nothing of NiiVue.

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
