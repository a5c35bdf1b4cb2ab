"""The weights-free ``classic`` engine: intensity models, spatial priors and morphology.

How it works (all sizes in millimetres, using the volume's spacing, so it behaves the same at
any resolution):

- **Intensity model.** On the prompted slice, foreground and background intensity densities
  are estimated (kernel-smoothed histograms of the denoised image): foreground from inside the
  box (refined GrabCut-style over a few iterations), background from a ring outside the box and
  the box's own background. The per-voxel evidence is the log-likelihood ratio, so bright, dark
  and mid-grey targets are handled alike, in CT and MR, without fixed windows. The denoising
  sigma is chosen per object from its contrast-to-noise ratio and size.
- **Slice segmentation.** Evidence plus spatial constraints (the box, ± points), thresholded,
  cleaned (holes filled, opening with a radius proportional to the target's size, closing) and
  reduced to the connected components consistent with the prompts. The box is tight around
  the target, so a result that spans less than ``tight_box`` of it (a dark core inside a
  brighter target, say) is replaced by the box's other tissue, with what it encloses, when
  that one does span the box. When the box result is two intensity classes and only one of
  them alone spans the box (``class_cover``), the other is a neighbour of another intensity
  that the box also held (the putamen beside the brighter pallidum): the spanning class is
  kept and the model refitted to it. A result that stops well short of a side of the box
  (``reach_gap``) takes back the target-like tissue connected to it that reaches that side:
  the cleaning's opening had cut a thin part of the target (a lung lobe's arm along the ribs).
  Tissue of the box that the ring around the box does not show, between the ring's and the
  result's intensities and connected to the result (``ring_novel``), is the target's too: a
  brain tumour's fainter oedema around its bright core, which the two-class rule above would
  otherwise read as a neighbour. Optionally (``edge_mid``, off), a target whose intensity
  the ring does not show (CSF in brain tissue) ends half-way between its intensity and the
  ring's, losing the partial-volume band, when most of it remains.
  A positive point alone starts an object by flooding
  intensity-similar tissue around it ("magic wand").
- **Propagation.** Slice by slice in both directions: the previous slice's mask gives a
  signed-distance prior and the search window (growth per slice bounded by a distance that
  scales with the slice spacing, and by an area growth rate); the intensity model is blended
  with one re-estimated on the previous slice (guarding against partial-volume voxels);
  components must continue the previous mask and look like the prompted target; growth of
  more than a voxel beyond the previous slice must be body, not a thin protrusion (it has to
  survive an opening whose radius is ``neck_open`` of the target's), which cuts leaks into
  touching tissue of the same intensity through a neck; propagation stops when the area
  collapses. The prompted slice shows the target at about its largest (the
  box convention), so a propagated slice may not exceed the anchor's area by more than
  ``area_cap`` (1.2: a fifth larger, for a box placed near, not on, the largest slice), and
  once the target has tapered below half of it, it may grow back by
  ``max_growth`` at most above its smallest area (a regrowth means the tracking has slid onto
  a neighbour of the same intensity); an oversized slice keeps its most confident voxels.
  The target must stay itself: a voxel whose intensity lies outside the key slice's range
  (its 2nd-98th percentiles, widened) is never taken, nor is the volume's padding (the exact
  minimum filling 5 % or more of it: the outside of a skull-stripped brain), unless the
  target's key slice shows that value itself (air clamped inside an airway); a part whose
  median intensity is not a typical one of the key slice (10th-90th percentiles) is dropped;
  and the object ends where its area falls below ``end_frac`` of the anchor's (in mm², so
  alike at 1 mm and at 7.5 mm slices): a thin track run on past the target's end costs far
  more than its missed tail. It also ends where its contour has lost the key slice's edge on
  two slices in a row (``support_min``: tracking sliding into tissue of its own intensity),
  and before a jump of the mask that then regrows (``jump_frac``: a neighbour replacing it).
- **Corrections.** A positive point grows an intensity-consistent connected region from the
  click (as far as the click is from the current mask), keeps the part of it nearer the click
  than every negative point of the slice, and adds it (on a slice where the object was
  absent and the object's model calls the click background, a local model of the click's
  tissue against the tissue around the object's scale takes the region, ``own_region``,
  unless the two overlap, ``own_overlap``, and also when the model's region is more than twice
  the local one's, ``local_empty``); a region that fills its window (most of the
  window's rim) where the local model finds no edge either is bounded by the window, not by
  the image, and is cut to the half window around the click (``window_fill``, ``reach``); a
  negative point on the mask's outermost layer (a one-voxel spurious rim) removes only that
  layer's voxels (``rim_cut``), and a positive point next to the mask adds only the layer
  along it (``rim_add``); a negative point removes
  the background-like part of the mask around it, or splits the mask with a random walker
  between the click and the mask far from it; when the tissue around the click differs from
  the object's (its intensity density overlaps the object's foreground density little,
  ``leak_overlap``), the connected part of the mask more likely under the click's density,
  no deeper than the click (``leak_depth``), goes with it (``leak``): a leak into tissue of
  another density is removed whole, not as a round hole; a click at the very middle of a
  component (where the user says "not this") removes the component. The points of a slice are
  replayed in the order given, each negative one acting as it did when it was given (a later
  positive click adds its own region; it never turns an earlier "not this" into a split
  that keeps the rejected part's far end). The change (added and removed
  voxels) is then carried to the neighbouring slices up to the neighbouring anchors, fading
  where it no longer applies, so a click never rewrites the whole object; a slice emptied by a
  click ends the object on the slices beyond it (away from every anchor). Corrections act in
  3D: away from every anchor a removal goes on as far as it applies (a leak that widens is
  removed whole) and an addition on a slice where the object had ended resumes the tracking
  there, until the tracked area falls under ``end_frac`` of the clicked slice's
  (``resume_end``) or its contour loses the clicked slice's edge (``resume_support``), and
  not across slices a jump ended; towards an anchor, a removed part goes on being removed on each slice whose
  touching component resembles the cut more than the anchor (overlap and mean intensity), so
  a negative click in the middle of a leak takes it back to where it began. A negative click
  that splits its slice (the target stays there) also splits what continues the removed
  part off the neighbouring slices: each voxel of the touching components goes with the
  nearer of the previous slice's removed and kept parts, within the slice-to-slice growth
  distance; towards an anchor that part may not grow and must be nearer the cut than the
  kept mask in mean intensity (``propagation.split_off``), so an in-plane leak beside the
  target goes over several slices, not only where it is re-tracked away. A negative click
  that empties its slice says the target ended between the anchor and there: it ends at the
  weakest link of the chain of masks in between (Dice in place times one minus the KS
  statistic of the intensities, where the mask after the link is more like the rejected slice
  than the anchor; ``ends``), and every slice past it is emptied at once, even where the
  run-on looks like the target (the next vertebra through the disc). A negative click that
  only trimmed its slice's rim (no removed voxel with all four neighbours removed) is not
  carried at all (``hold_rim``): the neighbouring slices' outline is their own. The clicked
  slice becomes an anchor.

Every computation works on a crop around the object, so a 512x512 slice costs little (under
1 s for a 512x512x20 CT liver with 5 clicks on a shared core).

Modules: ``options`` (the frozen :class:`ClassicOptions`), ``intensity`` (the intensity model),
``morphology`` (2D shape operations), ``context`` (image, spacing and per-object models),
``segment2d`` (one slice from prompts), ``leak`` (a negative click's leak), ``reach`` (how far
a click's change reaches when nothing in the image bounds it), ``ends`` (where a
target ends along z), ``propagation`` (slice to slice), ``session`` and ``engine``. Imports
numpy, scipy and scikit-image only; must not import torch, FastAPI, Celery or the CLI.
"""

from segloop.engines.classic.engine import ClassicEngine
from segloop.engines.classic.intensity import IntensityModel
from segloop.engines.classic.options import ClassicOptions
from segloop.engines.classic.session import ClassicSession

__all__ = ["ClassicEngine", "ClassicOptions", "ClassicSession", "IntensityModel"]
