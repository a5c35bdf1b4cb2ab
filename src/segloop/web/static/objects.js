// segloop viewer: per-object display and measurements (issue 15: objects, measure).
//
// Hide/show, lock, delete, opacity and the measurements of each object in the Objects list; one
// opacity slider (all objects) and an outline switch for the overlay. Display is NiiVue's
// drawing colour table: a hidden object gets alpha 0, an object's own opacity scales its alpha
// (the overlay slider scales them all); outline mode gives every object an almost transparent fill and a
// solid rim (NiiVue's drawRimOpacity). Lock is enforced by tools.js (strokes and edits never
// change a locked object). Delete clears the object's voxels as a new version (Undo brings them
// back). Measurements come from GET /api/v1/jobs/{id}/measurements of the version shown; while
// there are unsaved brush/eraser strokes they are computed in the browser from the painted
// bitmap (measure.js) and marked "unsaved", a moment after each stroke.
// Object names are offered from GET /api/v1/terminology (SNOMED CT structures): a name picked
// there gives the DICOM-SEG segment that code, shown under the object's name (the datalist only
// shows it while picking); the SEG's SeriesDescription is typed in Export.
// viewer.js calls the hooks of the object returned by createObjects(ctx).

import { measureBitmap } from './measure.js';

const $ = (sel) => document.querySelector(sel);

const VIEW_BAR = `
<label class="inline small" title="Overlay opacity (all objects; each object has its own slider too)">opacity <input id="overlay-opacity" type="range" min="0" max="100" value="60"></label>
<label class="inline small" title="Show objects as outlines (T)"><input type="checkbox" id="outline"> outline</label>`;

export const OBJECT_SHORTCUTS = [
  ['T', 'outline / filled overlay'],
  ['Shift+O', 'hide / show the current object'],
];

export function createObjects(ctx) {
  const { S, api } = ctx;
  const nv = () => ctx.nv();
  const view = {}; // object_id -> {hidden, locked, opacity (0..1)}
  let measures = {}; // label_value -> measurement of the saved version shown
  let unsaved = null; // label_value -> measurement of the unsaved bitmap, or null
  let measureTimer = null;

  const st = (id) => (view[id] = view[id] || { hidden: false, locked: false, opacity: 1 });

  function build() {
    const span = document.createElement('span');
    span.id = 'overlay-style';
    span.className = 'inline';
    span.innerHTML = VIEW_BAR;
    $('#show-overlay').closest('label').after(span);
    $('#overlay-opacity').addEventListener('input', applyOpacity);
    $('#outline').addEventListener('change', () => ctx.applyLut());
    const exp = $('#btn-download-seg').parentElement;
    const b = document.createElement('button');
    b.id = 'btn-download-measures';
    b.textContent = 'Measurements CSV';
    b.title = 'Per-object voxels, volume (mL) and extent of the current version, as CSV';
    b.addEventListener('click', () => downloadCsv().catch(ctx.fail));
    exp.appendChild(b);
    const desc = document.createElement('input');
    desc.type = 'text';
    desc.id = 'seg-description';
    desc.maxLength = 64;
    desc.placeholder = 'SEG series description';
    desc.title = 'SeriesDescription of the DICOM-SEG you download (64 characters at most)';
    exp.appendChild(desc);
    const dl = document.createElement('datalist');
    dl.id = 'structures';
    document.body.appendChild(dl);
  }

  /** The structure names (SNOMED CT meanings) offered when naming an object; once. */
  let termsLoaded = false;
  let terms = []; // the structures offered: {meaning, code, scheme, category, keyword}
  async function loadTerms() {
    if (termsLoaded) return;
    termsLoaded = true;
    terms = await api.getJSON('/api/v1/terminology?limit=200');
    const dl = $('#structures');
    for (const t of terms) {
      const o = document.createElement('option');
      o.value = t.meaning;
      o.label = `${t.category === 'Anatomical Structure' ? '' : `${t.category}: `}SCT ${t.code}`;
      dl.appendChild(o);
    }
    for (const li of document.querySelectorAll('#objects li')) {
      const o = S.objects.find((x) => x.object_id === Number(li.dataset.objectId));
      if (o) showCode(li, o);
    }
  }

  /** The offered structure an object's name means (its meaning or keyword, any case), as the
   * server matches it for the DICOM-SEG; null for a free name (the export guesses a code). */
  function structureOf(name) {
    const low = (name || '').trim().toLowerCase();
    return terms.find((t) => low && (t.meaning.toLowerCase() === low || t.keyword.toLowerCase() === low)) || null;
  }

  /** The line under an object's name with the code its DICOM-SEG segment gets (none: no line). */
  function showCode(li, o) {
    const t = structureOf(o.name);
    let el = li.querySelector('.obj-code');
    if (!t) {
      if (el) el.remove();
      return;
    }
    if (!el) {
      el = document.createElement('div');
      el.className = 'obj-code small muted mono';
      li.appendChild(el);
    }
    el.textContent = `${t.scheme || 'SCT'} ${t.code}`;
    el.title = `SNOMED CT ${t.code} “${t.meaning}” (${t.category}): the code of this object's DICOM-SEG segment`;
  }

  /** Query string for a DICOM-SEG download (its SeriesDescription). */
  function segQuery() {
    const d = $('#seg-description').value.trim();
    return d ? `&series_description=${encodeURIComponent(d)}` : '';
  }

  /** The overlay opacity chosen (0 when the overlay is switched off). */
  function opacity() {
    return $('#show-overlay').checked ? Number($('#overlay-opacity').value) / 100 : 0;
  }

  function applyOpacity() {
    if (nv()) nv().setDrawOpacity(opacity());
  }

  /** Alpha (0..255) of an object's colour-table entry. */
  function alpha(o) {
    const s = st(o.object_id);
    if (s.hidden) return 0;
    return $('#outline').checked ? 1 : Math.round(255 * s.opacity);
  }

  /** NiiVue's rim opacity: solid rims in outline mode, none otherwise. */
  function rim() {
    return $('#outline').checked ? 1 : -1;
  }

  function fmtMeasure(m, isUnsaved = false) {
    if (!m || !m.voxels) return isUnsaved ? 'empty (unsaved)' : 'empty (saved version)';
    const ext = m.extent_mm.map((e) => e.toFixed(0)).join('×');
    const line = `${m.volume_ml.toFixed(m.volume_ml < 10 ? 2 : 1)} mL · ${m.voxels} vox · ${ext} mm · ${m.slices} sl`;
    return isUnsaved ? `${line} · unsaved` : line;
  }

  /** Write the measurement lines: the unsaved bitmap's when there is one, else the version's. */
  function showMeasures() {
    const src = unsaved || measures;
    for (const el of document.querySelectorAll('#objects .measure')) {
      el.textContent = fmtMeasure(src[Number(el.dataset.labelValue)], Boolean(unsaved));
      el.classList.toggle('unsaved', Boolean(unsaved));
    }
  }

  /** The unsaved state changed (a stroke, an undone stroke, a save or a discard). */
  function onDirty(dirty) {
    clearTimeout(measureTimer);
    if (!dirty) {
      unsaved = null;
      showMeasures();
      return;
    }
    measureTimer = setTimeout(() => {
      const v = nv();
      if (!S.job || !S.dirty || !v || !v.drawBitmap) return;
      unsaved = measureBitmap(v.drawBitmap, S.dims, S.job.spacing);
      S.measures = unsaved;
      showMeasures();
      document.body.dataset.measured = String(Date.now());
    }, 250);
  }

  /** Extra controls and the measurement line of one row of the Objects list. */
  function decorate(li, o) {
    const s = st(o.object_id);
    const mk = (cls, text, title, on) => {
      const b = document.createElement('button');
      b.className = `tiny ghost ${cls}`;
      b.textContent = text;
      b.title = title;
      b.addEventListener('click', (e) => { e.stopPropagation(); Promise.resolve().then(on).catch(ctx.fail); });
      return b;
    };
    const eye = mk('obj-hide', s.hidden ? '◌' : '◉', s.hidden ? 'Show (Shift+O)' : 'Hide (Shift+O)', () => toggleHidden(o.object_id));
    const lock = mk(`obj-lock${s.locked ? ' active' : ''}`, s.locked ? 'locked' : 'lock', s.locked ? 'Locked: click to allow changes again' : 'Lock: brush, eraser and edits leave it alone', () => {
      s.locked = !s.locked;
      ctx.refreshObjects();
    });
    const del = mk('obj-delete', '✕', 'Delete: clear all its voxels (a new version; Undo brings them back)', async () => {
      if (!window.confirm(`Clear every voxel of “${o.name}”? (Undo brings them back.)`)) return;
      await ctx.edit({ op: 'clear-object', object_id: o.object_id }, `Deleted ${o.name}`);
    });
    const name = li.querySelector('input[type=text]');
    if (name) {
      name.setAttribute('list', 'structures');
      name.title = 'Name (Enter to save). Pick a structure from the list: its SNOMED CT code goes into the DICOM-SEG.';
    }
    li.classList.toggle('hidden-object', s.hidden);
    li.classList.toggle('locked-object', s.locked);
    li.append(eye, lock, del);
    const line = document.createElement('div');
    line.className = 'obj-line';
    const meas = document.createElement('span');
    meas.className = 'measure small muted mono';
    meas.dataset.labelValue = String(o.label_value);
    meas.textContent = fmtMeasure((unsaved || measures)[o.label_value], Boolean(unsaved));
    meas.classList.toggle('unsaved', Boolean(unsaved));
    const op = document.createElement('input');
    op.type = 'range';
    op.className = 'obj-opacity';
    op.min = '0';
    op.max = '100';
    op.value = String(Math.round(s.opacity * 100));
    op.title = `Opacity of ${o.name} (the overlay's opacity slider scales all objects)`;
    op.addEventListener('click', (e) => e.stopPropagation());
    op.addEventListener('input', () => {
      s.opacity = Number(op.value) / 100;
      ctx.applyLut();
    });
    line.append(meas, op);
    li.appendChild(line);
    showCode(li, o);
  }

  function toggleHidden(id) {
    st(id).hidden = !st(id).hidden;
    ctx.applyLut();
    ctx.refreshObjects();
  }

  async function refreshMeasures() {
    if (!S.job) return;
    loadTerms().catch((e) => { termsLoaded = false; console.warn(e); });
    const [job, version] = [S.job.job_id, S.version];
    const rows = await api.getJSON(api.jobUrl(job, `/measurements?version=${version}`));
    if (!S.job || S.job.job_id !== job || S.version !== version) return; // a later version's call wins
    measures = Object.fromEntries(rows.map((m) => [m.label_value, m]));
    if (!unsaved) S.measures = measures;
    showMeasures();
  }

  async function downloadCsv() {
    if (!S.job) return;
    if (S.dirty) await ctx.saveEdits();
    const name = await api.download(api.jobUrl(S.job.job_id, '/measurements?format=csv'), `${S.job.job_id}_measurements.csv`);
    ctx.message(`Downloaded ${name}`, 'ok');
  }

  function onKey(e) {
    if (e.ctrlKey || e.metaKey || e.altKey) return false;
    if (e.key === 't' || e.key === 'T') {
      const cb = $('#outline');
      cb.checked = !cb.checked;
      ctx.applyLut();
    } else if (e.key === 'O' && e.shiftKey) toggleHidden(S.currentObject);
    else return false;
    return true;
  }

  return {
    build, alpha, rim, opacity, applyOpacity, decorate, refreshMeasures, onKey, segQuery, onDirty,
    isLocked: (id) => st(id).locked,
    reset: () => { for (const k of Object.keys(view)) delete view[k]; measures = {}; unsaved = null; },
  };
}
