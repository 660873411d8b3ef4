"""Which kinds of non-transactional email a user wants, and the signed links that turn them off
without signing in (RFC 8058 one-click unsubscribe).

Only document emails can be turned off (:data:`~xtyl_notify.domain.emails.DOCUMENT_KINDS`):
the welcome email is sent once, as the answer to the sign-up, and Supabase Auth's emails are
what the user asked for; neither has a later email to stop.

An unsubscribe link is ``{PUBLIC_API_URL}/v1/notifications/unsubscribe?token=<JWT>``: HS256
(PyJWT) with the audience ``xtyl:unsubscribe`` (no other token of the system has it, and these
tokens fit no other check), ``sub`` the user id and ``kinds`` the kinds it turns off. No
expiry: the link sits in a mailbox for years and RFC 8058 expects it to work when pressed;
all it can do is turn emails off. The same claims make the same token, so an email's body and
its ``List-Unsubscribe`` header carry one link however often the email is rendered.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import cast

import jwt
import msgspec

from xtyl_common.errors import Forbidden
from xtyl_notify.domain.emails import DOCUMENT_KINDS, DocumentKind

UNSUBSCRIBE_AUDIENCE = "xtyl:unsubscribe"
UNSUBSCRIBE_ISSUER = "xtyl-notify"
UNSUBSCRIBE_PATH = "/v1/notifications/unsubscribe"
#: RFC 8058's body of the one-click POST, and the header that announces it.
ONE_CLICK = "List-Unsubscribe=One-Click"
_ALGORITHM = "HS256"
#: Ours are ~300 characters; anything much longer is not one of them.
MAX_TOKEN_CHARS = 2048


class Preferences(msgspec.Struct, frozen=True, kw_only=True):
    """A user's choices; a user who never chose wants every kind."""

    document_ready: bool = True
    document_failed: bool = True

    def wants(self, kind: str) -> bool:
        if kind == "document_ready":
            return self.document_ready
        if kind == "document_failed":
            return self.document_failed
        return True  # transactional: not the user's to turn off

    def without(self, kinds: Iterable[DocumentKind]) -> Preferences:
        off = set(kinds)
        return Preferences(
            document_ready=self.document_ready and "document_ready" not in off,
            document_failed=self.document_failed and "document_failed" not in off,
        )


class PreferencesRecord(Preferences, frozen=True, kw_only=True):
    """The user's preferences as stored (``updated_at`` ``None``: never changed, the
    defaults apply)."""

    updated_at: datetime | None = None


class UnsubscribeLinkInvalid(Forbidden):
    """Not a link notify signed (forged, altered, cut short, or meant for something else):
    the link is the credential, and this one does not check out (403)."""

    default_code = "unsubscribe_link_invalid"


class UnsubscribeRequest(msgspec.Struct, frozen=True, kw_only=True):
    """What a verified link asks: turn these kinds off for this user."""

    user_id: uuid.UUID
    kinds: tuple[DocumentKind, ...]


class UnsubscribeLinks:
    """Signs and checks unsubscribe links. ``secrets``: the first signs, every one verifies
    (``UNSUBSCRIBE_SECRET``, several while rotating); ``public_api_url``: the gateway's public
    base URL, where the link points."""

    def __init__(self, secrets: Sequence[str], public_api_url: str) -> None:
        if not secrets:
            raise ValueError("at least one unsubscribe secret is needed")
        self._secrets = list(secrets)
        self._base = public_api_url.rstrip("/")

    def token(self, user_id: uuid.UUID, kinds: Iterable[DocumentKind]) -> str:
        wanted = sorted(set(kinds))
        if not wanted:
            raise ValueError("an unsubscribe link turns off at least one kind")
        claims = {
            "iss": UNSUBSCRIBE_ISSUER,
            "aud": UNSUBSCRIBE_AUDIENCE,
            "sub": str(user_id),
            "kinds": wanted,
        }
        return jwt.encode(claims, self._secrets[0], algorithm=_ALGORITHM)

    def url(self, user_id: uuid.UUID, kinds: Iterable[DocumentKind]) -> str:
        return f"{self._base}{UNSUBSCRIBE_PATH}?token={self.token(user_id, kinds)}"

    def headers(self, user_id: uuid.UUID, kinds: Iterable[DocumentKind]) -> dict[str, str]:
        """RFC 8058's two headers for an email about ``kinds``."""
        return {
            "List-Unsubscribe": f"<{self.url(user_id, kinds)}>",
            "List-Unsubscribe-Post": ONE_CLICK,
        }

    def verify(self, token: str | None) -> UnsubscribeRequest:
        """What the link asks, or :class:`UnsubscribeLinkInvalid`."""
        if not token:
            raise UnsubscribeLinkInvalid("the link has no token")
        if len(token) > MAX_TOKEN_CHARS:
            raise UnsubscribeLinkInvalid("not an unsubscribe link: too long")
        claims: dict[str, object] | None = None
        for secret in self._secrets:
            try:
                claims = jwt.decode(
                    token,
                    secret,
                    algorithms=[_ALGORITHM],
                    audience=UNSUBSCRIBE_AUDIENCE,
                    issuer=UNSUBSCRIBE_ISSUER,
                    options={"require": ["aud", "iss", "sub"]},
                )
                break
            except jwt.InvalidSignatureError:
                continue
            except jwt.PyJWTError as exc:
                raise UnsubscribeLinkInvalid(f"not an unsubscribe link: {exc}") from None
        if claims is None:
            raise UnsubscribeLinkInvalid("not an unsubscribe link: wrong signature")
        try:
            user_id = uuid.UUID(str(claims["sub"]))
        except ValueError:
            raise UnsubscribeLinkInvalid("not an unsubscribe link: bad subject") from None
        kinds = claims.get("kinds")
        if (
            not isinstance(kinds, list)
            or not kinds
            or not all(kind in DOCUMENT_KINDS for kind in cast("list[object]", kinds))
        ):
            raise UnsubscribeLinkInvalid("not an unsubscribe link: bad kinds")
        return UnsubscribeRequest(
            user_id=user_id, kinds=tuple(cast("list[DocumentKind]", sorted(set(kinds))))
        )
