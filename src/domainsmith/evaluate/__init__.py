"""Evaluation suites and scoring."""
