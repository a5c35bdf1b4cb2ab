// segloop viewer: the side panel's lists (split out of viewer.js, issue 15).
//
// Jobs, objects (name, colour, label value; objects.js adds hide/lock/delete), versions and
// engines, each read from the API and drawn into its list.

import * as api from './api.js';
import { applyLut, updateUndoRedo } from './mask.js';
import { review, switchJob } from './open.js';
import { S, fail, fmtTime, labelOf, message } from './state.js';
import { nv } from './view.js';
import { FILES, OBJ } from './viewer.js';

const $ = (sel) => document.querySelector(sel);
const $$ = (sel) => Array.from(document.querySelectorAll(sel));

// ------------------------------------------------------------------ lists: jobs, objects, versions, engines
export async function refreshJobs() {
  let jobs;
  try {
    jobs = await api.getJSON(api.jobs);
  } catch (e) {
    $('#jobs').innerHTML = '';
    const li = document.createElement('li');
    li.className = 'muted';
    li.textContent = e.status === 401 ? `${e.message} — click “Key” (top right) to enter it.` : e.message;
    $('#jobs').appendChild(li);
    if (e.status === 401) message('This server needs an API key: click “Key” (top right).', 'error');
    return;
  }
  const ul = $('#jobs');
  ul.innerHTML = '';
  if (!jobs.length) {
    const li = document.createElement('li');
    li.className = 'muted small';
    li.textContent = 'No jobs yet.';
    ul.appendChild(li);
  }
  for (const j of jobs) {
    const li = document.createElement('li');
    li.dataset.jobId = j.job_id;
    li.classList.toggle('current', S.job && S.job.job_id === j.job_id);
    li.title = `${j.job_id}\n${j.source_format}, ${j.modality || '?'}, ${j.shape.join('×')}, spacing ${j.spacing.map((s) => s.toFixed(2)).join('×')} mm`;
    const box = document.createElement('div');
    box.className = 'grow';
    const name = document.createElement('div');
    name.className = 'ellipsis';
    name.textContent = j.filename || j.job_id.slice(0, 8);
    const meta = document.createElement('div');
    meta.className = 'small muted';
    meta.textContent = `${j.modality || j.source_format} ${j.shape.join('×')} · v${j.current_version} · ${fmtTime(j.created)}`;
    box.append(name, meta);
    li.append(box);
    if (FILES) FILES.decorateJob(li, j);
    li.addEventListener('click', () => switchJob(j.job_id).catch(fail));
    ul.appendChild(li);
  }
}

export async function refreshObjects() {
  S.objects = await api.getJSON(api.jobUrl(S.job.job_id, '/objects'));
  renderObjects();
}

/** After any new version shown (a task, an edit, another tab, a MONAI Label client): objects
 * may have been added or renamed elsewhere; the list is rebuilt only when they differ (so a
 * name being typed in it is left alone otherwise). */
export async function syncObjects() {
  if (!S.job) return;
  const jobId = S.job.job_id;
  const objects = await api.getJSON(api.jobUrl(jobId, '/objects'));
  if (!S.job || S.job.job_id !== jobId || JSON.stringify(objects) === JSON.stringify(S.objects)) return;
  S.objects = objects;
  renderObjects();
}

function renderObjects() {
  if (!S.objects.some((o) => o.object_id === S.currentObject) && S.objects.length) {
    S.currentObject = S.objects[0].object_id;
  }
  applyLut();
  const ul = $('#objects');
  ul.innerHTML = '';
  for (const o of S.objects) {
    const li = document.createElement('li');
    li.dataset.objectId = String(o.object_id);
    li.classList.toggle('current', o.object_id === S.currentObject);
    const colour = document.createElement('input');
    colour.type = 'color';
    colour.value = o.colour.slice(0, 7);
    colour.title = 'Colour';
    colour.addEventListener('change', () => patchObject(o.object_id, { colour: colour.value }).catch(fail));
    const name = document.createElement('input');
    name.type = 'text';
    name.value = o.name;
    name.title = 'Name (Enter to save)';
    name.addEventListener('change', () => patchObject(o.object_id, { name: name.value }).catch(fail));
    const badge = document.createElement('span');
    badge.className = 'badge';
    badge.textContent = `label ${o.label_value}`;
    li.append(colour, name, badge);
    li.addEventListener('click', (e) => {
      if (e.target === li || e.target === badge) selectObject(o.object_id);
    });
    name.addEventListener('focus', () => selectObject(o.object_id, false));
    ul.appendChild(li);
    if (OBJ) OBJ.decorate(li, o);
  }
}

export function selectObject(id, rerender = true) {
  S.currentObject = id;
  $$('#objects li').forEach((li) => li.classList.toggle('current', Number(li.dataset.objectId) === id));
  if (S.tool === 'brush') nv.setPenValue(labelOf(id), false);
  if (rerender) message(`Object: ${(S.objects.find((o) => o.object_id === id) || {}).name || id}`);
}

async function patchObject(id, body) {
  await api.request('PATCH', api.jobUrl(S.job.job_id, `/objects/${id}`), { json: body });
  await refreshObjects();
}

export async function addObject() {
  if (!S.job) return;
  const o = await api.postJSON(api.jobUrl(S.job.job_id, '/objects'), {});
  S.currentObject = o.object_id;
  await refreshObjects();
  selectObject(o.object_id);
}

export async function refreshVersions() {
  if (!S.job) return;
  S.versions = await api.getJSON(api.jobUrl(S.job.job_id, '/versions'));
  const ul = $('#versions');
  ul.innerHTML = '';
  for (const v of [...S.versions].reverse()) {
    const li = document.createElement('li');
    li.classList.toggle('current', v.current);
    const t = document.createElement('span');
    t.className = 'grow';
    t.textContent = `v${v.version} · ${v.source}${v.engine ? ` · ${v.engine}` : ''} · ${v.author}`;
    t.title = `created ${v.created}${v.parent !== null ? `, from v${v.parent}` : ''}`;
    li.appendChild(t);
    if (v.reviewed) {
      const b = document.createElement('span');
      b.className = 'badge ok';
      b.textContent = `reviewed${v.reviewed_by ? ` by ${v.reviewed_by}` : ''}`;
      li.appendChild(b);
    }
    const time = document.createElement('span');
    time.className = 'muted';
    time.textContent = fmtTime(v.created);
    li.appendChild(time);
    ul.appendChild(li);
  }
  const cur = S.versions.find((v) => v.current);
  $('#btn-review').disabled = !cur;
  updateUndoRedo();
}

export async function loadEngines() {
  const sel = $('#engine');
  try {
    const r = await api.getJSON('/api/v1/system/engines');
    S.engines = r.engines;
    S.defaultEngine = r.default;
    S.unavailable = r.unavailable || {};
  } catch (e) {
    S.engines = [];
    S.unavailable = {};
  }
  sel.innerHTML = '';
  const def = document.createElement('option');
  def.value = '';
  def.textContent = `server default (${S.defaultEngine || 'auto'})`;
  sel.appendChild(def);
  for (const name of S.engines) {
    const o = document.createElement('option');
    o.value = name;
    const why = S.unavailable[name];
    // engines that cannot run on this server are listed, greyed out, with the reason as a tooltip
    o.textContent = why ? `${name} (not installed here)` : name;
    o.disabled = Boolean(why);
    if (why) o.title = why;
    sel.appendChild(o);
  }
  const saved = localStorage.getItem('segloop.engine');
  if (saved && S.engines.includes(saved) && !S.unavailable[saved]) sel.value = saved;
}
