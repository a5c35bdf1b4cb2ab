"""The Hugging Face hub endpoint segloop downloads from.

Bottom of ``segloop.models``: standard library only; must not import any other segloop module.
"""

from __future__ import annotations

import os

__all__ = ["DEFAULT_HF_ENDPOINT", "hf_endpoint"]

DEFAULT_HF_ENDPOINT = "https://huggingface.co"


def hf_endpoint() -> str:
    """The Hugging Face endpoint: ``SEGLOOP_HF_ENDPOINT``, else ``HF_ENDPOINT``, else huggingface.co."""
    return (os.environ.get("SEGLOOP_HF_ENDPOINT") or os.environ.get("HF_ENDPOINT")
            or DEFAULT_HF_ENDPOINT)
