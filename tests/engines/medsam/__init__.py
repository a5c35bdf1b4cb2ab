"""Tests of segloop.engines.medsam."""
