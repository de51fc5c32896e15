"""A local stand-in of Marketo's REST API for the demo and the tests; it shares no code with our client."""

from sandbox.marketo.app import create_app
from sandbox.marketo.state import Faults, MarketoSandbox, SandboxOptions

__all__ = ["Faults", "MarketoSandbox", "SandboxOptions", "create_app"]
