"""Placeholder until the replay source lands (see the open issue); fails loudly if used."""

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this source's flags to the daemon's command line."""


def from_args(args: argparse.Namespace, writer):
    """Build this source's feed from the parsed command line."""
    raise SystemExit("--source replay is not implemented yet")
