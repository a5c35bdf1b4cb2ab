// segloop viewer: keyboard shortcuts and the ? panel (split out of viewer.js, issue 15).

import { OBJECT_SHORTCUTS } from './objects.js';
import { TASK_KIND } from './tasks.js';
import { TOOL_SHORTCUTS } from './tools.js';
import { cyclePresets } from './wl.js';
import { addObject, selectObject } from './lists.js';
import { saveEdits } from './mask.js';
import { exportMask, undoRedo } from './open.js';
import { clearPrompts, setPenSize, setTool } from './prompts.js';
import { S, fail, message } from './state.js';
import { applyWindow, resetZoom, setSlice, setView, stepSlice, zoomBy } from './view.js';
import { OBJ, TASKS, TOOLS } from './viewer.js';

const $ = (sel) => document.querySelector(sel);

// ------------------------------------------------------------------ keyboard
const SHORTCUTS = [
  ['↑ / ↓, PgUp / PgDn, wheel', 'next / previous slice of the view shown (in Multi: of the tile last under the mouse); Shift: 5 slices'],
  ['Home / End', 'first / last slice'],
  ['1 2 3 4 5', 'axial, coronal, sagittal, 3D, multiplanar + 3D'],
  ['M', 'cycle the multiplanar layout'],
  ['W', 'cycle the window/level presets that fit the volume (CT presets on CT only); right- or Ctrl-drag: free window/level, double-click: reset'],
  ['+ / − / 0, Ctrl+wheel', 'zoom in / out / reset (middle- or Shift-drag pans)'],
  ['N', 'navigate tool (crosshair)'],
  ['B', 'box tool: drag a box on a slice of any plane (axial, coronal or sagittal tile)'],
  ['P', 'points tool: click +, Shift/right-click −, on any plane'],
  ['C', 'clear the prompt'],
  ['S', 'segment slice (2D mask from the prompt, on the prompt\'s plane)'],
  ['G', 'propagate through the volume, along the axis the object was drawn on'],
  ['R', 'refine from the prompt on this slice'],
  ['Esc', 'cancel the running task, else clear the prompt'],
  ['D / E', 'brush / eraser;  [ ]  brush size'],
  ['Ctrl+S', 'save brush edits as a new version'],
  ['Ctrl+Z / Ctrl+Y', 'undo / redo one brush/eraser stroke while edits are unsaved, else across mask versions (Ctrl+Shift+Z redoes too)'],
  ['A / Q', 'add an object / next object'],
  ['O', 'show / hide the overlay'],
  ['L', 'radiological / neurological convention'],
  ['Shift+D', 'download the mask (NIfTI, uploaded grid)'],
  ['? or H', 'this help'],
];

export function buildHelp() {
  const t = $('#help-table');
  for (const [k, what] of [...SHORTCUTS, ...TOOL_SHORTCUTS, ...OBJECT_SHORTCUTS]) {
    const tr = document.createElement('tr');
    const a = document.createElement('td');
    a.innerHTML = k.split(', ').map((x) => `<kbd>${x}</kbd>`).join(' ');
    const b = document.createElement('td');
    b.textContent = what;
    tr.append(a, b);
    t.appendChild(tr);
  }
}

export function onKey(e) {
  const tag = (e.target && e.target.tagName) || '';
  const typing = (tag === 'INPUT' && e.target.type !== 'range' && e.target.type !== 'checkbox') || tag === 'TEXTAREA' || tag === 'SELECT';
  if (typing && e.key !== 'Escape') return;
  if ($('#help').open || $('#key-dialog').open) return;
  if ((TOOLS && TOOLS.onKey(e)) || (OBJ && OBJ.onKey(e))) {
    e.preventDefault();
    e.stopPropagation();
    return;
  }
  const k = e.key;
  const ctrl = e.ctrlKey || e.metaKey;
  const run = (p) => Promise.resolve(p).catch(fail);
  let handled = true;
  const step = e.shiftKey ? 5 : 1;
  if (ctrl && (k === 's' || k === 'S')) { // like the Save button: only unsaved strokes make a version
    if (S.dirty) run(saveEdits());
    else message('Nothing to save: every task and edit is stored as a version already');
  } else if (ctrl && (k === 'z' || k === 'Z')) run(undoRedo(e.shiftKey ? 'redo' : 'undo'));
  else if (ctrl && (k === 'y' || k === 'Y')) run(undoRedo('redo'));
  else if (ctrl) handled = false;
  else if (k === 'ArrowUp' || k === 'PageUp' || k === 'ArrowRight') stepSlice(step);
  else if (k === 'ArrowDown' || k === 'PageDown' || k === 'ArrowLeft') stepSlice(-step);
  else if (k === 'Home') setSlice(0);
  else if (k === 'End') setSlice(S.dims[S.navAxis] - 1);
  else if (k === '1') setView('axial');
  else if (k === '2') setView('coronal');
  else if (k === '3') setView('sagittal');
  else if (k === '4') setView('render');
  else if (k === '5') setView('multi');
  else if (k === 'm' || k === 'M') {
    const sel = $('#layout-select');
    sel.selectedIndex = (sel.selectedIndex + 1) % sel.options.length;
    sel.dispatchEvent(new Event('change'));
  } else if (k === 'w' || k === 'W') {
    const sel = $('#wl-preset');
    const all = cyclePresets(sel);
    applyWindow(all[(all.indexOf(sel.value) + 1) % all.length]);
    message(`Window: ${sel.options[sel.selectedIndex].text}`);
  } else if (k === '+' || k === '=') zoomBy(1.2);
  else if (k === '-' || k === '_') zoomBy(1 / 1.2);
  else if (k === '0') resetZoom();
  else if (k === 'n' || k === 'N') setTool('navigate');
  else if (k === 'b' || k === 'B') setTool('box');
  else if (k === 'p' || k === 'P') setTool('points');
  else if (k === 'd' && !e.shiftKey) setTool('brush');
  else if (k === 'D' && e.shiftKey) run(exportMask('nii.gz'));
  else if (k === 'e' || k === 'E') setTool('eraser');
  else if (k === 'c' || k === 'C') clearPrompts();
  else if (k === 's' || k === 'S') run(TASKS.submit(TASK_KIND.INITIAL_MASK));
  else if (k === 'g' || k === 'G') run(TASKS.submit(TASK_KIND.PROPAGATE));
  else if (k === 'r' || k === 'R') run(TASKS.submit(TASK_KIND.REFINE));
  else if (k === 'Escape') {
    if (S.activeTask) run(TASKS.cancelTask());
    else clearPrompts();
  } else if (k === '[') setPenSize(Number($('#pen-size').value) - 1);
  else if (k === ']') setPenSize(Number($('#pen-size').value) + 1);
  else if (k === 'a' || k === 'A') run(addObject());
  else if (k === 'q' || k === 'Q') {
    if (S.objects.length) {
      const i = S.objects.findIndex((o) => o.object_id === S.currentObject);
      selectObject(S.objects[(i + 1) % S.objects.length].object_id);
    }
  } else if (k === 'o' || k === 'O') {
    const cb = $('#show-overlay');
    cb.checked = !cb.checked;
    cb.dispatchEvent(new Event('change'));
  } else if (k === 'l' || k === 'L') {
    const cb = $('#radiological');
    cb.checked = !cb.checked;
    cb.dispatchEvent(new Event('change'));
  } else if (k === '?' || k === 'h' || k === 'H') $('#help').showModal();
  else handled = false;
  if (handled) {
    e.preventDefault();
    e.stopPropagation();
  } else if (e.target === $('#gl')) {
    e.stopPropagation(); // NiiVue's own canvas keys (drag modes, 3D turns, version alert) stay off
  }
}
