"""Fixtures for the eval tests: a small real threshold engine and a synthetic manifest on disk
(defined in tests/eval/threshold.py, shared with tests/cli)."""

from __future__ import annotations

from eval.threshold import eval_engines, synthetic_manifest

__all__ = ["eval_engines", "synthetic_manifest"]
