"""A local Iterable stand-in (FastAPI under uvicorn) with the API's shapes, limits and failure modes."""

from sandbox.iterable.app import create_app
from sandbox.iterable.faults import FaultSpec
from sandbox.iterable.options import SandboxOptions
from sandbox.iterable.store import IterableSandbox

__all__ = ["FaultSpec", "IterableSandbox", "SandboxOptions", "create_app"]
