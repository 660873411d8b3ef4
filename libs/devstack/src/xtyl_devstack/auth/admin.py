"""The local Auth's admin routes (``/auth/v1/admin/…``), for the service-role key only, as
supabase-py's ``auth.admin`` calls them: list, create, get, update and delete users, and
``generate_link`` (magic-link and recovery codes handed back instead of emailed)."""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING

import asyncpg
from aiohttp import web

from xtyl_devstack.auth import store
from xtyl_devstack.auth.errors import AuthApiError
from xtyl_devstack.auth.inputs import Handler, hash_password, metadata, read_json, text
from xtyl_devstack.auth.policy import check_password, checked_email
from xtyl_devstack.auth.store import Conn

if TYPE_CHECKING:
    from xtyl_devstack.auth.server import LocalAuth

EMAIL_EXISTS = "A user with this email address has already been registered"


class AdminApi:
    def __init__(self, auth: LocalAuth) -> None:
        self.auth = auth

    def routes(self) -> list[tuple[str, str, Handler]]:
        return [
            ("GET", "/admin/users", self.list_users),
            ("POST", "/admin/users", self.create_user),
            ("GET", "/admin/users/{user_id}", self.get_user),
            ("PUT", "/admin/users/{user_id}", self.update_user),
            ("DELETE", "/admin/users/{user_id}", self.delete_user),
            ("POST", "/admin/generate_link", self.generate_link),
        ]

    async def list_users(self, request: web.Request) -> web.Response:
        self.auth.require_admin(request)
        try:
            page = max(1, int(request.query.get("page") or "1"))
            per_page = min(1000, max(1, int(request.query.get("per_page") or "50")))
        except ValueError:
            raise AuthApiError(400, "validation_failed", "Bad Pagination Parameters") from None
        async with self.auth.pool.acquire() as conn:
            rows = await conn.fetch(
                f"select {store.USER_COLUMNS} from auth.users"  # noqa: S608 - constant columns
                " where aud = 'authenticated' order by created_at desc, id"
                " limit $1 offset $2",
                per_page,
                (page - 1) * per_page,
            )
            total = await conn.fetchval("select count(*) from auth.users")
        return web.json_response(
            {"users": [store.user_json(r) for r in rows], "aud": "authenticated"},
            headers={"X-Total-Count": str(total)},
        )

    async def create_user(self, request: web.Request) -> web.Response:
        self.auth.require_admin(request)
        body = await read_json(request)
        email = checked_email(text(body, "email"))
        password = text(body, "password")
        encrypted: str | None = None
        if password:
            check_password(password, self.auth.config)
            encrypted = await asyncio.to_thread(hash_password, password)
        async with self.auth.pool.acquire() as conn, conn.transaction():
            await store.lock_email(conn, email)
            if await store.find_user_by_email(conn, email) is not None:
                raise AuthApiError(422, "email_exists", EMAIL_EXISTS)
            user = await store.insert_user(
                conn,
                email=email,
                encrypted_password=encrypted,
                user_metadata=metadata(body, "user_metadata"),
                app_metadata={
                    "provider": "email",
                    "providers": ["email"],
                    **metadata(body, "app_metadata"),
                },
                confirmed=bool(body.get("email_confirm", False)),
            )
        return web.json_response(store.user_json(user))

    async def _user(self, request: web.Request, conn: Conn) -> asyncpg.Record:
        self.auth.require_admin(request)
        try:
            user_id = uuid.UUID(request.match_info["user_id"])
        except ValueError:
            raise AuthApiError(404, "user_not_found", "User not found") from None
        user = await store.find_user(conn, user_id)
        if user is None:
            raise AuthApiError(404, "user_not_found", "User not found")
        return user

    async def get_user(self, request: web.Request) -> web.Response:
        async with self.auth.pool.acquire() as conn:
            return web.json_response(store.user_json(await self._user(request, conn)))

    async def update_user(self, request: web.Request) -> web.Response:
        async with self.auth.pool.acquire() as conn, conn.transaction():
            user = await self._user(request, conn)
            body = await read_json(request)
            password = text(body, "password")
            if password:
                check_password(password, self.auth.config)
                await conn.execute(
                    "update auth.users set encrypted_password = $2, updated_at = now()"
                    " where id = $1",
                    user["id"],
                    await asyncio.to_thread(hash_password, password),
                )
            if body.get("email_confirm") is True:
                await conn.execute(
                    "update auth.users set email_confirmed_at = coalesce(email_confirmed_at,"
                    " now()), updated_at = now() where id = $1",
                    user["id"],
                )
            if isinstance(body.get("user_metadata"), dict):
                await store.merge_user_metadata(conn, user["id"], body["user_metadata"])
            if isinstance(body.get("app_metadata"), dict):
                await conn.execute(
                    "update auth.users set raw_app_meta_data ="
                    " coalesce(raw_app_meta_data, '{}'::jsonb) || $2, updated_at = now()"
                    " where id = $1",
                    user["id"],
                    body["app_metadata"],
                )
            updated = await store.find_user(conn, user["id"])
        assert updated is not None
        return web.json_response(store.user_json(updated))

    async def delete_user(self, request: web.Request) -> web.Response:
        async with self.auth.pool.acquire() as conn, conn.transaction():
            user = await self._user(request, conn)
            await conn.execute("delete from auth.users where id = $1", user["id"])
        return web.json_response({})

    async def generate_link(self, request: web.Request) -> web.Response:
        self.auth.require_admin(request)
        body = await read_json(request)
        kind = text(body, "type")
        if kind not in ("magiclink", "recovery"):
            raise AuthApiError(
                400, "validation_failed", "Only magiclink and recovery links are supported here"
            )
        email = checked_email(text(body, "email"))
        redirect_to = text(body, "redirect_to") or request.query.get("redirect_to")
        async with self.auth.pool.acquire() as conn, conn.transaction():
            user = await store.find_user_by_email(conn, email)
            if user is None:
                raise AuthApiError(404, "user_not_found", "User with this email not found")
            link = await self.auth.mailer.link(conn, user, kind, redirect_to)
            fresh = await store.find_user(conn, user["id"])
        assert fresh is not None
        return web.json_response({**store.user_json(fresh), **link})
