"""ISM: find a known object's instances in an RGB-D image from its CAD model (SAM-6D's ISM).

A leaf beside api/train/eval: imports segloop.models, io, config, errors and the service's auth
helpers, never jobs or api internals. Modules: ``mesh`` (PLY), ``poses`` (template views),
``render`` (templates), ``templates`` (loading, cache), ``proposals``/``classic`` (weights-free
backend), ``scoring`` (SAM-6D's scores + NMS), ``pipeline``, ``service`` (FastAPI, port 8002).
Nothing is imported or loaded here.
Must not import segloop.cli, segloop.protocols, segloop.api, segloop.worker, segloop.web,
segloop.train, segloop.eval (the layer contract, pyproject.toml).
"""

__all__: list[str] = []
