"""Tests of segloop.engines.sammed3d."""
