"""``/v1/notifications/unsubscribe?token=…``: the link of every email a user can turn off
(RFC 8058 one-click unsubscribe). No sign-in: the gateway routes it without a user token, and
the link's signature is the credential (:class:`~xtyl_notify.domain.preferences.UnsubscribeLinks`).

* ``POST`` (what a mail client sends for its "Unsubscribe" button, with the body
  ``List-Unsubscribe=One-Click``; the page below sends the same): the link's kinds are turned
  off for its user; 200, however often (``{"unsubscribed": [...]}``, or a small HTML page for
  a browser). The body is not needed: the signed link says everything.
* ``GET`` (a person who opened the link): a small HTML page with a button that POSTs. A GET
  changes nothing: link scanners and previews fetch every URL of an email.

A link notify did not sign (forged, altered, cut short, another token) is ``403
unsubscribe_link_invalid`` (problem details for the POST, an HTML page for the GET), and
nothing changes.
"""

from __future__ import annotations

import html
from typing import Annotated, Any

from litestar import Controller, Request, Response, get, post
from litestar.enums import MediaType
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import Parameter

from xtyl_common.errors import XtylError
from xtyl_notify.domain.emails import DocumentKind
from xtyl_notify.domain.preferences import ONE_CLICK, UNSUBSCRIBE_PATH, UnsubscribeLinkInvalid
from xtyl_notify.routes.notifications import service_of
from xtyl_notify.routes.schemas import UnsubscribedOut

#: RFC 8058's body is 26 bytes; a browser's form post is as small.
MAX_BODY_BYTES = 4 * 1024
#: What the pages may do: inline style, post their form to this origin; nothing else. The
#: token is in the URL: no referrer leaves with it, and nothing caches or indexes the page.
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self';"
        " frame-ancestors 'none'; base-uri 'none'"
    ),
}
KIND_WORDS: dict[DocumentKind, str] = {
    "document_ready": "emails telling you a document is ready",
    "document_failed": "emails telling you a document could not be processed",
}
TOKEN = Annotated[str | None, Parameter(query="token", description="The signed link's token.")]


def _page(title: str, body: str, *, status: int = 200) -> Response[str]:
    page = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title></head>"
        '<body style="margin:0;padding:24px;background:#f9fafb;font-family:-apple-system,'
        "Segoe UI,Roboto,Helvetica,Arial,sans-serif;color:#111827;font-size:16px;"
        'line-height:1.5"><main style="max-width:480px;margin:0 auto;background:#ffffff;'
        f'padding:32px;border-radius:8px"><h1 style="font-size:20px;margin:0 0 16px">'
        f"{html.escape(title)}</h1>{body}</main></body></html>"
    )
    return Response(page, status_code=status, media_type=MediaType.HTML, headers=PAGE_HEADERS)


def _invalid_page(error: XtylError) -> Response[str]:
    return _page(
        "This link does not work",
        "<p>This unsubscribe link is not valid (perhaps it was cut short when copied)."
        " You can choose which emails you get in your account settings.</p>",
        status=error.status,
    )


def _kinds_sentence(kinds: tuple[DocumentKind, ...]) -> str:
    return " and ".join(KIND_WORDS[kind] for kind in kinds)


def _wants_html(request: Request[Any, Any, Any]) -> bool:
    return "text/html" in request.headers.get("accept", "")


class UnsubscribeController(Controller):
    path = UNSUBSCRIBE_PATH
    tags = ["notifications"]

    @get(
        "/",
        summary="The one-click unsubscribe page",
        description="What a person who opens the link in a browser sees: a page with a button"
        " that unsubscribes (a GET changes nothing: link scanners open links too).",
        media_type=MediaType.HTML,
        responses={
            403: ResponseSpec(
                data_container=str,
                media_type=MediaType.HTML,
                description="A page saying the link is not valid (not one we signed)",
            )
        },
    )
    async def page(self, request: Request[Any, Any, Any], token: TOKEN = None) -> Response[str]:
        try:
            wanted = service_of(request).accounts.links.verify(token)
        except UnsubscribeLinkInvalid as exc:
            return _invalid_page(exc)
        # the gateway serves this path as it is: the form posts back to the same URL
        action = html.escape(f"{UNSUBSCRIBE_PATH}?token={token}", quote=True)
        name, value = ONE_CLICK.split("=")
        return _page(
            "Stop these emails?",
            f"<p>You will no longer get {html.escape(_kinds_sentence(wanted.kinds))} from"
            " xtyl. You can turn them on again in your account settings.</p>"
            f'<form method="post" action="{action}">'
            f'<input type="hidden" name="{name}" value="{value}">'
            '<button type="submit" style="background:#111827;color:#ffffff;border:0;'
            'padding:12px 20px;border-radius:6px;font-size:16px;cursor:pointer">'
            "Unsubscribe</button></form>",
        )

    @post(
        "/",
        status_code=200,
        summary="One-click unsubscribe (RFC 8058)",
        description="Turns off the kinds of email the signed link names, for its user. No"
        " sign-in: the link's signature is the credential. Idempotent.",
        request_max_body_size=MAX_BODY_BYTES,
        problems=(403, 413),
        responses={
            200: ResponseSpec(
                data_container=UnsubscribedOut,
                description="Unsubscribed (again, or already): the kinds now off. A client"
                " that accepts text/html gets a small page instead.",
            )
        },
    )
    async def unsubscribe(
        self, request: Request[Any, Any, Any], token: TOKEN = None
    ) -> Response[Any]:
        if _wants_html(request):
            try:
                done = await service_of(request).unsubscribe(token)
            except UnsubscribeLinkInvalid as exc:
                return _invalid_page(exc)
            return _page(
                "You are unsubscribed",
                f"<p>You will no longer get {html.escape(_kinds_sentence(done.kinds))}."
                " You can turn them on again in your account settings.</p>",
            )
        done = await service_of(request).unsubscribe(token)
        return Response(
            UnsubscribedOut(unsubscribed=list(done.kinds)),
            headers={"Cache-Control": "no-store"},
        )
