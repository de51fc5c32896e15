"""The app database: received events (the inbox), the Marketo poll cursor and the opt-out audit.

It knows no recipe: sources, kinds and payloads are what the recipes give it.
"""

from iterable_recipes.store.db import make_engine
from iterable_recipes.store.inbox import (
    AddResult,
    AuditRecord,
    Inbox,
    Item,
    NewItem,
    Outcome,
    Released,
    Settled,
)
from iterable_recipes.store.migrate import migrate
from iterable_recipes.store.payload import EncodedJSON

__all__ = [
    "AddResult",
    "AuditRecord",
    "EncodedJSON",
    "Inbox",
    "Item",
    "NewItem",
    "Outcome",
    "Released",
    "Settled",
    "make_engine",
    "migrate",
]
