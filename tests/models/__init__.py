"""Tests of segloop.models."""
