// segloop viewer: tasks and their events (split out of viewer.js, issue 15).
//
// The server's words for tasks and their events (segloop.jobs.states: TaskKind, TaskState,
// EventType; tests/jobs/test_states.py checks that these objects list the same values), the
// job's event stream (SSE: progress, slices painted as a propagation goes, done/failed), the
// progress bar, and submitting or cancelling a task. A task's done/failed/cancelled event may
// come before the POST that started it returns: it is over then (S.ended). viewer.js calls
// the functions returned by createTasks(ctx); ctx gives the page's state and what a task's
// events change on the page (versions, the mask, messages).

import * as api from './api.js';
import { PLANE_NAME } from './planes.js';

const $ = (sel) => document.querySelector(sel);

export const TASK_KIND = Object.freeze({ INITIAL_MASK: 'initial-mask', PROPAGATE: 'propagate', REFINE: 'refine', SEGMENT: 'segment' });
export const TASK_STATE = Object.freeze({
  QUEUED: 'queued', RUNNING: 'running', SUCCEEDED: 'succeeded', FAILED: 'failed', CANCELLED: 'cancelled',
});
export const EVENT_TYPE = Object.freeze({
  STATUS: 'status', QUEUED: 'queued', STARTED: 'started', PROGRESS: 'progress', RECOVERING: 'recovering',
  DONE: 'done', FAILED: 'failed', CANCELLED: 'cancelled', VERSION: 'version',
});

export function createTasks(ctx) {
  const { S } = ctx;

  function openEvents(jobId) {
    if (S.es) S.es.close();
    const es = new EventSource(api.withKey(api.jobUrl(jobId, '/events')));
    S.es = es;
    S.esReady = new Promise((resolve) => {
      es.addEventListener('open', () => resolve(), { once: true });
      setTimeout(resolve, 3000);
    });
    // event types this viewer knows; the server may add others: they are ignored
    for (const type of Object.values(EVENT_TYPE)) {
      es.addEventListener(type, (m) => {
        if (S.es !== es) return;
        let ev;
        try { ev = JSON.parse(m.data); } catch (e) { return; }
        onEvent(type, ev).catch(ctx.fail);
      });
    }
  }

  function showProgress(show) {
    $('#progress').classList.toggle('hidden', !show);
    $('#btn-cancel').disabled = !show;
  }

  function setProgress(ev) {
    const frac = ev.progress || 0;
    $('#progress-fill').style.width = `${Math.round(frac * 100)}%`;
    const parts = [];
    if (ev.stage) parts.push(ev.stage);
    if (ev.slices_total) parts.push(`${ev.slices_done}/${ev.slices_total} slices`);
    if (ev.eta_seconds !== null && ev.eta_seconds !== undefined && ev.slices_done < ev.slices_total) {
      parts.push(`ETA ${ev.eta_seconds < 1 ? '<1' : Math.round(ev.eta_seconds)} s`);
    }
    $('#progress-text').textContent = parts.join(' · ');
  }

  async function onEvent(type, ev) {
    S.lastEvent = { type, ...ev };
    S.eventCounts[type] = (S.eventCounts[type] || 0) + 1;
    if (!S.job || ev.job_id !== S.job.job_id) return;
    const ends = type === EVENT_TYPE.DONE || type === EVENT_TYPE.FAILED || type === EVENT_TYPE.CANCELLED;
    if (ends && ev.task_id) S.ended.add(ev.task_id);
    if (!ends && ev.task_id && S.ended.has(ev.task_id)) return; // a late event of a finished task
    await handleEvent(type, ev);
    ctx.updateUndoRedo();
  }

  async function handleEvent(type, ev) {
    const mine = ev.task_id && S.tasks[ev.task_id];
    switch (type) {
      case 'status': {
        if (ev.task && (ev.state === TASK_STATE.RUNNING || ev.state === TASK_STATE.QUEUED)) {
          S.tasks[ev.task.task_id] = S.tasks[ev.task.task_id] || { kind: ev.task.kind, object_id: ev.task.params?.object_id || 1 };
          S.activeTask = ev.task.task_id;
          showProgress(true);
          setProgress(ev);
          ctx.setState('busy', ev.task.kind);
        }
        break;
      }
      case 'queued':
      case 'started':
        if (!mine && !S.activeTask) {
          S.tasks[ev.task_id] = { kind: ev.kind, object_id: ev.params?.object_id || 1 };
        }
        S.activeTask = ev.task_id;
        showProgress(true);
        setProgress({ stage: type === 'queued' ? 'queued' : (ev.stage || 'starting'), progress: 0 });
        ctx.setState('busy', ev.kind || 'working');
        break;
      case 'progress':
        showProgress(true);
        setProgress(ev);
        if (ev.masks) { // slice masks since the previous event: the mask grows through the volume
          const t = S.tasks[ev.task_id];
          const oid = ev.object_id || (t && t.object_id) || 1;
          const axis = Math.max(0, PLANE_NAME.indexOf(ev.axis || 'axial'));
          for (const [z, runs] of Object.entries(ev.masks)) ctx.paintSlice(Number(z), runs, oid, axis);
        }
        break;
      case 'done': {
        const t = S.tasks[ev.task_id] || {};
        if (ev.version) await ctx.loadVersion(ev.version);
        setProgress({ ...ev, stage: 'done', progress: 1 });
        if (ev.task_id === S.activeTask) S.activeTask = null;
        setTimeout(() => { if (!S.activeTask) showProgress(false); }, 800);
        const secs = t.started ? ` in ${((performance.now() - t.started) / 1000).toFixed(1)} s` : '';
        const engine = ev.params && ev.params.engine ? ` (${ev.params.engine})` : '';
        ctx.message(`${ev.kind} done${secs} → version ${ev.version}${engine}`, 'ok');
        if (ev.kind === TASK_KIND.INITIAL_MASK || ev.kind === TASK_KIND.REFINE) ctx.clearPrompts();
        ctx.setState('idle');
        await ctx.refreshVersions();
        ctx.refreshJobs();
        break;
      }
      case 'failed':
      case 'cancelled':
        if (ev.task_id === S.activeTask) S.activeTask = null;
        showProgress(false);
        await ctx.loadVersion(S.version); // drop slices painted by an unfinished propagation
        if (type === 'failed') {
          ctx.message(`${ev.kind || 'task'} failed: ${ctx.userText(ev.error || 'unknown error')}`, 'error');
          ctx.setState('error', 'failed');
        } else {
          ctx.message(`${ev.kind || 'task'} cancelled`);
          ctx.setState('idle');
        }
        break;
      case 'recovering': // the worker running this task was lost; it is queued again
        showProgress(true);
        setProgress({ stage: `recovering (attempt ${(ev.attempts || 0) + 1})`, progress: 0 });
        await ctx.loadVersion(S.version); // drop slices painted by the lost attempt
        ctx.message(`${ev.kind || 'task'}: worker lost, running it again`);
        ctx.setState('busy', 'recovering');
        break;
      case 'version':
        if (ev.version !== S.version && !S.dirty && !S.activeTask) await ctx.loadVersion(ev.version);
        else await ctx.syncObjects(); // not shown yet (unsaved strokes, a task running): the list still follows
        await ctx.refreshVersions();
        break;
      default:
        break;
    }
  }

  async function submit(kind) {
    if (!S.job) throw new Error('Open a volume first: drop a file or pick an earlier job.');
    const body = { object_id: S.currentObject };
    const engine = $('#engine').value;
    if (engine) body.engine = engine;
    if (ctx.tools() && kind === TASK_KIND.REFINE && ctx.tools().negativeOnly(S.prompts)) return ctx.tools().removeAtPoints(S.prompts);
    if (ctx.tools() && kind !== TASK_KIND.INITIAL_MASK) Object.assign(body, ctx.tools().rangeParams());
    if (kind === TASK_KIND.INITIAL_MASK || kind === TASK_KIND.REFINE) {
      const p = S.prompts;
      if (!p || (!p.box && !p.points.length)) {
        throw new Error('Draw a box (B) or click points (P) on a slice first.');
      }
      body.slice_index = p.z;
      body.axis = PLANE_NAME[p.axis ?? 2];
      if (p.box) body.box = p.box;
      if (p.points.length) {
        body.points = p.points.map((q) => [q.x, q.y]);
        body.point_labels = p.points.map((q) => q.label);
      }
    }
    if (S.dirty) await ctx.saveEdits();
    await S.esReady;
    const started = performance.now();
    const jobId = S.job.job_id;
    const t = await api.postJSON(api.jobUrl(jobId, `/${kind}`), body);
    S.tasks[t.task_id] = { ...(S.tasks[t.task_id] || {}), kind, object_id: body.object_id, started };
    // the task's done/failed event may have come before this answer: it is over then
    if (S.ended.has(t.task_id) || !S.job || S.job.job_id !== jobId) return t;
    S.activeTask = t.task_id;
    showProgress(true);
    setProgress({ stage: 'queued', progress: 0 });
    ctx.setState('busy', kind);
    ctx.message(`${kind} submitted`);
    ctx.updateUndoRedo();
    return t;
  }

  async function cancelTask() {
    if (!S.job || !S.activeTask) return;
    const q = `?task_id=${encodeURIComponent(S.activeTask)}`;
    await api.postJSON(api.jobUrl(S.job.job_id, `/cancel${q}`));
    ctx.message('Cancelling…');
  }

  return { openEvents, showProgress, submit, cancelTask };
}
