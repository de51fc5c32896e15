"""Schemathesis hooks (loaded with SCHEMATHESIS_HOOKS): sign each CustomersDot request over the exact bytes
sent, and add the Marketo shared secret, so the generated cases reach past the receiver's first door.

The receiver the test starts is configured with these test secrets (never real ones).
"""

from __future__ import annotations

import base64
import json
import os
from datetime import UTC, datetime
from typing import Any

import schemathesis
from standardwebhooks.webhooks import Webhook

CUSTOMERSDOT_SECRET = "whsec_" + base64.b64encode(b"schemathesis-secret-0123456789ab").decode()
MARKETO_SECRET = "schemathesis-marketo-secret-5e1f"
MARKETO_HEADER = "X-Recipes-Secret"
CUSTOMERSDOT_PATH = "/webhooks/customersdot"
MARKETO_PATH = "/webhooks/marketo/unsubscribe"
# Off for the cases that must show what an unsigned (or unauthenticated) request gets.
SIGN = os.environ.get("RECIPES_SCHEMATHESIS_SIGN", "1") == "1"
SIGNATURE_HEADERS = {"webhook-id", "webhook-timestamp", "webhook-signature"}


def _body_bytes(body: Any) -> bytes:
    """The bytes schemathesis would send for ``body`` (its JSON serialiser is json.dumps as well)."""
    if isinstance(body, bytes):
        return body
    return json.dumps(body).encode()


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    """Sign CustomersDot bodies (keeping a generated webhook-id) and add the Marketo secret."""
    if not SIGN or case.method.upper() != "POST":
        return
    headers = case.headers if case.headers is not None else {}
    if case.path == CUSTOMERSDOT_PATH and set(headers) >= SIGNATURE_HEADERS and not _is_unset(case.body):
        # Only cases that carry all three headers are signed: a case leaving one out shows what an
        # unsigned request gets. The generated webhook-id is kept (its length is under test).
        raw = _body_bytes(case.body)
        try:
            text = raw.decode()
        except UnicodeDecodeError:
            return  # not UTF-8: refused before any signature matters
        msg_id = str(headers["webhook-id"])
        now = datetime.now(UTC)
        headers.update(
            {
                "webhook-id": msg_id,
                "webhook-timestamp": str(int(now.timestamp())),
                "webhook-signature": Webhook(CUSTOMERSDOT_SECRET).sign(msg_id, now, text),
            }
        )
        # Sent as these exact bytes, so the signature covers what the receiver reads.
        kwargs["data"] = raw
        case.headers = headers
    elif case.path == MARKETO_PATH and MARKETO_HEADER in headers:
        # The generated value is replaced by the secret; a case without the header stays without.
        headers[MARKETO_HEADER] = MARKETO_SECRET
        case.headers = headers


def _is_unset(value: Any) -> bool:
    return type(value).__name__ == "NotSet"
