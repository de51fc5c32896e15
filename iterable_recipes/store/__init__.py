"""The app database: received events (the inbox), the Marketo poll cursor and the opt-out audit."""

from iterable_recipes.store.db import make_engine
from iterable_recipes.store.inbox import AddResult, AuditRecord, Inbox, Item, NewItem
from iterable_recipes.store.migrate import migrate

__all__ = ["AddResult", "AuditRecord", "Inbox", "Item", "NewItem", "make_engine", "migrate"]
