"""Tests of the segloop commands (segloop.cli), run as a user runs them."""
