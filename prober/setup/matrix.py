"""`im-prober matrix-setup`: create the two probe accounts and the two rooms on a homeserver
and print the config section. Idempotent: existing accounts, rooms and memberships are kept.

Accounts are made with Synapse's registration shared secret or an admin token; rooms get the
aliases #im-prober-direct and #im-prober-group, so a second run finds them again.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from ..errors import UserError

DIRECT_ALIAS = "im-prober-direct"
GROUP_ALIAS = "im-prober-group"


@dataclass(frozen=True)
class Provisioned:
    homeserver: str
    user: str
    peer_user: str
    direct_room: str
    group_room: str


class _Client:
    """A few JSON calls to a homeserver. httpx here: provisioning makes a handful of
    requests, far from the probe path, where aiohttp was measured cheaper."""

    def __init__(self, homeserver: str) -> None:
        self.homeserver = homeserver.rstrip("/")
        self._http = httpx.Client(base_url=self.homeserver, timeout=15.0, trust_env=False)

    def close(self) -> None:
        self._http.close()

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        token: str | None = None,
        ok_missing: bool = False,
    ) -> dict[str, Any] | None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            response = self._http.request(method, path, json=body, headers=headers)
        except httpx.HTTPError as exc:
            raise UserError(f"cannot reach {self.homeserver}: {exc}") from None
        if ok_missing and response.status_code == 404:
            return None
        if response.is_error:
            text = response.text[:300]
            raise UserError(f"{method} {path.split('?')[0]}: {response.status_code} {text}")
        try:
            return response.json() if response.content else {}
        except ValueError:
            raise UserError(f"{method} {path.split('?')[0]}: not JSON") from None

    def login(self, user: str, password: str) -> tuple[str, str]:
        document = self.call(
            "POST",
            "/_matrix/client/v3/login",
            {
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": user},
                "password": password,
                "device_id": "IMPROBER_SETUP",
            },
        )
        assert document is not None
        return document["user_id"], document["access_token"]


def register_with_shared_secret(
    homeserver: str, shared_secret: str, localpart: str, password: str, *, admin: bool = False
) -> bool:
    """Create an account through Synapse's shared-secret admin API. True when it was created,
    False when it existed already (left as it is)."""
    client = _Client(homeserver)
    try:
        found = client.call("GET", "/_synapse/admin/v1/register")
        assert found is not None
        nonce = found["nonce"]
        # HMAC-SHA1 over nonce, user, password and admin flag, NUL-separated (Synapse's API)
        message = b"\x00".join(
            p.encode() for p in (nonce, localpart, password, "admin" if admin else "notadmin")
        )
        mac = hmac.new(shared_secret.encode(), message, hashlib.sha1).hexdigest()
        body = {"nonce": nonce, "username": localpart, "password": password, "admin": admin}
        try:
            client.call("POST", "/_synapse/admin/v1/register", {**body, "mac": mac})
        except UserError as exc:
            if "M_USER_IN_USE" in str(exc):
                return False
            raise UserError(f"registering {localpart}: {exc}") from None
        return True
    finally:
        client.close()


def _create_account(
    client: _Client,
    localpart: str,
    password: str,
    shared_secret: str | None,
    admin_token: str | None,
    server_name: str | None,
) -> None:
    if shared_secret:
        register_with_shared_secret(client.homeserver, shared_secret, localpart, password)
        return
    if not admin_token or not server_name:
        raise UserError("give a registration shared secret, or an admin token and --server-name")
    user = f"@{localpart}:{server_name}"
    client.call(
        "PUT",
        f"/_synapse/admin/v2/users/{quote(user)}",
        {"password": password, "logout_devices": False},
        token=admin_token,
    )


def _ensure_room(
    client: _Client, token: str, peer: str, peer_token: str, alias: str, server: str, direct: bool
) -> str:
    full_alias = f"#{alias}:{server}"
    found = client.call(
        "GET", f"/_matrix/client/v3/directory/room/{quote(full_alias)}", ok_missing=True
    )
    if found is None:
        created = client.call(
            "POST",
            "/_matrix/client/v3/createRoom",
            {
                "preset": "trusted_private_chat" if direct else "private_chat",
                "is_direct": direct,
                "invite": [peer],
                "room_alias_name": alias,
                "name": "im-prober direct" if direct else "im-prober group",
                "topic": "Availability probes (im-prober). Messages here are synthetic.",
            },
            token=token,
        )
        assert created is not None
        room_id = created["room_id"]
    else:
        room_id = found["room_id"]
        # invite again in case the peer left; an existing member makes this fail harmlessly
        with contextlib.suppress(UserError):
            client.call(
                "POST",
                f"/_matrix/client/v3/rooms/{quote(room_id)}/invite",
                {"user_id": peer},
                token=token,
            )
    client.call("POST", f"/_matrix/client/v3/join/{quote(room_id)}", {}, token=peer_token)
    return room_id


def provision(
    homeserver: str,
    *,
    user: str,
    password: str,
    peer: str,
    peer_password: str,
    shared_secret: str | None = None,
    admin_token: str | None = None,
    server_name: str | None = None,
) -> Provisioned:
    client = _Client(homeserver)
    try:
        for localpart, secret in ((user, password), (peer, peer_password)):
            _create_account(client, localpart, secret, shared_secret, admin_token, server_name)
        user_id, token = client.login(user, password)
        peer_id, peer_token = client.login(peer, peer_password)
        server = user_id.split(":", 1)[1]
        direct = _ensure_room(client, token, peer_id, peer_token, DIRECT_ALIAS, server, True)
        group = _ensure_room(client, token, peer_id, peer_token, GROUP_ALIAS, server, False)
        for setup_token in (token, peer_token):  # the setup's own sessions are not kept
            client.call("POST", "/_matrix/client/v3/logout", {}, token=setup_token)
    finally:
        client.close()
    return Provisioned(client.homeserver, user_id, peer_id, direct, group)


def snippet(p: Provisioned, password_env: str, peer_password_env: str) -> str:
    return (
        f"    kind: matrix\n"
        f"    matrix:\n"
        f"      homeserver: {p.homeserver}\n"
        f'      user: "{p.user}"\n'
        f"      password: {{env: {password_env}}}\n"
        f'      peer_user: "{p.peer_user}"\n'
        f"      peer_password: {{env: {peer_password_env}}}\n"
        f'      direct_room: "{p.direct_room}"\n'
        f'      group_room: "{p.group_room}"\n'
        f"      verify_delivery: true\n"
    )
