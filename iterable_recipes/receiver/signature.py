"""Standard Webhooks signature checks with several secrets at once, so secrets can be rotated."""

from __future__ import annotations

import binascii
from collections.abc import Mapping, Sequence

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from iterable_recipes.receiver.errors import Rejected

HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")


class Verifier:
    """Checks id, timestamp (5-minute window) and HMAC-SHA256 signature against each secret in turn."""

    def __init__(self, secrets: Sequence[str]) -> None:
        # standardwebhooks secrets are "whsec_" + base64; a bad one fails here, at start, not per request.
        self._hooks = [Webhook(secret) for secret in secrets]

    @property
    def configured(self) -> bool:
        """True when at least one secret is set."""
        return bool(self._hooks)

    def verify(self, body: bytes, headers: Mapping[str, str]) -> str:
        """Return the webhook-id of a correctly signed request; raise Rejected (401/400) otherwise."""
        wanted = {name: headers.get(name) for name in HEADERS}
        missing = [name for name, value in wanted.items() if not value]
        if missing:
            raise Rejected(401, f"missing signature header(s): {', '.join(missing)}")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise Rejected(400, "body is not UTF-8") from exc
        plain = {name: str(value) for name, value in wanted.items()}
        for hook in self._hooks:
            try:
                hook.verify(text, plain, json_parse=False)
                return plain["webhook-id"]
            except WebhookVerificationError as exc:
                message = str(exc)
                if "timestamp" in message.lower() or "Invalid Signature Headers" in message:
                    raise Rejected(401, "webhook-timestamp missing or outside the 5-minute window") from exc
            except (ValueError, binascii.Error) as exc:
                raise Rejected(401, "malformed webhook-signature header") from exc
        raise Rejected(401, "signature does not match any configured secret")
