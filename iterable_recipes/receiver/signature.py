"""Standard Webhooks signature checks with several secrets at once, so secrets can be rotated.

The check is the specification's, written out: HMAC-SHA256 over ``id.timestamp.body`` compared in
constant time with each ``v1,`` signature sent, the timestamp within five minutes either way.
``standardwebhooks`` decodes the secrets (and signs in the tests); its ``verify`` decodes the body to
text and back, and builds datetimes, which cost more per event than the HMAC itself.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import time
from collections.abc import Callable, Mapping, Sequence

from standardwebhooks.webhooks import Webhook

from iterable_recipes.receiver.errors import Rejected

HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")
TOLERANCE_SECONDS = 300.0  # the specification's five minutes, either way


class Verifier:
    """Checks id, timestamp (5-minute window) and HMAC-SHA256 signature against each secret in turn."""

    def __init__(self, secrets: Sequence[str], clock: Callable[[], float] = time.time) -> None:
        # standardwebhooks secrets are "whsec_" + base64; a bad one fails here, at start, not per request.
        # The key is the library's own reading of the secret (it keeps it as _whsecret).
        self._keys = [Webhook(secret)._whsecret for secret in secrets]
        self._clock = clock

    @property
    def configured(self) -> bool:
        """True when at least one secret is set."""
        return bool(self._keys)

    def verify(self, body: bytes, headers: Mapping[str, str]) -> str:
        """Return the webhook-id of a correctly signed request; raise Rejected (401/400) otherwise."""
        msg_id, stamp, signatures = (headers.get(name) for name in HEADERS)
        if not (msg_id and stamp and signatures):
            missing = [name for name in HEADERS if not headers.get(name)]
            raise Rejected(401, f"missing signature header(s): {', '.join(missing)}")
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise Rejected(400, "body is not UTF-8") from exc
        seconds = self._seconds(stamp)
        sent = self._signatures(signatures)
        # The specification signs the whole seconds of the timestamp, as text.
        signed = b"%s.%d.%s" % (msg_id.encode(), math.floor(seconds), body)
        for key in self._keys:
            # An HMAC object, not the one-shot hmac.digest: that one lets go of the GIL for a few
            # microseconds of hashing, and taking it back waits for the writer thread's whole turn.
            expected = hmac.new(key, signed, hashlib.sha256).digest()
            # Every signature sent is compared (no early exit within a secret), each in constant time.
            if sum(hmac.compare_digest(expected, signature) for signature in sent):
                return msg_id
        raise Rejected(401, "signature does not match any configured secret")

    def _seconds(self, stamp: str) -> float:
        """The timestamp header as seconds, refused when unreadable or outside the window."""
        try:
            seconds = float(stamp)
        except ValueError:
            seconds = math.nan
        if not abs(seconds - self._clock()) <= TOLERANCE_SECONDS:  # NaN and infinities fail too
            raise Rejected(401, "webhook-timestamp missing or outside the 5-minute window")
        return seconds

    @staticmethod
    def _signatures(header: str) -> list[bytes]:
        """The ``v1`` signatures of a space-separated ``version,base64`` list (others are skipped)."""
        out = []
        for versioned in header.split(" "):
            try:
                version, signature = versioned.split(",")
                if version == "v1":
                    out.append(base64.b64decode(signature))
            except (ValueError, binascii.Error) as exc:
                raise Rejected(401, "malformed webhook-signature header") from exc
        return out
