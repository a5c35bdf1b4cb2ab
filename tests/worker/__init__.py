"""Tests of segloop.worker."""
