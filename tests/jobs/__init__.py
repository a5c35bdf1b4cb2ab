"""Tests of segloop.jobs."""
