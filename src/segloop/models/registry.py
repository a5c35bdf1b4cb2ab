"""The model registry: which checkpoints segloop knows, where they come from, how to check them.

Each :class:`ModelSpec` names one checkpoint (its Hugging Face repo and file, or a plain URL),
its expected size and SHA-256 when published, its licence and the ``Sam2VideoConfig`` it needs.
Built-in entries cover MedSAM2 (``wanglab/MedSAM2``, hiera-tiny at 512 px) and SAM 2.1
(``facebook/sam2.1-hiera-*``, 1024 px); :func:`register_model` adds more at run time (tests,
fine-tuned models). Pure Python: must not import torch or transformers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from segloop.errors import SegloopError
from segloop.models.configs import build_config
from segloop.models.sam_v1 import sam_vit_b_config

__all__ = [
    "DEFAULT_HF_ENDPOINT",
    "MEDSAM2_VARIANTS",
    "ModelSpec",
    "get_spec",
    "hf_endpoint",
    "model_names",
    "register_model",
    "unregister_model",
]

DEFAULT_HF_ENDPOINT = "https://huggingface.co"

#: MedSAM2 checkpoints published in ``wanglab/MedSAM2`` (the first is the default)
MEDSAM2_VARIANTS: tuple[str, ...] = (
    "MedSAM2_latest", "MedSAM2_2411", "MedSAM2_CTLesion", "MedSAM2_MRI_LiverLesion",
    "MedSAM2_US_Heart",
)


@dataclass(frozen=True)
class ModelSpec:
    """One downloadable checkpoint.

    name: registry name (cache folder name). aliases: other names accepted on the command line.
    hf_repo / hf_filename: the Hugging Face repo and file (downloaded from
    ``{endpoint}/{repo}/resolve/{revision}/{file}``); url: a direct URL used instead when set.
    size / sha256: expected bytes and hex digest, or None when not published (then recorded
    on first download and checked from then on). file_format: ``"original"`` (a ``.pt`` with
    ``{"model": state_dict}``). config: ``Sam2VideoConfig`` keyword arguments.
    """

    name: str
    description: str
    config: dict[str, Any]
    licence: str
    hf_repo: str | None = None
    hf_filename: str | None = None
    revision: str = "main"
    url: str | None = None
    size: int | None = None
    sha256: str | None = None
    file_format: str = "original"
    aliases: tuple[str, ...] = ()
    engine: str = "medsam2"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def image_size(self) -> int:
        """Model input size in pixels (square)."""
        v = self.config.get("image_size", 1024)
        return int(v[0] if isinstance(v, list | tuple) else v)

    def source_url(self, endpoint: str | None = None) -> str:
        """The URL the checkpoint is downloaded from (hub endpoint resolved from the environment)."""
        if self.url:
            return self.url
        if not (self.hf_repo and self.hf_filename):
            raise SegloopError(
                f"model {self.name!r} has no download source: import it with"
                f" `segloop models import FILE --as {self.name}`"
            )
        base = (endpoint or hf_endpoint()).rstrip("/")
        return f"{base}/{self.hf_repo}/resolve/{self.revision}/{self.hf_filename}"

    def source_text(self) -> str:
        """Where the checkpoint comes from, for listings."""
        if self.url:
            return self.url
        if self.hf_repo:
            return f"hf://{self.hf_repo}/{self.hf_filename}"
        return "(import only)"


def hf_endpoint() -> str:
    """The Hugging Face endpoint: ``SEGLOOP_HF_ENDPOINT``, else ``HF_ENDPOINT``, else huggingface.co."""
    return (os.environ.get("SEGLOOP_HF_ENDPOINT") or os.environ.get("HF_ENDPOINT")
            or DEFAULT_HF_ENDPOINT)


def _builtin() -> dict[str, ModelSpec]:
    specs: list[ModelSpec] = []
    for i, v in enumerate(MEDSAM2_VARIANTS):
        specs.append(ModelSpec(
            name=v,
            description=f"MedSAM2 {v.removeprefix('MedSAM2_')} (SAM 2.1 hiera-tiny fine-tuned, 512 px)",
            config=build_config("tiny", 512),
            licence="CC-BY-SA-4.0",
            hf_repo="wanglab/MedSAM2",
            hf_filename=f"{v}.pt",
            aliases=("medsam2",) if i == 0 else (),
            engine="medsam2",
        ))
    sam21 = {
        "tiny": ("sam2.1_hiera_tiny.pt", 156008466,
                 "7402e0d864fa82708a20fbd15bc84245c2f26dff0eb43a4b5b93452deb34be69"),
        "small": ("sam2.1_hiera_small.pt", 184416285,
                  "6d1aa6f30de5c92224f8172114de081d104bbd23dd9dc5c58996f0cad5dc4d38"),
        "base-plus": ("sam2.1_hiera_base_plus.pt", 323606802,
                      "a2345aede8715ab1d5d31b4a509fb160c5a4af1970f199d9054ccfb746c004c5"),
        "large": ("sam2.1_hiera_large.pt", 898083611,
                  "2647878d5dfa5098f2f8649825738a9345572bae2d4350a2468587ece47dd318"),
    }
    for size, (fname, nbytes, sha) in sam21.items():
        specs.append(ModelSpec(
            name=f"sam2.1-{size}",
            description=f"SAM 2.1 hiera-{size} (Meta, 1024 px)",
            config=build_config(size, 1024),
            licence="Apache-2.0",
            hf_repo=f"facebook/sam2.1-hiera-{size}",
            hf_filename=fname,
            size=nbytes,
            sha256=sha,
            engine=f"sam2.1-{size}",
        ))
    specs.append(ModelSpec(  # bowang-lab/MedSAM: published on Google Drive only, so import-only
        name="medsam-vit-b", description="MedSAM v1 (SAM ViT-B fine-tuned, 1024 px, box prompts)",
        config=sam_vit_b_config(), licence="Apache-2.0", aliases=("medsam", "medsam_vit_b"),
        engine="medsam", extra={"file": "medsam_vit_b.pth", "layout": "segment_anything"},
    ))
    specs.append(ModelSpec(
        name="medsam-vit-base", description="MedSAM v1 in transformers format (SamModel, 1024 px)",
        config=sam_vit_b_config(), licence="Apache-2.0", hf_repo="flaviagiammarino/medsam-vit-base",
        hf_filename="pytorch_model.bin",
        sha256="b80a96478503f89e76f1f7bbba50cfcd4ec9e7467f0d5185310216b33946ec9c",
        engine="medsam", extra={"layout": "transformers"},
    ))
    return {s.name: s for s in specs}


_REGISTRY: dict[str, ModelSpec] | None = None


def _registry() -> dict[str, ModelSpec]:
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = _builtin()
    return _REGISTRY


def register_model(spec: ModelSpec) -> None:
    """Add (or replace) a model entry for this process."""
    _registry()[spec.name] = spec


def unregister_model(name: str) -> None:
    """Remove a run-time entry (no error when absent)."""
    _registry().pop(name, None)


def model_names() -> list[str]:
    """Registry names in registration order."""
    return list(_registry())


def get_spec(name: str) -> ModelSpec:
    """The entry called ``name`` or one of its aliases (case-insensitive); SegloopError if none."""
    reg = _registry()
    if name in reg:
        return reg[name]
    low = name.lower()
    for spec in reg.values():
        if spec.name.lower() == low or low in (a.lower() for a in spec.aliases):
            return spec
    if "@" in name:  # a fine-tuned run cached by another process (segloop train)
        from segloop.models.versions import saved_run_specs

        for spec in saved_run_specs():
            if spec.name.lower() == low:
                register_model(spec)
                return spec
    raise SegloopError(f"unknown model {name!r}; known models: {', '.join(reg)}")
