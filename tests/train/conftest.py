"""Fixtures for the training tests: a private SEGLOOP_HOME (model cache, datastore) per test
(defined in tests/train/home.py, shared with tests/cli/test_train.py)."""

from __future__ import annotations

from train.home import segloop_home

__all__ = ["segloop_home"]
