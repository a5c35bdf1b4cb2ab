"""SAM-Med3D's architecture hyper-parameters (:class:`SamMed3DConfig`), torch-free.

The defaults are the released ViT-B (``vit_b_ori``): a 768-wide, 12-block ViT over 16³ patches of
a 128³ volume, window attention of 14³ with global attention in blocks 2, 5, 8, 11; a 384-wide
two-way transformer decoder with four mask tokens. :meth:`SamMed3DConfig.tiny` is the same
structure at a few thousand parameters (tests, CPU training checks). The config travels as JSON
(the model cache's meta.json, checkpoints, ``config.json`` of a training run).
Standard library only; must not import torch, the engine session, the CLI, FastAPI or Celery.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["SamMed3DConfig"]


@dataclass(frozen=True)
class SamMed3DConfig:
    """Architecture hyper-parameters; defaults are the released ViT-B (``vit_b_ori``)."""

    image_size: int = 128
    patch_size: int = 16
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)
    window_size: int = 14
    prompt_dim: int = 384
    mask_in_chans: int = 16
    decoder_depth: int = 2
    decoder_heads: int = 8
    decoder_mlp_dim: int = 2048
    iou_hidden_dim: int = 256
    num_multimask: int = 3
    spacing_mm: float = 1.5

    @property
    def grid(self) -> int:
        """Tokens per axis of the image embedding (8 for ViT-B)."""
        return self.image_size // self.patch_size

    @property
    def low_res(self) -> int:
        """Side of the low-resolution logits (4 x grid; 32 for ViT-B)."""
        return 4 * self.grid

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (saved in the model cache's meta.json)."""
        d = asdict(self)
        d["global_attn_indexes"] = list(self.global_attn_indexes)
        d["arch"] = "sammed3d"
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SamMed3DConfig:
        """From :meth:`to_dict` output (unknown keys are ignored, ``arch`` checked)."""
        if d.get("arch", "sammed3d") != "sammed3d":
            raise ValueError(f"not a SAM-Med3D config (arch={d.get('arch')!r})")
        names = set(cls.__dataclass_fields__)
        kw = {k: v for k, v in d.items() if k in names}
        if "global_attn_indexes" in kw:
            kw["global_attn_indexes"] = tuple(int(i) for i in kw["global_attn_indexes"])
        return cls(**kw)

    @classmethod
    def tiny(cls) -> SamMed3DConfig:
        """A few-thousand-parameter model with the same structure (tests, CPU training checks)."""
        return cls(image_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2,
                   global_attn_indexes=(1,), window_size=3, prompt_dim=48, mask_in_chans=8,
                   decoder_heads=2, decoder_mlp_dim=64, iou_hidden_dim=32)
