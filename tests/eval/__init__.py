"""Tests of segloop.eval: metrics, the evaluation protocol, the runner and its report."""
