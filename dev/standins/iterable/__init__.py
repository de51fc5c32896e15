"""A local Iterable stand-in (FastAPI under uvicorn) with the API's shapes, limits and failure modes."""

from dev.standins.iterable.app import create_app
from dev.standins.iterable.faults import FaultSpec
from dev.standins.iterable.options import SandboxOptions
from dev.standins.iterable.store import IterableSandbox

__all__ = ["FaultSpec", "IterableSandbox", "SandboxOptions", "create_app"]
