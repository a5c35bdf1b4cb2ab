"""Tests of segloop.engines.sam2."""
