"""Prefect blocks holding credentials; `prefect block register -m blocks` registers them all."""

from blocks.iterable import IterableCredentials
from blocks.marketo import MarketoCredentials

__all__ = ["IterableCredentials", "MarketoCredentials"]
