"""Fixtures of the hostile run tests (tests/hostile/runs.py)."""
from tests.hostile.runs import setup  # noqa: F401 - a fixture, found by pytest here
