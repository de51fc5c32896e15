"""The app database: received events (the inbox), the Marketo poll cursor and the opt-out audit."""

from inbox.db import make_engine
from inbox.migrations_runner import migrate
from inbox.store import AddResult, AuditRecord, Inbox, Item, NewItem

__all__ = ["AddResult", "AuditRecord", "Inbox", "Item", "NewItem", "make_engine", "migrate"]
