// segloop viewer: the page's state and its small UI helpers (split out of viewer.js, issue 15).
//
// S is everything the page knows (window.segloop.state for tests and debugging); message,
// banner and setState write the status line; fail and userText turn an error into the words a
// web user reads. Knows nothing of NiiVue.

const $ = (sel) => document.querySelector(sel);
const $$ = (sel) => Array.from(document.querySelectorAll(sel));

export const VIEWS = { axial: 0, coronal: 1, sagittal: 2, multi: 3, render: 4 };
export const OVERLAY_OPACITY = 0.6;

/** Everything the page knows; exposed as window.segloop.state for debugging and tests. */
export const S = {
  job: null, // job record from the API
  dims: [0, 0, 0],
  objects: [],
  currentObject: 1,
  tool: 'navigate',
  view: 'axial',
  prompts: null, // {z, axis, box: [u0,v0,u1,v1] | null, points: [{x, y, label}]}: slice z of axis
  drag: null, // box being dragged: {z, axis, a: [u,v], b: [u,v]}
  version: 0, // mask version shown
  saved: null, // Uint8Array: labels of `version` (to revert unsaved edits)
  dirty: false, // brush/eraser edits not saved yet
  strokes: null, // StrokeHistory of the unsaved brush/eraser strokes
  navAxis: 2, // the axis keys and the slider step along (the view's, or the last 2D tile hovered)
  versions: [],
  engines: [],
  defaultEngine: '',
  tasks: {}, // task_id -> {kind, object_id, started}
  activeTask: null,
  ended: new Set(), // task ids whose done/failed/cancelled event has arrived
  es: null,
  esReady: null,
  lastEvent: null,
  eventCounts: {}, // SSE events received, by type
  paintedSlices: 0, // propagated slices painted before their version arrived
};


// ------------------------------------------------------------------ small UI helpers
export function message(text, kind = '') {
  const m = $('#message');
  m.textContent = text;
  m.className = kind;
  m.title = text;
}

export function banner(html) {
  const b = $('#banner');
  b.innerHTML = html;
  b.classList.toggle('hidden', !html);
}

export function setState(state, text) {
  const p = $('#state');
  p.dataset.state = state;
  p.textContent = text || state;
}

export function fail(err) {
  console.warn(err);
  message(userText(err && err.message ? err.message : String(err)), 'error');
  // a refused request (409: not now, e.g. nothing to undo) leaves the page as it was
  if (err && err.status === 409) setState(S.activeTask ? 'busy' : 'idle');
  else setState('error', 'error');
}

/** The server's wording made for a web user (it is written for API and CLI users). */
export function userText(text) {
  if (/POST initial-mask before propagate/.test(text)) {
    return 'This object has no mask yet: draw a box (B) or points (P) and segment a slice (S) first, then propagate.';
  }
  const m = /engine '([^']+)' cannot run here: (.*)/.exec(text);
  if (m) {
    const why = /weights/.test(m[2]) ? 'its model weights are not installed on this server' : 'it is not installed on this server';
    return `The engine ${m[1]} cannot run: ${why}. Pick another engine, or ask the server's administrator.`;
  }
  return text;
}

export const clamp = (v, lo, hi) => Math.max(lo, Math.min(hi, v));

export function hexToRgb(hex) {
  const h = (hex || '#ff0000').replace('#', '');
  return [0, 2, 4].map((i) => parseInt(h.slice(i, i + 2), 16));
}

export function labelOf(objectId) {
  const o = S.objects.find((x) => x.object_id === objectId);
  return o ? o.label_value : objectId;
}

export function fmtTime(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  return d.toLocaleString([], { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' });
}
