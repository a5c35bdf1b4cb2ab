// Window/level presets: which ones fit the open volume, which one the current window matches.
//
// The preset menu's options carry their window as "W,L" (CT Hounsfield presets are marked
// data-ct and are offered for CT only), "auto" (NiiVue's robust range) or "full" (the volume's
// whole range). A window set by dragging matches no preset and shows as "custom".
// Knows nothing of the rest of the page.

export const CUSTOM = 'custom';

/** [lo, hi] of a preset value for a NiiVue volume (cal_min / cal_max it stands for). */
export function windowOf(value, vol) {
  if (value === 'auto') return [vol.robust_min, vol.robust_max];
  if (value === 'full') return [vol.global_min, vol.global_max];
  const [w, l] = value.split(',').map(Number);
  return [l - w / 2, l + w / 2];
}

/** Show the CT presets for CT volumes only; the others keep Auto / Full range. */
export function offerPresets(select, isCT) {
  for (const o of select.options) {
    if (o.dataset.ct !== undefined) {
      o.hidden = !isCT;
      o.disabled = !isCT;
    }
  }
}

/** The presets W cycles through: the offered ones, never "custom". */
export function cyclePresets(select) {
  return Array.from(select.options).filter((o) => !o.disabled && o.value !== CUSTOM).map((o) => o.value);
}

/** The offered preset whose window is the volume's current one, else CUSTOM. */
export function matchingPreset(select, vol) {
  const tol = Math.max(1e-3, Math.abs(vol.global_max - vol.global_min) * 1e-4);
  for (const value of cyclePresets(select)) {
    const [lo, hi] = windowOf(value, vol);
    if (Math.abs(lo - vol.cal_min) <= tol && Math.abs(hi - vol.cal_max) <= tol) return value;
  }
  return CUSTOM;
}
