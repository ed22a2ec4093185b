"""`im-prober matrix-setup`: create the two probe accounts and the two rooms on a homeserver
and print the config section. Idempotent: existing accounts, rooms and memberships are kept.

Accounts are made with Synapse's registration shared secret or an admin token; rooms get the
aliases #im-prober-direct and #im-prober-group, so a second run finds them again.
"""

from __future__ import annotations

import contextlib
import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from ..demo.homeserver import register_with_shared_secret
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
    def __init__(self, homeserver: str) -> None:
        self.homeserver = homeserver.rstrip("/")

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        token: str | None = None,
        ok_missing: bool = False,
    ) -> dict[str, Any] | None:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.homeserver + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=15) as response:
                return json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            if ok_missing and exc.code == 404:
                return None
            body_text = exc.read().decode(errors="replace")[:300]
            raise UserError(f"{method} {path.split('?')[0]}: {exc.code} {body_text}") from None
        except OSError as exc:
            raise UserError(f"cannot reach {self.homeserver}: {exc}") from None

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
    for localpart, secret in ((user, password), (peer, peer_password)):
        _create_account(client, localpart, secret, shared_secret, admin_token, server_name)
    user_id, token = client.login(user, password)
    peer_id, peer_token = client.login(peer, peer_password)
    server = user_id.split(":", 1)[1]
    direct = _ensure_room(client, token, peer_id, peer_token, DIRECT_ALIAS, server, True)
    group = _ensure_room(client, token, peer_id, peer_token, GROUP_ALIAS, server, False)
    for setup_token in (token, peer_token):  # the setup's own sessions are not kept
        client.call("POST", "/_matrix/client/v3/logout", {}, token=setup_token)
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
