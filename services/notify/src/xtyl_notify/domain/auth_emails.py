"""Supabase Auth's emails: what its Send Email Hook sends, and the emails notify makes of it.
Pure logic.

The hook's body (supabase/auth ``hooks/v0hooks.SendEmailInput``)::

    {"user": {"id": "<uuid>", "email": "...", "new_email": "...", "user_metadata": {...}, ...},
     "email_data": {"token": "123456", "token_hash": "<sha224 hex>", "redirect_to": "...",
                    "email_action_type": "recovery", "site_url": "<SUPABASE_URL>/auth/v1",
                    "token_new": "", "token_hash_new": "", ...}}

Each email carries the code (``token``) and a link to Supabase Auth's ``/verify``, built as
Supabase builds its ``{{ .ConfirmationURL }}``: ``<site_url>/verify?token=<token_hash>&
type=<action>&redirect_to=<redirect_to>`` (``site_url`` is Auth's own URL, despite the name).
A reauthentication email has the code only.

An email change asks for two emails when Supabase's secure email change is on: the code
``token`` with the link of ``token_hash_new`` to the current address, and ``token_new`` with
``token_hash`` to the new one (that pairing is Supabase's, documented for this hook);
otherwise one, ``token`` with ``token_hash``, to the new address.

Each email is logged under the dedupe key ``auth_hook:<webhook-id>:<to|current|new>``
(:func:`new_emails`): a call delivered twice sends once.

An action with a Brevo template configured (``BREVO_AUTH_TEMPLATES``) is sent as that template,
with the params ``token``, ``token_hash``, ``confirmation_url`` (empty for reauthentication),
``email_action_type``, ``email`` (the recipient), ``new_email``, ``full_name``, ``site_url`` and
``redirect_to``; the rendered email is still what the log keeps.
"""

from __future__ import annotations

import html
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import msgspec

from xtyl_notify.domain.addresses import display_name
from xtyl_notify.domain.emails import BrevoTemplate, EmailKind, NewEmail, RenderedEmail
from xtyl_notify.domain.templates import PRODUCT, _greeting, _html_page, _text_page

DEDUPE_PREFIX = "auth_hook"

ACTION_KINDS: dict[str, EmailKind] = {
    "signup": EmailKind.AUTH_SIGNUP,
    "recovery": EmailKind.AUTH_RECOVERY,
    "magiclink": EmailKind.AUTH_MAGICLINK,
    "email_change": EmailKind.AUTH_EMAIL_CHANGE,
    "invite": EmailKind.AUTH_INVITE,
    "reauthentication": EmailKind.AUTH_REAUTHENTICATION,
}

#: action -> (subject, what the email is for, the link's label)
_WORDING: dict[str, tuple[str, str, str | None]] = {
    "signup": (
        f"Confirm your {PRODUCT} account",
        f"Confirm your email address to finish signing up for {PRODUCT}.",
        "Confirm my email",
    ),
    "recovery": (
        f"Reset your {PRODUCT} password",
        f"Someone (we hope you) asked to reset the password of your {PRODUCT} account.",
        "Choose a new password",
    ),
    "magiclink": (
        f"Your {PRODUCT} sign-in link",
        f"Here is the link to sign in to {PRODUCT}.",
        "Sign in",
    ),
    "email_change": (
        "Confirm your new email address",
        f"Confirm that this address should be the one of your {PRODUCT} account.",
        "Confirm the change",
    ),
    "invite": (
        f"You have been invited to {PRODUCT}",
        f"You have been invited to create a {PRODUCT} account.",
        "Accept the invitation",
    ),
    "reauthentication": (
        f"Your {PRODUCT} verification code",
        "Enter this code to confirm it is you.",
        None,
    ),
}
_CURRENT_ADDRESS_PURPOSE = (
    f"Confirm that your {PRODUCT} account should move from this address to {{new_email}}."
)


class HookUser(msgspec.Struct, frozen=True, kw_only=True):
    """The members of Supabase's user we use; the rest is ignored."""

    id: uuid.UUID
    email: str = ""
    new_email: str | None = None
    user_metadata: dict[str, Any] | None = None


class EmailData(msgspec.Struct, frozen=True, kw_only=True):
    email_action_type: str
    token: str = ""
    token_hash: str = ""
    redirect_to: str = ""
    site_url: str = ""
    token_new: str = ""
    token_hash_new: str = ""


class SendEmailHook(msgspec.Struct, frozen=True, kw_only=True):
    user: HookUser
    email_data: EmailData


class AuthEmail(msgspec.Struct, frozen=True, kw_only=True):
    """One email to send: to whom, its kind, its content, and which of the hook's emails it is
    (``to``, or ``current``/``new`` for an email change) for its dedupe key."""

    role: str
    kind: EmailKind
    user_id: uuid.UUID
    to_address: str
    to_name: str | None
    content: RenderedEmail
    template: BrevoTemplate | None = None


def _full_name(user: HookUser) -> str | None:
    value = (user.user_metadata or {}).get("full_name")
    return display_name(value) if isinstance(value, str) else None


def verify_link(data: EmailData, token_hash: str) -> str:
    """Supabase's confirmation URL for ``token_hash``."""
    query = {"token": token_hash, "type": data.email_action_type}
    if data.redirect_to:
        query["redirect_to"] = data.redirect_to
    return f"{data.site_url.rstrip('/')}/verify?{urlencode(query)}"


def render(
    action: str, *, full_name: str | None, code: str, link: str | None, purpose: str | None = None
) -> RenderedEmail:
    """The email of one ``email_action_type``: greeting, purpose, the link, the code."""
    subject, default_purpose, label = _WORDING[action]
    lines = [_greeting(full_name), purpose or default_purpose]
    action_link = (label, link) if label is not None and link else None
    code_line = f"Or enter this code: {code}" if action_link is not None else f"Your code: {code}"
    outro = "If you did not ask for this, you can ignore this email."
    paragraphs = [html.escape(line) for line in lines]
    html_tail = [
        f"{'Or enter this code' if action_link else 'Your code'}:"
        f' <strong style="font-size:20px;letter-spacing:2px">{html.escape(code)}</strong>',
        html.escape(outro),
    ]
    return RenderedEmail(
        subject=subject,
        html=_html_page(subject, paragraphs + html_tail, action_link),
        text=_text_page([*lines, code_line, outro], action_link),
        tags=("auth", action),
    )


def emails_for(hook: SendEmailHook, templates: Mapping[str, int] | None = None) -> list[AuthEmail]:
    """The emails one call of the hook asks for; none for an action this service does not
    send (Supabase's optional security notifications). ``templates``: action -> Brevo
    template id."""
    data, user = hook.email_data, hook.user
    action = data.email_action_type
    kind = ACTION_KINDS.get(action)
    if kind is None:
        return []
    name = _full_name(user)
    with_link = action != "reauthentication"

    def email(role: str, to: str, code: str, token_hash: str, purpose: str | None) -> AuthEmail:
        link = verify_link(data, token_hash) if with_link and token_hash else None
        template_id = (templates or {}).get(action)
        template = None
        if template_id is not None:
            params = {
                "token": code,
                "token_hash": token_hash,
                "confirmation_url": link or "",
                "email_action_type": action,
                "email": to.strip(),
                "new_email": user.new_email or "",
                "full_name": name or "",
                "site_url": data.site_url,
                "redirect_to": data.redirect_to,
            }
            template = BrevoTemplate(id=template_id, params=params)
        return AuthEmail(
            role=role,
            kind=kind,
            user_id=user.id,
            to_address=to.strip(),
            to_name=name,
            content=render(action, full_name=name, code=code, link=link, purpose=purpose),
            template=template,
        )

    if action != "email_change":
        return [email("to", user.email, data.token, data.token_hash, None)]
    new_address = user.new_email or ""
    if data.token_new and data.token_hash_new and user.email:  # secure email change
        current_purpose = _CURRENT_ADDRESS_PURPOSE.format(new_email=new_address)
        return [
            email("current", user.email, data.token, data.token_hash_new, current_purpose),
            email("new", new_address, data.token_new, data.token_hash, None),
        ]
    return [email("new", new_address, data.token, data.token_hash, None)]


def auth_dedupe_key(webhook_id: str, role: str) -> str:
    """One email per hook call (its ``webhook-id``) and role: a replayed call sends nothing."""
    return f"{DEDUPE_PREFIX}:{webhook_id}:{role}"


def new_emails(
    webhook_id: str, hook: SendEmailHook, templates: Mapping[str, int] | None = None
) -> list[NewEmail]:
    """The emails of one hook call (:func:`emails_for`), ready to log under their dedupe keys."""
    return [
        NewEmail(
            kind=email.kind,
            dedupe_key=auth_dedupe_key(webhook_id, email.role),
            user_id=email.user_id,
            to_address=email.to_address,
            to_name=email.to_name,
            content=email.content,
            template=email.template,
        )
        for email in emails_for(hook, templates)
    ]
