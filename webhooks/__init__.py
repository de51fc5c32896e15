"""The HTTP receiver: verify, validate, commit to the inbox, then nudge the source's drain deployment."""

from webhooks.app import create_app
from webhooks.nudge import Nudger, PrefectTrigger

__all__ = ["Nudger", "PrefectTrigger", "create_app"]
