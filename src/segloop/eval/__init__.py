"""Evaluation: the interactive protocol, metrics (Dice, NSD, HD95) and reports.

A leaf layer: imports io and engines, never the API, worker or CLI.
"""
