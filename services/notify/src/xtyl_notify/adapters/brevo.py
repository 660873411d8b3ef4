"""Brevo's transactional email API v3: ``POST {BREVO_API_URL}/v3/smtp/email`` (send) and
``DELETE {BREVO_API_URL}/v3/smtp/log/{address}`` (forget what was sent to an address: the
erasure's last word at Brevo, :meth:`BrevoClient.delete_logs`).

One request per email over the process's shared aiohttp session, with its own timeouts (a caller
with a deadline of its own passes a shorter ``timeout_s``) and no retries here: the service
decides who retries a send (:mod:`xtyl_notify.service`). Outcomes, as errors of
``xtyl_common.errors`` (which tell the retrying layer what to do):

* 201 ``{"messageId": "<...>"}``: sent;
* 408, 429 and 5xx, timeouts, refused connections: :class:`BrevoUnavailable`, an
  ``Unavailable`` (transient: retried later, up to the retry horizon); ``retry_after_s`` is
  Brevo's ``x-sib-ratelimit-reset`` (or a ``Retry-After``) when the answer has one;
* any other 4xx: :class:`BrevoRejected`, a ``ClientError`` (permanent: retrying would not help)
  with Brevo's ``code`` (``invalid_parameter``, ``missing_parameter``, ``unauthorized`` ...).

Every request carries ``headers.idempotencyKey`` (the email's id, a UUID): Brevo processes a
key once within its TTL, so a retry after a lost answer does not send the email twice. The same
id goes in ``X-Mailin-custom``, which Brevo echoes in its webhooks. An email's own headers
(RFC 8058's ``List-Unsubscribe`` and ``List-Unsubscribe-Post``) go in the same ``headers``
member, which Brevo adds to the message ("custom headers ... sent along the mail headers",
names in ``This-Case-Only``, as these are).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import quote

import aiohttp
import msgspec
import structlog

from xtyl_common.errors import ClientError, Unavailable
from xtyl_notify.domain.addresses import Mailbox

log = structlog.stdlib.get_logger("xtyl.notify.brevo")

SEND_PATH = "/v3/smtp/email"
LOG_PATH = "/v3/smtp/log/"
RATE_LIMIT_RESET_HEADER = "x-sib-ratelimit-reset"
_MAX_ERROR_CHARS = 300
_RETRYABLE_4XX = frozenset({408, 429})


class BrevoUnavailable(Unavailable):
    """Worth retrying: rate limited, Brevo failing, or unreachable. ``code`` is Brevo's (or
    ``timeout`` / ``unreachable``), ``upstream_status`` its HTTP status when it answered."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        upstream_status: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(
            f"brevo {upstream_status or '-'} {code}: {message}",
            code=code,
            retry_after_s=retry_after_s,
        )
        self.message = message
        self.upstream_status = upstream_status


class BrevoRejected(ClientError):
    """Brevo refused this email for good (a 4xx other than 408/429), with Brevo's ``code``."""

    def __init__(self, code: str, message: str, *, upstream_status: int) -> None:
        super().__init__(f"brevo {upstream_status} {code}: {message}", code=code)
        self.message = message
        self.upstream_status = upstream_status


class _Address(msgspec.Struct, frozen=True, omit_defaults=True):
    email: str
    name: str | None = None


class _SendRequest(msgspec.Struct, frozen=True, rename="camel", omit_defaults=True):
    sender: _Address
    to: list[_Address]
    subject: str
    html_content: str
    text_content: str
    headers: dict[str, str]
    tags: list[str] = msgspec.field(default_factory=list[str])
    #: A template kept in Brevo: it replaces subject and bodies, filled with ``params``.
    template_id: int | None = None
    params: dict[str, str] | None = None


class _SendResponse(msgspec.Struct, frozen=True, rename="camel"):
    message_id: str


class _ErrorBody(msgspec.Struct, frozen=True):
    code: str = "unknown"
    message: str = ""


_encoder = msgspec.json.Encoder()
_sent_decoder = msgspec.json.Decoder(_SendResponse)
_error_decoder = msgspec.json.Decoder(_ErrorBody)


def _error_of(status: int, body: bytes) -> _ErrorBody:
    try:
        return _error_decoder.decode(body)
    except msgspec.MsgspecError:
        text = body[:_MAX_ERROR_CHARS].decode("utf-8", errors="replace")
        return _ErrorBody(code=f"http_{status}", message=text)


def retry_after_s(headers: Mapping[str, str], *, now: datetime | None = None) -> float | None:
    """Seconds Brevo asks us to wait: ``x-sib-ratelimit-reset`` (seconds), else ``Retry-After``
    (seconds or an HTTP date); None when neither says."""
    reset = headers.get(RATE_LIMIT_RESET_HEADER)
    if reset is not None:
        try:
            return max(0.0, float(reset))
        except ValueError:
            pass
    raw = headers.get("Retry-After")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


class BrevoClient:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        base_url: str,
        api_key: str,
        sender: Mailbox,
        timeout_s: float = 10.0,
        connect_timeout_s: float = 3.0,
    ) -> None:
        self._session = session
        self._url = base_url.rstrip("/") + SEND_PATH
        self._log_url = base_url.rstrip("/") + LOG_PATH
        self._headers = {
            "api-key": api_key,
            "Content-Type": "application/json",
            "Accept": "application/json",
        }
        self._sender = _Address(email=sender.email, name=sender.name)
        self._timeout_s = timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, connect=connect_timeout_s)

    async def send(
        self,
        *,
        email_id: uuid.UUID,
        to: Mailbox,
        subject: str,
        html: str,
        text: str,
        tags: Sequence[str] = (),
        headers: Mapping[str, str] | None = None,
        template_id: int | None = None,
        params: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> str:
        """Send one email; Brevo's message id, or :class:`BrevoUnavailable` /
        :class:`BrevoRejected`. With ``template_id``, Brevo renders that template with
        ``params`` (subject and bodies are then ignored). ``headers``: the email's own mail
        headers. ``timeout_s`` shortens the request's timeout (never lengthens it)."""
        body = _encoder.encode(
            _SendRequest(
                sender=self._sender,
                to=[_Address(email=to.email, name=to.name)],
                subject=subject,
                html_content=html,
                text_content=text,
                headers={
                    **(headers or {}),
                    "idempotencyKey": str(email_id),
                    "X-Mailin-custom": str(email_id),
                },
                tags=list(tags),
                template_id=template_id,
                params=None if params is None else dict(params),
            )
        )
        status, payload, answer_headers = await self._call(
            "POST", self._url, body=body, timeout_s=timeout_s
        )
        if 200 <= status < 300:
            return self._message_id(payload)
        raise self._failure(status, payload, answer_headers)

    async def delete_logs(self, address: str, *, timeout_s: float | None = None) -> None:
        """Ask Brevo to delete its transactional logs of ``address`` (every email sent to it,
        with the stored previews); Brevo finishes the deletion on its side within a day or
        two. Done also when Brevo holds nothing for it (404). :class:`BrevoUnavailable` /
        :class:`BrevoRejected` as for a send."""
        url = self._log_url + quote(address, safe="@")
        status, payload, answer_headers = await self._call("DELETE", url, timeout_s=timeout_s)
        if 200 <= status < 300 or status == 404:
            return
        raise self._failure(status, payload, answer_headers)

    async def _call(
        self, method: str, url: str, *, body: bytes | None = None, timeout_s: float | None
    ) -> tuple[int, bytes, Mapping[str, str]]:
        """One request with the client's timeouts (``timeout_s`` only shortens them): the
        status, the body and the headers (case-insensitive), or :class:`BrevoUnavailable` when
        Brevo did not answer."""
        timeout = self._timeout
        if timeout_s is not None and timeout_s < self._timeout_s:
            timeout = aiohttp.ClientTimeout(
                total=timeout_s, connect=min(timeout_s, self._connect_timeout_s)
            )
        try:
            async with self._session.request(
                method, url, data=body, headers=self._headers, timeout=timeout
            ) as resp:
                return resp.status, await resp.read(), resp.headers
        except TimeoutError as exc:
            raise BrevoUnavailable("timeout", "no answer from Brevo in time") from exc
        except aiohttp.ClientError as exc:
            raise BrevoUnavailable("unreachable", type(exc).__name__) from exc

    @staticmethod
    def _failure(
        status: int, payload: bytes, headers: Mapping[str, str]
    ) -> BrevoUnavailable | BrevoRejected:
        error = _error_of(status, payload)
        if status >= 500 or status in _RETRYABLE_4XX:
            return BrevoUnavailable(
                error.code,
                error.message[:_MAX_ERROR_CHARS],
                upstream_status=status,
                retry_after_s=retry_after_s(headers),
            )
        if status in (401, 403):
            log.error("brevo_unauthorized", status=status, code=error.code, hint="BREVO_API_KEY")
        return BrevoRejected(error.code, error.message[:_MAX_ERROR_CHARS], upstream_status=status)

    @staticmethod
    def _message_id(payload: bytes) -> str:
        try:
            return _sent_decoder.decode(payload).message_id
        except msgspec.MsgspecError:
            # Accepted all the same: sending it again would duplicate it.
            log.warning(
                "brevo_unreadable_answer", body=payload[:_MAX_ERROR_CHARS].decode(errors="replace")
            )
            return "<unknown>"
