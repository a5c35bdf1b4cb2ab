"""Tests of segloop.web (the browser viewer)."""
