// Unsaved work: ask before it is lost (another job, another file, closing or reloading the tab).
//
// askUnsaved() shows the page's own dialog (#unsaved-dialog: Save / Discard / Stay) and resolves
// to what was chosen; Esc or closing it means "stay". guardUnload() makes the browser ask before
// the tab is closed or reloaded while isDirty() is true. Knows nothing of NiiVue or the API.

/** 'save' | 'discard' | 'stay': what the user chose in the unsaved-edits dialog. */
export function askUnsaved(dialog, what) {
  dialog.querySelector('.what').textContent = what;
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => {
      const v = dialog.returnValue;
      resolve(v === 'save' || v === 'discard' ? v : 'stay');
    }, { once: true });
    dialog.returnValue = '';
    dialog.showModal();
  });
}

/** Ask the browser to confirm closing / reloading the page while isDirty(). */
export function guardUnload(isDirty) {
  window.addEventListener('beforeunload', (e) => {
    if (!isDirty()) return;
    e.preventDefault();
    e.returnValue = ''; // older browsers need a value set to show their prompt
  });
}
