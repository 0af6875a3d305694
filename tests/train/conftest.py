"""Fixtures of the resume and distributed tests: a tiny CLI run's settings and its uninterrupted reference."""
from tests.train.cli_runs import cli_reference, cli_setup  # noqa: F401 - fixtures, found by pytest here
