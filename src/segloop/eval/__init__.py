"""Evaluation: the interactive protocol, metrics (Dice, NSD, HD95) and reports.

- ``protocol``: box on the key slice, propagation, simulated corrective clicks (one case).
- ``metrics``: Dice, IoU, NSD, HD95 in mm on boolean arrays (numpy/scipy only).
- manifests are read with ``segloop.datastore.manifest`` (the datastore owns the format).
- ``runner``: every case x every engine x every click -> scored records (``evaluate``).
- ``report``: CSV, markdown/JSON summaries, plots and overlays (``write_report``).
- ``memory``: the peak-memory probe used by the runner.

A leaf layer: imports io and engines, never the API, worker or CLI, never torch. Nothing is
imported here so that ``segloop.eval.metrics`` stays cheap to import.
Must not import segloop.cli, segloop.protocols, segloop.api, segloop.worker, segloop.web,
segloop.ism, segloop.train (the layer contract, pyproject.toml).
"""

__all__: list[str] = []
