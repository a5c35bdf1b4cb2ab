"""The model registry: which checkpoints segloop knows, where they come from, how to check them.

Each :class:`ModelSpec` names one checkpoint (its Hugging Face repo and file, or a plain URL),
its expected size and SHA-256 when published, its licence and the ``Sam2VideoConfig`` it needs.
Built-in entries cover MedSAM2 (``wanglab/MedSAM2``, hiera-tiny at 512 px) and SAM 2.1
(``facebook/sam2.1-hiera-*``, 1024 px); :func:`register_model` adds more at run time (tests,
fine-tuned models). ``ModelSpec`` (in :mod:`segloop.models.spec`) and ``hf_endpoint`` (in
:mod:`segloop.models.hub`) are re-exported here. Pure Python: must not import torch,
transformers, or the store and versions modules (they import this one).
"""

from __future__ import annotations

from typing import Any

from segloop.errors import SegloopError
from segloop.models.configs import build_config, sam_vit_b_config
from segloop.models.hub import DEFAULT_HF_ENDPOINT, hf_endpoint
from segloop.models.naming import parse_model_version
from segloop.models.runs import saved_run_specs
from segloop.models.spec import ModelSpec

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

#: MedSAM2 checkpoints published in ``wanglab/MedSAM2`` (the first is the default)
MEDSAM2_VARIANTS: tuple[str, ...] = (
    "MedSAM2_latest", "MedSAM2_2411", "MedSAM2_CTLesion", "MedSAM2_MRI_LiverLesion",
    "MedSAM2_US_Heart",
)


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
    # SAM-6D's ISM (segloop.ism, `segmentor_model: sam`): transformers-format weights
    ism: dict[str, tuple[str, str, dict[str, Any]]] = {
        "sam-vit-h": ("facebook/sam-vit-huge", "SAM ViT-H (Meta, 1024 px; ~2.56 GB)",
                      {"vision_config": {"hidden_size": 1280, "num_hidden_layers": 32,
                                         "num_attention_heads": 16, "global_attn_indexes": [7, 15, 23, 31]}}),
        "sam-vit-b": ("facebook/sam-vit-base", "SAM ViT-B (Meta, 1024 px; ~375 MB)", {}),
        "dinov2-vitl14": ("facebook/dinov2-large", "DINOv2 ViT-L/14 (Meta; ~1.2 GB)",
                          {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
                           "intermediate_size": 4096, "patch_size": 14, "image_size": 518}),
    }
    # SHA-256 of each repo's model.safetensors from its Hugging Face page (Git LFS details). Those
    # pages round sizes (2.56 GB, 375 MB, 1.22 GB); the exact bytes of sam-vit-b and dinov2-vitl14 are
    # stated beside the same SHA-256 by public projects that pin these files; none states sam-vit-h's
    # (its first download records the bytes)
    ism_sha = {"sam-vit-h": "edfb0462392541fca9af44ff039bfb32dbd0c939997f3abb77a26e23af7afd7c",
               "sam-vit-b": "892c410e496344e527255ccdcb2cb7244a609acb5389c7c4fdba1288f861c579",
               "dinov2-vitl14": "399fba97a95f22c36834418bc69373364a99af3a1153da1c0fb31db567c92e23"}
    ism_bytes = {"sam-vit-b": 374979480, "dinov2-vitl14": 1217522888}
    for name, (repo, desc, cfg) in ism.items():
        specs.append(ModelSpec(name=name, description=desc, config=cfg, licence="Apache-2.0", hf_repo=repo,
                               hf_filename="model.safetensors", file_format="transformers", engine="ism",
                               size=ism_bytes.get(name), sha256=ism_sha[name]))
    specs.append(ModelSpec(  # architecture defaults: segloop.engines.sammed3d.model.SamMed3DConfig
        name="sam-med3d-turbo",
        description="SAM-Med3D turbo (3D ViT-B, 128³ patches at 1.5 mm, point clicks)",
        config={"arch": "sammed3d", "image_size": 128, "spacing_mm": 1.5},
        licence="see model card",
        hf_repo="blueyo0/SAM-Med3D",
        hf_filename="sam_med3d_turbo.pth",
        sha256="899a46d04d3b70f723282ceb489149373558bf0aaba389a346f5ab57da5cdd3c",
        aliases=("sammed3d",),
        engine="sammed3d",
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
    if parse_model_version(name) is not None:  # a run cached by another process (segloop train)
        for spec in saved_run_specs():
            if spec.name.lower() == low:
                register_model(spec)
                return spec
    raise SegloopError(f"unknown model {name!r}; known models: {', '.join(reg)}")
