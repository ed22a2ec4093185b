"""A Tencent Cloud IM REST emulator for the tests: the documented envelope
(`/v4/{service}/{command}?sdkappid&identifier&usersig&random&contenttype=json`, HTTP 200 with
ActionStatus / ErrorCode / ErrorInfo), UserSig checked by HMAC, the admin identifier, request
bodies validated with the provider's parameter codes, accounts, groups and message history,
duplicate messages dropped by random, a per-second limit, and a control surface to script
faults: any error code, HTTP 502/504, hang, reset, slow answers, bad JSON.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from prober.adapters.tencent import usersig

from .chat_app import free_port
from .loop_thread import LoopThread

SIG_CODES = {"expired": 70001, "malformed": 70003, "tampered": 70009, "mismatch": 70013}


def ok(**extra: Any) -> web.Response:
    return web.json_response({"ActionStatus": "OK", "ErrorCode": 0, "ErrorInfo": "", **extra})


def fail(code: int, info: str) -> web.Response:
    return web.json_response({"ActionStatus": "FAIL", "ErrorCode": code, "ErrorInfo": info})


@dataclass
class Fault:
    kind: str = "none"  # none, code, http, hang, reset, slow, badjson
    code: int = 0
    status: int = 502
    seconds: float = 0.0
    commands: frozenset[str] | None = None  # None: every command


@dataclass
class TencentEmulator:
    sdkappid: int = 1400000001
    key: str = "emulator-secret-key-0123456789"
    admin: str = "administrator"
    per_second: int = 200
    port: int = field(default_factory=free_port)
    accounts: set[str] = field(default_factory=set)
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)
    c2c: list[dict[str, Any]] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    fault: Fault = field(default_factory=Fault)
    _seq: itertools.count = field(default_factory=lambda: itertools.count(1))
    _window: list[float] = field(default_factory=list)
    _runner: web.AppRunner | None = None
    _thread: LoopThread = field(default_factory=lambda: LoopThread("tencent-emulator"))

    @property
    def domain(self) -> str:
        return f"127.0.0.1:{self.port}"

    # -- control ---------------------------------------------------------------------------

    def start(self) -> TencentEmulator:
        self._thread.start(self._start)
        return self

    def stop(self) -> None:
        assert self._runner is not None
        self._thread.stop(self._runner.cleanup)

    def set_fault(
        self,
        kind: str = "none",
        *,
        code: int = 0,
        status: int = 502,
        seconds: float = 0.0,
        commands: set[str] | None = None,
    ) -> None:
        self.fault = Fault(
            kind, code, status, seconds, frozenset(commands) if commands is not None else None
        )

    def sig(
        self, identifier: str | None = None, *, now: int | None = None, expire: int = 3600
    ) -> str:
        return usersig.generate(
            self.sdkappid,
            self.key,
            identifier or self.admin,
            now=int(now if now is not None else time.time()),
            expire=expire,
        )

    # -- the service -----------------------------------------------------------------------

    async def _start(self) -> None:
        app = web.Application(client_max_size=1 << 20)
        app.router.add_post("/v4/{service}/{command}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True).start()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        command = f"{request.match_info['service']}/{request.match_info['command']}"
        self.calls.append(command)
        fault = self.fault
        if fault.kind != "none" and (fault.commands is None or command in fault.commands):
            if fault.kind == "hang":
                await asyncio.sleep(3600)
            if fault.kind == "slow":
                await asyncio.sleep(fault.seconds)
            if fault.kind == "http":
                return web.Response(status=fault.status, text="<html>Bad Gateway</html>")
            if fault.kind == "badjson":
                return web.Response(
                    text='{"ActionStatus": "OK", "Err', content_type="application/json"
                )
            if fault.kind == "reset":
                assert request.transport is not None
                request.transport.abort()
                return web.Response()
            if fault.kind == "code":
                return fail(fault.code, "scripted fault")
        query = request.query
        if query.get("contenttype") != "json" or not query.get("random", "").isdigit():
            return fail(60002, "invalid query")
        if query.get("sdkappid") != str(self.sdkappid):
            return fail(70020, "SDKAppID not found")
        try:
            usersig.verify(
                query.get("usersig", ""),
                self.sdkappid,
                self.key,
                now=int(time.time()),
                identifier=query.get("identifier"),
            )
        except usersig.InvalidUserSig as exc:
            return fail(SIG_CODES[exc.reason], f"UserSig {exc.reason}")
        if query.get("identifier") != self.admin:
            return fail(60010, "the request needs the app administrator")
        now = time.monotonic()
        self._window = [t for t in self._window if now - t < 1.0]
        if len(self._window) >= self.per_second:
            return fail(60007, "REST API call frequency limit")
        self._window.append(now)
        try:
            body = await request.json()
        except ValueError:
            return fail(90001, "JSON parse error")
        if not isinstance(body, dict):
            return fail(90001, "JSON parse error")
        handler = getattr(self, "_" + command.replace("/", "__"), None)
        if handler is None:
            return fail(60003, "unknown command")
        return handler(body)

    def _im_open_login_svc__account_import(self, body: dict[str, Any]) -> web.Response:
        user = body.get("UserID")
        if not isinstance(user, str) or not user:
            return fail(90001, "UserID missing")
        self.accounts.add(user)
        return ok()

    def _im_open_login_svc__account_check(self, body: dict[str, Any]) -> web.Response:
        items = body.get("CheckItem")
        if not isinstance(items, list) or not items:
            return fail(90001, "CheckItem missing")
        return ok(
            ResultItem=[
                {
                    "UserID": i.get("UserID"),
                    "ResultCode": 0,
                    "ResultInfo": "",
                    "AccountStatus": "Imported"
                    if i.get("UserID") in self.accounts
                    else "NotImported",
                }
                for i in items
                if isinstance(i, dict)
            ]
        )

    @staticmethod
    def _text(body: dict[str, Any]) -> str | None:
        elems = body.get("MsgBody")
        if not isinstance(elems, list) or not elems:
            return None
        first = elems[0]
        if not isinstance(first, dict) or first.get("MsgType") != "TIMTextElem":
            return None
        text = (first.get("MsgContent") or {}).get("Text")
        return text if isinstance(text, str) else None

    def _openim__sendmsg(self, body: dict[str, Any]) -> web.Response:
        if not body.get("To_Account"):
            return fail(90003, "To_Account missing")
        if not isinstance(body.get("MsgRandom"), int):
            return fail(90005, "MsgRandom missing")
        text = self._text(body)
        if text is None:
            return fail(90002, "MsgBody invalid")
        sender, peer = body.get("From_Account"), body["To_Account"]
        if sender not in self.accounts or peer not in self.accounts:
            return fail(70107, "account not imported")
        now = int(time.time())
        for m in self.c2c:  # the provider drops a repeated random for a while
            key = (m["From_Account"], m["To_Account"], m["MsgRandom"])
            if key == (sender, peer, body["MsgRandom"]) and now - m["MsgTimeStamp"] < 300:
                return ok(MsgTime=m["MsgTimeStamp"], MsgKey=m["MsgKey"])
        seq = next(self._seq)
        message = {
            "From_Account": sender,
            "To_Account": peer,
            "MsgSeq": seq,
            "MsgRandom": body["MsgRandom"],
            "MsgTimeStamp": now,
            "MsgKey": f"{seq}_{body['MsgRandom']}_{now}",
            "MsgBody": body["MsgBody"],
        }
        self.c2c.append(message)
        return ok(MsgTime=now, MsgKey=message["MsgKey"])

    def _openim__admin_getroammsg(self, body: dict[str, Any]) -> web.Response:
        a, b = body.get("Operator_Account"), body.get("Peer_Account")
        lo, hi = body.get("MinTime", 0), body.get("MaxTime", 2**31)
        found = [
            m
            for m in self.c2c
            if {m["From_Account"], m["To_Account"]} == {a, b} and lo <= m["MsgTimeStamp"] <= hi
        ][-int(body.get("MaxCnt", 100)) :]
        return ok(Complete=1, MsgCnt=len(found), MsgList=found)

    def _group_open_http_svc__create_group(self, body: dict[str, Any]) -> web.Response:
        group = body.get("GroupId")
        if body.get("Type") == "AVChatRoom":
            return fail(10007, "the probe group must not be an AVChatRoom")
        if not isinstance(group, str) or not group:
            return fail(10004, "GroupId missing")
        if group in self.groups:
            return fail(10021, "GroupId already used")
        members = {body.get("Owner_Account")} | {
            m.get("Member_Account") for m in body.get("MemberList", []) if isinstance(m, dict)
        }
        self.groups[group] = {"type": body.get("Type", "Work"), "members": members, "messages": []}
        return ok(GroupId=group)

    def _group_open_http_svc__send_group_msg(self, body: dict[str, Any]) -> web.Response:
        group = self.groups.get(body.get("GroupId", ""))
        if group is None:
            return fail(10010, "group not found")
        if not isinstance(body.get("Random"), int):
            return fail(10004, "Random missing")
        if self._text(body) is None:
            return fail(10004, "MsgBody invalid")
        if body.get("From_Account") not in group["members"]:
            return fail(10007, "not a member")
        for m in group["messages"]:
            if m["MsgRandom"] == body["Random"] and time.time() - m["MsgTimeStamp"] < 300:
                return ok(MsgTime=m["MsgTimeStamp"], MsgSeq=m["MsgSeq"])
        seq = len(group["messages"]) + 1
        now = int(time.time())
        group["messages"].append(
            {
                "From_Account": body.get("From_Account"),
                "MsgSeq": seq,
                "MsgRandom": body["Random"],
                "MsgTimeStamp": now,
                "MsgBody": body["MsgBody"],
            }
        )
        return ok(MsgTime=now, MsgSeq=seq)

    def _group_open_http_svc__group_msg_get_simple(self, body: dict[str, Any]) -> web.Response:
        group = self.groups.get(body.get("GroupId", ""))
        if group is None:
            return fail(10010, "group not found")
        wanted = int(body.get("ReqMsgNumber", 20))
        return ok(
            GroupId=body["GroupId"],
            IsFinished=1,
            RspMsgList=list(reversed(group["messages"][-wanted:])),
        )
