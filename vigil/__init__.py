"""Vigil: the production loop for card-fraud scoring. The core never imports dagster."""

__version__ = "0.1.0"
