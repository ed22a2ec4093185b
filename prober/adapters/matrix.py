"""The `matrix` kind: any Matrix homeserver, client-server API v3.

- `login`: POST /login (m.login.password) with a fixed device_id, so a login every minute
  replaces the device's token instead of piling up devices.
- `send_c2c` / `send_group`: PUT /rooms/{room}/send/m.room.message/{txn} into the direct
  room and the group room, with a unique transaction id and text each attempt. The token
  from the last login is reused; a missing or rejected token triggers one login within the
  attempt.
- `verify_delivery`: the second (peer) account must see the event within the attempt's
  time, else the attempt is a `failure` with error kind `not_delivered`.

Errors: 429 / M_LIMIT_EXCEEDED → throttled; M_FORBIDDEN, M_UNKNOWN_TOKEN after a fresh
login, M_USER_DEACTIVATED and other 4xx → client_error; 5xx, timeouts and connection
errors → failure.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote, urlsplit

from pydantic import Field, field_validator

from ..config.fields import SecretRef
from ..config.secrets import Secret
from . import base
from .transport import LazySession, read_bounded, sendable_in_header, transport_failure

MAX_BODY = 1 << 20
POLL_SECONDS = 0.1
DELIVERY_MARGIN = 0.2  # seconds kept back from the timeout to report not_delivered ourselves

# errcode → (outcome maker, error kind)
_CLIENT_ERRORS = {
    "M_FORBIDDEN": "forbidden",
    "M_UNKNOWN_TOKEN": base.AUTH,
    "M_MISSING_TOKEN": base.AUTH,
    "M_USER_DEACTIVATED": "deactivated",
    "M_NOT_FOUND": "not_found",
    "M_BAD_JSON": base.CONFIG,
    "M_NOT_JSON": base.CONFIG,
    "M_INVALID_PARAM": base.CONFIG,
    "M_UNKNOWN": base.HTTP_4XX,
}


class MatrixSection(base.Section):
    homeserver: str = Field(description="base URL, e.g. https://matrix.example.org")
    user: str = Field(description="the probe account, @probe:example.org")
    password: SecretRef
    device_id: str = Field("IMPROBER", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    direct_room: str | None = Field(None, description="room id (!…) or alias (#…) for send_c2c")
    group_room: str | None = Field(None, description="room id (!…) or alias (#…) for send_group")
    peer_user: str | None = Field(None, description="the second account, @peer:example.org")
    peer_password: SecretRef | None = None
    verify_delivery: bool = False
    tls_verify: bool = True
    ca_file: Path | None = None

    @field_validator("homeserver")
    @classmethod
    def _url(cls, value: str) -> str:
        if urlsplit(value).scheme not in ("http", "https"):
            raise ValueError("homeserver must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("user", "peer_user")
    @classmethod
    def _mxid(cls, value: str | None) -> str | None:
        if value is not None and not (value.startswith("@") and ":" in value):
            raise ValueError("a Matrix user id looks like @probe:example.org")
        return value

    @field_validator("direct_room", "group_room")
    @classmethod
    def _room(cls, value: str | None) -> str | None:
        # Room ids carry a server name only in room versions before 12; aliases always do.
        if value is not None and not (
            (value.startswith("!") and len(value) > 1) or (value.startswith("#") and ":" in value)
        ):
            raise ValueError("a room is an id (!abc…) or an alias (#name:example.org)")
        return value


@dataclass
class _Account:
    user: str
    password: Secret
    device_id: str
    token: Secret | None = None


class _MatrixError(Exception):
    def __init__(self, result: base.Result) -> None:
        self.result = result


class MatrixAdapter(base.Adapter):
    kind: ClassVar[str] = "matrix"
    section_model: ClassVar[type[base.Section]] = MatrixSection
    probes: ClassVar[frozenset[str]] = frozenset({"login", "send_c2c", "send_group"})

    def __init__(self, target: str, section: base.Section, timeout: float) -> None:
        super().__init__(target, section, timeout)
        assert isinstance(section, MatrixSection)
        self.config: MatrixSection = section
        self.account = _Account(section.user, section.password, section.device_id)
        self.peer = (
            _Account(section.peer_user, section.peer_password, section.device_id + "_PEER")
            if section.peer_user and section.peer_password
            else None
        )
        self.rooms: dict[str, str] = {}  # alias → room id
        self._http = LazySession(verify=section.tls_verify, ca_file=section.ca_file)

    @classmethod
    def probe_problems(cls, section: base.Section, probes: list[str]) -> list[str]:
        assert isinstance(section, MatrixSection)
        problems = super().probe_problems(section, probes)
        if "send_c2c" in probes and section.direct_room is None:
            problems.append("send_c2c needs matrix.direct_room")
        if "send_group" in probes and section.group_room is None:
            problems.append("send_group needs matrix.group_room")
        if section.verify_delivery and (section.peer_user is None or section.peer_password is None):
            problems.append("verify_delivery needs matrix.peer_user and matrix.peer_password")
        return problems

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- the protocol ----------------------------------------------------------------

    async def _call(
        self,
        method: str,
        path: str,
        *,
        token: Secret | None = None,
        body: Any = None,
        what: str,
    ) -> dict[str, Any]:
        """One client-server API call; raises _MatrixError with the classified result."""
        headers = {"User-Agent": "im-prober"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token.reveal()}"
        data = None if body is None else json.dumps(body).encode()
        if data is not None:
            headers["Content-Type"] = "application/json"
        try:
            response = await self._http.session.request(
                method,
                self.config.homeserver + path,
                headers=headers,
                data=data,
                allow_redirects=False,
            )
        except Exception as exc:
            raise _MatrixError(transport_failure(exc, what)) from None
        try:
            status = response.status
            raw = await read_bounded(response, MAX_BODY)
        except Exception as exc:
            raise _MatrixError(transport_failure(exc, what)) from None
        finally:
            response.release()
        try:
            document = json.loads(raw) if raw else {}
        except (ValueError, RecursionError):
            document = None
        if not isinstance(document, dict):
            if status >= 500:
                raise _MatrixError(
                    base.failure(base.HTTP_5XX, f"{what} -> {status}", http_status=status)
                )
            raise _MatrixError(
                base.failure(base.BAD_RESPONSE, f"{what} -> {status}: not JSON", http_status=status)
            )
        if 200 <= status < 300:
            return document
        errcode = str(document.get("errcode", ""))
        detail = f"{what} -> {status} {errcode}".rstrip()
        if status == 429 or errcode == "M_LIMIT_EXCEEDED":
            raise _MatrixError(base.throttled(detail, http_status=status))
        if status >= 500:
            raise _MatrixError(base.failure(base.HTTP_5XX, detail, http_status=status))
        kind = _CLIENT_ERRORS.get(errcode, base.HTTP_4XX if status < 500 else base.HTTP_5XX)
        if status in (401, 403) and kind == base.HTTP_4XX:
            kind = base.AUTH
        raise _MatrixError(base.client_error(kind, detail, http_status=status))

    async def _login(self, account: _Account) -> None:
        document = await self._call(
            "POST",
            "/_matrix/client/v3/login",
            body={
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": account.user},
                "password": account.password.reveal(),
                "device_id": account.device_id,
                "initial_device_display_name": "im-prober",
            },
            what=f"login {account.user}",
        )
        token = document.get("access_token")
        if not isinstance(token, str) or not token:
            raise _MatrixError(base.failure(base.BAD_RESPONSE, "login: no access_token"))
        if not sendable_in_header(token):  # it goes back in the Authorization header
            raise _MatrixError(
                base.failure(base.BAD_RESPONSE, "login: access_token has a control character")
            )
        account.token = Secret(token, "matrix:access_token", ephemeral=True)

    async def _authed(self, account: _Account, method: str, path: str, body: Any, what: str):
        """A call with the account's token: logs in first when there is none, and once more
        when the server no longer accepts it."""
        if account.token is None:
            await self._login(account)
        try:
            return await self._call(method, path, token=account.token, body=body, what=what)
        except _MatrixError as exc:
            if exc.result.error_kind != base.AUTH:
                raise
        await self._login(account)
        return await self._call(method, path, token=account.token, body=body, what=what)

    async def _room_id(self, room: str) -> str:
        if room.startswith("!"):
            return room
        found = self.rooms.get(room)
        if found is None:
            document = await self._call(
                "GET",
                f"/_matrix/client/v3/directory/room/{quote(room, safe='')}",
                what="resolve room alias",
            )
            found = document.get("room_id")
            if not isinstance(found, str):
                raise _MatrixError(base.failure(base.BAD_RESPONSE, "alias lookup: no room_id"))
            self.rooms[room] = found
        return found

    async def _send(self, room: str, context: base.ProbeContext) -> base.Result:
        room_id = await self._room_id(room)
        txn = f"improber.{context.attempt_id}.{uuid.uuid4().hex[:8]}"
        text = f"im-prober {context.probe} {uuid.uuid4()}"
        path = (
            f"/_matrix/client/v3/rooms/{quote(room_id, safe='')}/send/m.room.message/"
            f"{quote(txn, safe='')}"
        )
        document = await self._authed(
            self.account,
            "PUT",
            path,
            {"msgtype": "m.notice", "body": text},
            f"send {context.probe}",
        )
        event_id = document.get("event_id")
        if not isinstance(event_id, str):
            return base.failure(base.BAD_RESPONSE, "send: no event_id")
        if not self.config.verify_delivery or self.peer is None:
            return base.Result.ok(http_status=200)
        return await self._await_delivery(room_id, event_id, context)

    async def _await_delivery(
        self, room_id: str, event_id: str, context: base.ProbeContext
    ) -> base.Result:
        assert self.peer is not None
        deadline = time.monotonic() + max(0.1, context.timeout - DELIVERY_MARGIN)
        # the attempt started before the send; what is left is the margin we keep back
        path = (
            f"/_matrix/client/v3/rooms/{quote(room_id, safe='')}/event/{quote(event_id, safe='')}"
        )
        while True:
            try:
                await self._authed(self.peer, "GET", path, None, "peer reads the event")
                return base.Result.ok(http_status=200)
            except _MatrixError as exc:
                if exc.result.error_kind != "not_found":
                    raise
            if time.monotonic() + POLL_SECONDS >= deadline:
                return base.failure(
                    "not_delivered", f"the peer did not see the event within {context.timeout:g}s"
                )
            await asyncio.sleep(POLL_SECONDS)

    async def attempt(self, context: base.ProbeContext) -> base.Result:
        try:
            if context.probe == "login":
                await self._login(self.account)
                return base.Result.ok(http_status=200)
            room = (
                self.config.direct_room if context.probe == "send_c2c" else self.config.group_room
            )
            assert room is not None  # checked at config load
            return await self._send(room, context)
        except _MatrixError as exc:
            return exc.result
