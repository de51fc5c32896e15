"""The embedded stack of `recipes demo` and `recipes serve --embedded`: every part local, nothing real.

The local defaults of iterable_recipes.cli.local_stack (a Prefect server on SQLite, the SQLite app
database and limiter under .recipes/) plus the Iterable and Marketo stand-ins and fakesnow seeded with
the synthetic model, each a subprocess on a free 127.0.0.1 port. ``EmbeddedStack.env`` is what flow runs
need to find them.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Any

from dev.standins.marketo.state import SandboxOptions
from iterable_recipes.cli.local_stack import LocalParts, LocalStack

SANDBOX_ITERABLE_KEY = "sandbox-key"  # the stand-in's fixed key; not a credential of anything real
FAKESNOW_LOGIN = {"account": "fakesnow", "user": "fake", "password": "snow"}  # fakesnow accepts any login
FAKESNOW_DATABASE, FAKESNOW_SCHEMA = "ANALYTICS", "PUBLIC"


@dataclass
class EmbeddedStack(LocalStack):
    """The local defaults plus the stand-ins and fakesnow; ``env`` points the project's settings at them."""

    parts: LocalParts = field(
        default_factory=lambda: LocalParts(prefect=True, app_database=True, limiter=True)
    )
    warehouse_rows: int = 2_000

    def _spawn_parts(self) -> None:
        super()._spawn_parts()
        self._spawn_python("iterable", "dev.standins.iterable")
        self._spawn_python("marketo", "dev.standins.marketo")
        self._spawn_python("fakesnow", "fakesnow", "-s")

    def _wait_parts(self) -> None:
        url = self._wait_http("iterable", "/_sandbox/stats", 30)
        self.env |= {"ITERABLE_API_KEY": SANDBOX_ITERABLE_KEY, "ITERABLE_BASE_URL": url}
        self.described.append(("Iterable", f"stand-in at {url}"))
        url = self._wait_http("marketo", "/_sandbox/stats", 30)
        options = SandboxOptions()
        self.env |= {
            "MARKETO_BASE_URL": url,
            "MARKETO_CLIENT_ID": options.client_id,
            "MARKETO_CLIENT_SECRET": options.client_secret,
        }
        self.described.append(("Marketo", f"stand-in at {url}"))
        self._seed_fakesnow()
        super()._wait_parts()

    def _seed_fakesnow(self) -> None:
        url = self._wait("fakesnow", lambda u: _accepts(int(u.rsplit(":", 1)[1])), 30)
        port = url.rsplit(":", 1)[1]
        self.env |= {
            "SNOWFLAKE_ACCOUNT": FAKESNOW_LOGIN["account"],
            "SNOWFLAKE_USER": FAKESNOW_LOGIN["user"],
            "SNOWFLAKE_PASSWORD": FAKESNOW_LOGIN["password"],
            "SNOWFLAKE_DATABASE": FAKESNOW_DATABASE,
            "SNOWFLAKE_SCHEMA": FAKESNOW_SCHEMA,
            "SNOWFLAKE_HOST": "127.0.0.1",
            "SNOWFLAKE_PORT": port,
            "SNOWFLAKE_PROTOCOL": "http",
        }
        with self.warehouse() as conn:
            from dev.warehouse import seed_model

            seed_model(conn, self.warehouse_rows)
        self.described.append(
            ("Snowflake", f"fakesnow at 127.0.0.1:{port}, seeded with {self.warehouse_rows} synthetic rows")
        )

    def warehouse(self) -> Any:
        """A new connection to the embedded fakesnow (close it, or use it as a context manager)."""
        import snowflake.connector

        return snowflake.connector.connect(
            **FAKESNOW_LOGIN,
            host="127.0.0.1",
            port=int(self.env["SNOWFLAKE_PORT"]),
            protocol="http",
            database=FAKESNOW_DATABASE,
            schema=FAKESNOW_SCHEMA,
            network_timeout=30,
        )


def _accepts(port: int) -> bool:
    """Whether something listens on 127.0.0.1:``port``."""
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0
