"""The HTTP receiver: verify, validate, commit to the inbox, then nudge the source's drain deployment; its
due-work watcher starts a drain when due work has no run (a lost nudge, a retry come due)."""

from iterable_recipes.receiver.app import create_app
from iterable_recipes.receiver.nudge import Nudger, PrefectTrigger

__all__ = ["Nudger", "PrefectTrigger", "create_app"]
