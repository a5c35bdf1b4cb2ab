"""Mask editing: operations on a label map that an annotator applies to a job's mask.

- ``regions``: slice ranges and connected regions (clear an object from a slice on, keep it
  inside a propagation range, remove the region a click lands in, remove small islands).
- ``shape``: smoothing and filling between sparse slices (shape-based interpolation).
- ``measure``: per-object voxel count, volume (mL) and extent.

Every operation takes a canonical ``(X, Y, Z)`` uint8 label map and the label value of one
object, returns a new label map (the input is never changed) and touches no other object.
The API exposes them as new mask versions (so undo works); the job runner uses ``regions`` to
keep a propagation inside its slice range.

Layer: below jobs and api (which import it); above engines, models and io. Must not import
jobs, api, worker, engines, torch or the web UI. Nothing is imported here.
"""

__all__: list[str] = []
