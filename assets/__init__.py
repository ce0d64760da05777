"""Dagster assets, one module per stage; thin wrappers around :mod:`vigil`."""
