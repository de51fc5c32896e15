"""A local stand-in of Marketo's REST API for the demo and the tests; it shares no code with our client."""

from dev.standins.marketo.app import create_app
from dev.standins.marketo.state import Faults, MarketoSandbox, SandboxOptions

__all__ = ["Faults", "MarketoSandbox", "SandboxOptions", "create_app"]
