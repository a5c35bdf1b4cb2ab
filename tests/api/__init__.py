"""Tests of segloop.api."""
