"""A local stand-in for Brevo's transactional email API. For ``make up`` and tests; never
deployed.

    python -m xtyl_devstack.brevo --port 8011 --data-dir .data/brevo [--api-key KEY]

    async with LocalBrevo(data_dir) as brevo:          # in tests: port 0 picks a free port
        env["BREVO_API_URL"] = brevo.url
        brevo.fail_next(429, to="a@example.com")        # the next send to a@ answers 429
        [email] = await brevo.wait_for_emails("a@example.com")

HTTP (loopback only):
    POST /v3/smtp/email      Brevo's "send a transactional email", checked strictly
    DELETE /v3/smtp/log/{identifier}
                             Brevo's "delete an SMTP transactional log": the emails sent to
                             that address (or with that ``<message id>``) are forgotten, here
                             and in the JSON-lines file; 204
    GET  /_local/emails      what was accepted, oldest first (``?to=<address>`` filters)
    DELETE /_local/emails    forget them (the JSON-lines file keeps them)
    POST /_local/failures    ``{"status": 429, "times": 1, "to": "a@example.com"}``: answer
                             the next matching sends with that status (400 takes ``"code"``)
    DELETE /_local/failures  drop the programmed failures (sends and log deletions)

What ``POST /v3/smtp/email`` checks, answering like Brevo (``{"code", "message"}``):

* the ``api-key`` header: missing, or not ``--api-key`` when one was given -> 401
  ``unauthorized``;
* a JSON object body with only members Brevo knows; ``sender.email``; ``to``: a non-empty list
  of ``{email, name?}`` with valid addresses; a ``subject``; ``htmlContent`` or ``textContent``;
  ``tags`` a list of strings; ``headers`` an object of strings -> 400 ``missing_parameter`` /
  ``invalid_parameter``. With ``templateId`` (a positive integer) subject and bodies are not
  needed and ``params`` must be an object: both are kept as received (nothing here renders a
  template);
* ``headers.idempotencyKey``: a key seen in the last 30 minutes answers the first send's
  ``messageId`` again and records nothing new (Brevo processes a key once within its TTL).

Accepted emails answer 201 ``{"messageId": "<...@smtp-relay.mailin.fr>"}``, are kept in memory
and appended as JSON lines to ``<data dir>/emails.jsonl`` for people to read. A programmed 429
carries ``x-sib-ratelimit-limit``/``-remaining``/``-reset`` like Brevo's.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import secrets
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
from aiohttp import web

from xtyl_devstack.loopback import LoopbackServer, serve_until_signal

SEND_PATH = "/v3/smtp/email"
LOG_PATH = "/v3/smtp/log"
EMAILS_PATH = "/_local/emails"
FAILURES_PATH = "/_local/failures"
EMAILS_FILE = "emails.jsonl"
IDEMPOTENCY_TTL_S = 30 * 60
DEFAULT_PORT = 8011

_KNOWN_MEMBERS = frozenset(
    {
        "sender",
        "to",
        "cc",
        "bcc",
        "replyTo",
        "subject",
        "htmlContent",
        "textContent",
        "tags",
        "headers",
        "templateId",
        "params",
        "attachment",
        "messageVersions",
        "scheduledAt",
        "batchId",
    }
)
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_MESSAGE_ID_RE = re.compile(r"^<[^<>@\s]+@[^<>@\s]+>$")
_FAILURE_MESSAGES = {
    400: ("invalid_parameter", "programmed failure"),
    429: ("too_many_requests", "The expected rate limit is exceeded."),
    500: ("internal_error", "programmed failure"),
    503: ("service_unavailable", "programmed failure"),
}
_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()


class BrevoRequestError(Exception):
    """A request Brevo would refuse; becomes ``{"code", "message"}`` with ``status``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass
class Failure:
    """Answer the next ``times`` sends (to ``to``, or to anyone) with ``status``."""

    status: int
    times: int = 1
    to: str | None = None
    code: str | None = None


class FailureRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    status: int
    times: int = 1
    to: str | None = None
    code: str | None = None


_failure_decoder = msgspec.json.Decoder(FailureRequest)


def _is_email(value: object) -> bool:
    return isinstance(value, str) and len(value) <= 254 and bool(_EMAIL_RE.match(value))


def _recipients(value: object, member: str, *, required: bool) -> list[dict[str, Any]]:
    if value is None:
        if required:
            raise BrevoRequestError(400, "missing_parameter", f"{member} is missing")
        return []
    if not isinstance(value, list) or (required and not value):
        raise BrevoRequestError(400, "invalid_parameter", f"{member} must be a non-empty list")
    checked: list[dict[str, Any]] = []
    for item in value:
        if not isinstance(item, dict) or not _is_email(item.get("email")):
            raise BrevoRequestError(400, "invalid_parameter", f"email is not valid in {member}")
        name = item.get("name")
        if name is not None and not isinstance(name, str):
            raise BrevoRequestError(400, "invalid_parameter", f"name is not valid in {member}")
        checked.append(dict(item))
    return checked


def _optional_string(body: dict[str, Any], member: str) -> str | None:
    value = body.get(member)
    if value is not None and not isinstance(value, str):
        raise BrevoRequestError(400, "invalid_parameter", f"{member} must be a string")
    return value or None


def check_send_request(body: object) -> dict[str, Any]:
    """``body`` if Brevo would accept it as a send, else :class:`BrevoRequestError`."""
    if not isinstance(body, dict):
        raise BrevoRequestError(400, "bad_request", "Input must be a JSON object")
    request: dict[str, Any] = dict(body)
    unknown = sorted(set(request) - _KNOWN_MEMBERS)
    if unknown:
        raise BrevoRequestError(400, "invalid_parameter", f"unknown parameter {unknown[0]}")
    template_id = request.get("templateId")
    if template_id is not None and (
        not isinstance(template_id, int) or isinstance(template_id, bool) or template_id < 1
    ):
        raise BrevoRequestError(400, "invalid_parameter", "templateId must be a positive integer")
    params = request.get("params")
    if params is not None and not isinstance(params, dict):
        raise BrevoRequestError(400, "invalid_parameter", "params must be an object")
    sender = request.get("sender")
    if sender is None:
        raise BrevoRequestError(400, "missing_parameter", "sender is missing")
    if not isinstance(sender, dict) or not _is_email(sender.get("email")):
        raise BrevoRequestError(400, "invalid_parameter", "valid sender email required")
    _recipients(request.get("to"), "to", required=True)
    for member in ("cc", "bcc"):
        _recipients(request.get(member), member, required=False)
    subject = _optional_string(request, "subject")
    html, text = _optional_string(request, "htmlContent"), _optional_string(request, "textContent")
    if template_id is None and not subject:  # a template brings its own subject and body
        raise BrevoRequestError(400, "missing_parameter", "subject is missing")
    if template_id is None and html is None and text is None:
        raise BrevoRequestError(400, "missing_parameter", "htmlContent or textContent is missing")
    tags = request.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise BrevoRequestError(400, "invalid_parameter", "tags must be a list of strings")
    headers = request.get("headers", {})
    if not isinstance(headers, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise BrevoRequestError(400, "invalid_parameter", "headers must be an object of strings")
    return request


def new_message_id() -> str:
    return f"<{int(time.time() * 1000)}.{secrets.token_hex(8)}@smtp-relay.mailin.fr>"


def _error(status: int, code: str, message: str, **headers: str) -> web.Response:
    return web.json_response({"code": code, "message": message}, status=status, headers=headers)


class LocalBrevo(LoopbackServer):
    """The stand-in on 127.0.0.1; ``port=0`` picks a free port."""

    def __init__(
        self,
        data_dir: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
    ) -> None:
        super().__init__(host=host, port=port)
        self.data_dir = data_dir
        self._api_key = api_key
        self._changed = asyncio.Condition()
        self._idempotency: dict[str, tuple[float, str]] = {}
        #: Accepted emails, oldest first: the request body plus ``messageId`` and ``receivedAt``.
        self.emails: list[dict[str, Any]] = []
        #: Every send request answered, accepted or not: ``(status, [to addresses])``.
        self.requests: deque[tuple[int, list[str]]] = deque(maxlen=10_000)
        self.failures: list[Failure] = []
        #: Programmed answers to the next log deletions (``DELETE /v3/smtp/log/...``).
        self.log_failures: list[Failure] = []
        #: Every log deletion answered: ``(status, identifier)``, oldest first.
        self.log_deletions: list[tuple[int, str]] = []

    @property
    def emails_file(self) -> Path:
        return self.data_dir / EMAILS_FILE

    # --- for tests ------------------------------------------------------------------------

    def fail_next(
        self, status: int, *, times: int = 1, to: str | None = None, code: str | None = None
    ) -> None:
        """Answer the next ``times`` sends to ``to`` (any address: None) with ``status``."""
        self.failures.append(Failure(status, times, to.lower() if to else None, code))

    def fail_next_log_deletion(
        self, status: int, *, times: int = 1, to: str | None = None, code: str | None = None
    ) -> None:
        """Answer the next ``times`` log deletions (of ``to``'s log; any: None) with
        ``status``."""
        self.log_failures.append(Failure(status, times, to.lower() if to else None, code))

    def deleted_logs(self) -> list[str]:
        """The identifiers (lower-cased addresses, message ids) whose logs were deleted."""
        return [identifier for status, identifier in self.log_deletions if status == 204]

    def emails_to(self, address: str) -> list[dict[str, Any]]:
        wanted = address.lower()
        return [e for e in self.emails if any(t["email"].lower() == wanted for t in e["to"])]

    def requests_to(self, address: str) -> list[int]:
        """The statuses answered to sends addressed to ``address``, in order."""
        wanted = address.lower()
        return [status for status, to in self.requests if wanted in to]

    async def wait_for_emails(
        self, address: str, count: int = 1, *, timeout_s: float = 15.0
    ) -> list[dict[str, Any]]:
        """The emails to ``address`` once there are at least ``count``."""
        async with asyncio.timeout(timeout_s), self._changed:
            await self._changed.wait_for(lambda: len(self.emails_to(address)) >= count)
        return self.emails_to(address)

    # --- life cycle -----------------------------------------------------------------------

    async def make_app(self) -> web.Application:
        """``url`` is what ``BREVO_API_URL`` is for the services."""
        await asyncio.to_thread(self.data_dir.mkdir, parents=True, exist_ok=True)
        app = web.Application(client_max_size=20 * 1024 * 1024)
        app.router.add_post(SEND_PATH, self._send)
        app.router.add_delete(LOG_PATH + "/{identifier}", self._delete_log)
        app.router.add_get(EMAILS_PATH, self._list, allow_head=False)
        app.router.add_delete(EMAILS_PATH, self._clear)
        app.router.add_post(FAILURES_PATH, self._add_failure)
        app.router.add_delete(FAILURES_PATH, self._clear_failures)
        return app

    # --- handlers -------------------------------------------------------------------------

    def _take_failure(self, addresses: list[str]) -> Failure | None:
        for failure in self.failures:
            if failure.to is None or failure.to in addresses:
                failure.times -= 1
                if failure.times <= 0:
                    self.failures.remove(failure)
                return failure
        return None

    async def _send(self, request: web.Request) -> web.Response:
        addresses: list[str] = []
        try:
            response = await self._answer_send(request, addresses)
        except BrevoRequestError as exc:
            response = _error(exc.status, exc.code, exc.message)
        self.requests.append((response.status, addresses))
        async with self._changed:
            self._changed.notify_all()
        return response

    async def _answer_send(self, request: web.Request, addresses: list[str]) -> web.Response:
        key = request.headers.get("api-key")
        if not key or (self._api_key is not None and key != self._api_key):
            raise BrevoRequestError(401, "unauthorized", "Key not found")
        try:
            body: object = _decoder.decode(await request.read())
        except msgspec.DecodeError:
            raise BrevoRequestError(400, "bad_request", "Input must be a valid JSON") from None
        if isinstance(body, dict):
            to: object = body.get("to")
            if isinstance(to, list):
                addresses += [str(t.get("email", "")).lower() for t in to if isinstance(t, dict)]
        failure = self._take_failure(addresses)
        if failure is not None:
            code, message = _FAILURE_MESSAGES.get(failure.status, ("error", "programmed failure"))
            headers: dict[str, str] = {}
            if failure.status == 429:
                headers = {
                    "x-sib-ratelimit-limit": "1000",
                    "x-sib-ratelimit-remaining": "0",
                    "x-sib-ratelimit-reset": "1",
                }
            return _error(failure.status, failure.code or code, message, **headers)
        checked = check_send_request(body)
        idempotency_key = checked.get("headers", {}).get("idempotencyKey")
        now = time.monotonic()
        self._idempotency = {
            k: v for k, v in self._idempotency.items() if now - v[0] < IDEMPOTENCY_TTL_S
        }
        if idempotency_key is not None and idempotency_key in self._idempotency:
            return web.json_response(
                {"messageId": self._idempotency[idempotency_key][1]}, status=201
            )
        message_id = new_message_id()
        if idempotency_key is not None:
            self._idempotency[idempotency_key] = (now, message_id)
        record = {
            **checked,
            "messageId": message_id,
            "receivedAt": datetime.now(UTC).isoformat(),
        }
        self.emails.append(record)
        # In the event loop's thread, not a worker thread: a line's append and a log
        # deletion's rewrite never interleave (the file is a few MB at most, in development).
        self._append(record)
        return web.json_response({"messageId": message_id}, status=201)

    async def _delete_log(self, request: web.Request) -> web.Response:
        identifier = request.match_info["identifier"]
        try:
            response = await self._answer_delete_log(request, identifier)
        except BrevoRequestError as exc:
            response = _error(exc.status, exc.code, exc.message)
        if not _MESSAGE_ID_RE.match(identifier):
            identifier = identifier.lower()
        self.log_deletions.append((response.status, identifier))
        async with self._changed:
            self._changed.notify_all()
        return response

    async def _answer_delete_log(self, request: web.Request, identifier: str) -> web.Response:
        key = request.headers.get("api-key")
        if not key or (self._api_key is not None and key != self._api_key):
            raise BrevoRequestError(401, "unauthorized", "Key not found")
        failure = next(
            (f for f in self.log_failures if f.to is None or f.to == identifier.lower()), None
        )
        if failure is not None:
            failure.times -= 1
            if failure.times <= 0:
                self.log_failures.remove(failure)
            code, message = _FAILURE_MESSAGES.get(failure.status, ("error", "programmed failure"))
            return _error(failure.status, failure.code or code, message)
        if _MESSAGE_ID_RE.match(identifier):
            kept = [e for e in self.emails if e["messageId"] != identifier]
        elif _is_email(identifier):
            wanted = identifier.lower()
            kept = [e for e in self.emails if all(t["email"].lower() != wanted for t in e["to"])]
        else:
            raise BrevoRequestError(
                400, "invalid_parameter", "identifier must be an email address or a message id"
            )
        if len(kept) != len(self.emails):
            self.emails[:] = kept
            self._rewrite(kept)
        return web.Response(status=204)

    def _rewrite(self, emails: list[dict[str, Any]]) -> None:
        partial = self.emails_file.with_suffix(".jsonl.partial")
        with partial.open("wb") as file:
            file.writelines(_encoder.encode(record) + b"\n" for record in emails)
        partial.replace(self.emails_file)

    def _append(self, record: dict[str, Any]) -> None:
        with self.emails_file.open("ab") as file:
            file.write(_encoder.encode(record) + b"\n")

    async def _list(self, request: web.Request) -> web.Response:
        address = request.query.get("to")
        emails = self.emails_to(address) if address else self.emails
        return web.json_response({"count": len(emails), "emails": emails})

    async def _clear(self, request: web.Request) -> web.Response:
        self.emails.clear()
        self._idempotency.clear()
        return web.Response(status=204)

    async def _add_failure(self, request: web.Request) -> web.Response:
        try:
            wanted = _failure_decoder.decode(await request.read())
        except msgspec.MsgspecError as exc:
            return _error(400, "invalid_parameter", str(exc))
        if not 400 <= wanted.status <= 599 or wanted.times < 1:
            return _error(400, "invalid_parameter", "status must be 4xx/5xx and times >= 1")
        self.fail_next(wanted.status, times=wanted.times, to=wanted.to, code=wanted.code)
        return web.Response(status=204)

    async def _clear_failures(self, request: web.Request) -> web.Response:
        self.failures.clear()
        self.log_failures.clear()
        return web.Response(status=204)


def main(argv: list[str] | None = None) -> int:
    """``python -m xtyl_devstack.brevo --port PORT --data-dir DIR``: serve until SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="python -m xtyl_devstack.brevo",
        description="A local stand-in for Brevo's transactional email API (loopback only).",
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")
    parser.add_argument("--data-dir", type=Path, required=True, help="emails.jsonl goes here")
    parser.add_argument("--host", default="127.0.0.1", help="a loopback address")
    parser.add_argument("--api-key", default=None, help="accept only this key (default: any)")
    args = parser.parse_args(argv)
    brevo = LocalBrevo(args.data_dir, host=args.host, port=args.port, api_key=args.api_key)
    asyncio.run(
        serve_until_signal(
            brevo,
            lambda: (
                f"local Brevo: POST {brevo.url}{SEND_PATH}, received emails at {brevo.url}"
                f"{EMAILS_PATH} and in {brevo.emails_file}"
            ),
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
