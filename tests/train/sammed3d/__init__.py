"""Tests of segloop.train.sammed3d."""
