"""The `tencent_im` kind: Tencent Cloud IM's REST API (DESIGN.md §6).

- `login`: a freshly generated admin UserSig and `im_open_login_svc/account_check` of the
  probe accounts, which must come back `Imported` (back-end management through the
  interface counts for the SLA).
- `send_c2c`: `openim/sendmsg` from the probe account to its peer, `SyncOtherMachine` 2,
  a fresh `MsgRandom` and unique text.
- `send_group`: `group_open_http_svc/send_group_msg` into the probe group, fresh `Random`.
- `verify_delivery`: the message must be readable back (`openim/admin_getroammsg` /
  `group_open_http_svc/group_msg_get_simple`), matched on MsgKey / MsgSeq and random.

Every call: POST https://{domain}/v4/{service}/{command}?sdkappid=&identifier=&usersig=
&random=&contenttype=json with a JSON body. HTTP is 200 even for errors; ActionStatus /
ErrorCode / ErrorInfo in the body say what happened (errors.py classifies the codes).
"""

from __future__ import annotations

import asyncio
import json
import secrets as _random
import time
import uuid
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlencode

from pydantic import Field, model_validator

from ..config.fields import Duration, SecretRef, within
from ..config.secrets import remember
from ..sla import Outcome
from . import base
from .tencent import errors, usersig
from .transport import LazySession, read_bounded, transport_failure

# Regional REST domains and their backups (the provider's published list).
DOMAINS: dict[str, tuple[str, str]] = {
    "china": ("console.tim.qq.com", "adminapi.my-imcloud.com"),
    "singapore": ("adminapisgp.im.qcloud.com", "adminapisgp.my-imcloud.com"),
    "seoul": ("adminapikr.im.qcloud.com", "adminapikr.my-imcloud.com"),
    "tokyo": ("adminapijpn.im.qcloud.com", "adminapijpn.my-imcloud.com"),
    "frankfurt": ("adminapiger.im.qcloud.com", "adminapiger.my-imcloud.com"),
    "mumbai": ("adminapiind.im.qcloud.com", "adminapiind.my-imcloud.com"),
    "silicon_valley": ("adminapiusa.im.qcloud.com", "adminapiusa.my-imcloud.com"),
    "jakarta": ("adminapiidn.im.qcloud.com", "adminapiidn.my-imcloud.com"),
}
MAX_BODY = 1 << 20
SIG_LIFETIME = 86400  # seconds a generated admin UserSig is valid
SIG_RENEW_BEFORE = 3600  # regenerate well before expiry (login always makes a fresh one)
POLL_SECONDS = 0.2


class TencentSection(base.Section):
    sdkappid: int = Field(gt=0)
    secret_key: SecretRef
    admin_identifier: str = Field("administrator", min_length=1)
    region: (
        Literal[
            "china",
            "singapore",
            "seoul",
            "tokyo",
            "frankfurt",
            "mumbai",
            "silicon_valley",
            "jakarta",
        ]
        | None
    ) = None
    domain: str | None = Field(None, description="explicit host[:port] instead of a region")
    backup_domain: str | None = None
    scheme: Literal["https", "http"] = "https"  # http only for local emulators
    backup_policy: Literal["off", "fallback"] = Field(
        "off",
        description="off: the primary only (the customer's experience); fallback: try "
        "the backup when the primary cannot be reached",
    )
    from_account: str = Field("im_prober_a", min_length=1)
    to_account: str = Field("im_prober_b", min_length=1)
    group_id: str | None = None
    verify_delivery: bool = False
    fresh_connection: bool = False
    tls_verify: bool = True
    ca_file: Path | None = None
    sig_lifetime: Annotated[Duration, within(at_least=60.0)] = Field(
        SIG_LIFETIME, description="validity of generated UserSigs"
    )

    @model_validator(mode="after")
    def _where(self) -> TencentSection:
        if (self.region is None) == (self.domain is None):
            raise ValueError("give either region or domain")
        return self

    @property
    def hosts(self) -> tuple[str, str | None]:
        if self.domain is not None:
            return self.domain, self.backup_domain
        assert self.region is not None
        return DOMAINS[self.region]


class _Fail(Exception):
    def __init__(self, result: base.Result) -> None:
        self.result = result


class TencentImAdapter(base.Adapter):
    kind: ClassVar[str] = "tencent_im"
    section_model: ClassVar[type[base.Section]] = TencentSection
    probes: ClassVar[frozenset[str]] = frozenset({"login", "send_c2c", "send_group"})

    def __init__(self, target: str, section: base.Section, timeout: float) -> None:
        super().__init__(target, section, timeout)
        assert isinstance(section, TencentSection)
        self.config: TencentSection = section
        self._http = LazySession(
            verify=section.tls_verify,
            ca_file=section.ca_file,
            fresh_connection=section.fresh_connection,
        )
        self._sig: str | None = None
        self._sig_until = 0.0
        self.last_host: str | None = None  # which domain answered the last call

    @classmethod
    def probe_problems(cls, section: base.Section, probes: list[str]) -> list[str]:
        assert isinstance(section, TencentSection)
        problems = super().probe_problems(section, probes)
        if "send_group" in probes and section.group_id is None:
            problems.append("send_group needs tencent_im.group_id")
        return problems

    async def aclose(self) -> None:
        await self._http.aclose()

    def usersig(self, *, fresh: bool = False) -> str:
        now = time.time()
        if fresh or self._sig is None or now > self._sig_until:
            lifetime = int(self.config.sig_lifetime)
            self._sig = usersig.generate(
                self.config.sdkappid,
                self.config.secret_key.reveal(),
                self.config.admin_identifier,
                now=int(now),
                expire=lifetime,
            )
            remember(self._sig, ephemeral=True)  # never in a log line or a record
            self._sig_until = now + max(lifetime - SIG_RENEW_BEFORE, lifetime / 2)
        return self._sig

    def _url(self, host: str, command: str, sig: str) -> str:
        query = urlencode(
            {
                "sdkappid": self.config.sdkappid,
                "identifier": self.config.admin_identifier,
                "usersig": sig,
                "random": _random.randbits(32),
                "contenttype": "json",
            }
        )
        return f"{self.config.scheme}://{host}/v4/{command}?{query}"

    async def call(
        self, command: str, body: dict[str, Any], *, fresh_sig: bool = False
    ) -> dict[str, Any]:
        """One REST call; returns the body of an OK answer, raises _Fail otherwise."""
        primary, backup = self.config.hosts
        sig = self.usersig(fresh=fresh_sig)
        hosts = [primary]
        if self.config.backup_policy == "fallback" and backup:
            hosts.append(backup)
        last: base.Result | None = None
        for host in hosts:
            try:
                return await self._call_host(host, command, body, sig)
            except _Fail as exc:
                last = exc.result
                # only an unreachable primary is worth the backup: an answer is an answer
                if exc.result.error_kind not in (base.CONNECT, base.DNS, base.TLS, base.RESET):
                    raise
        assert last is not None
        raise _Fail(last)

    async def _call_host(
        self, host: str, command: str, body: dict[str, Any], sig: str
    ) -> dict[str, Any]:
        what = command
        try:
            response = await self._http.session.post(
                self._url(host, command, sig),
                data=json.dumps(body).encode(),
                headers={"Content-Type": "application/json", "User-Agent": "im-prober"},
                allow_redirects=False,
            )
        except Exception as exc:
            raise _Fail(transport_failure(exc, what)) from None
        try:
            status = response.status
            try:
                raw = await read_bounded(response, MAX_BODY)
            except Exception as exc:
                raise _Fail(transport_failure(exc, what, status)) from None
        finally:
            response.release()
        self.last_host = host
        if status == 429:
            raise _Fail(base.throttled(f"{what} -> 429", http_status=status))
        if status >= 500:
            raise _Fail(base.failure(base.HTTP_5XX, f"{what} -> {status}", http_status=status))
        if status != 200:
            kind = base.AUTH if status in (401, 403) else base.HTTP_4XX
            raise _Fail(base.client_error(kind, f"{what} -> {status}", http_status=status))
        try:
            document = json.loads(raw or b"")
        except (ValueError, RecursionError):
            document = None
        if not isinstance(document, dict):
            raise _Fail(base.failure(base.BAD_RESPONSE, f"{what}: not JSON", http_status=status))
        code = document.get("ErrorCode", 0)
        code = code if isinstance(code, int) else -1
        if document.get("ActionStatus") == "OK" and code == 0:
            return document
        classified = errors.classify(code)
        if classified.outcome is Outcome.SUCCESS:  # FAIL with code 0: not a sane answer
            classified = errors.Classified(Outcome.FAILURE, base.BAD_RESPONSE)
        info = str(document.get("ErrorInfo", ""))[:80]
        raise _Fail(
            base.Result(
                classified.outcome,
                classified.kind,
                error_code=code,
                http_status=status,
                detail=f"{what}: {code} {info}".rstrip(),
            )
        )

    # -- probes --------------------------------------------------------------------------

    async def _login(self) -> base.Result:
        accounts = [self.config.from_account, self.config.to_account]
        document = await self.call(
            "im_open_login_svc/account_check",
            {"CheckItem": [{"UserID": a} for a in accounts]},
            fresh_sig=True,
        )
        items = document.get("ResultItem")
        if not isinstance(items, list):
            return base.failure(base.BAD_RESPONSE, "account_check: no ResultItem")
        status = {i.get("UserID"): i.get("AccountStatus") for i in items if isinstance(i, dict)}
        missing = [a for a in accounts if status.get(a) != "Imported"]
        if missing:
            return base.client_error(
                "account",
                f"account_check: {', '.join(missing)} not imported (run im-prober tencent-setup)",
            )
        return base.Result.ok(http_status=200)

    async def _send_c2c(self, context: base.ProbeContext) -> base.Result:
        random = _random.randbits(32)
        text = f"im-prober {uuid.uuid4()}"
        sent_at = int(time.time())
        document = await self.call(
            "openim/sendmsg",
            {
                "SyncOtherMachine": 2,
                "From_Account": self.config.from_account,
                "To_Account": self.config.to_account,
                "MsgRandom": random,
                "MsgBody": [{"MsgType": "TIMTextElem", "MsgContent": {"Text": text}}],
            },
        )
        if not self.config.verify_delivery:
            return base.Result.ok(http_status=200)
        key = document.get("MsgKey")
        return await self._until_found(context, lambda: self._roam_has(key, random, sent_at))

    async def _send_group(self, context: base.ProbeContext) -> base.Result:
        random = _random.randbits(32)
        document = await self.call(
            "group_open_http_svc/send_group_msg",
            {
                "GroupId": self.config.group_id,
                "From_Account": self.config.from_account,
                "Random": random,
                "MsgBody": [
                    {"MsgType": "TIMTextElem", "MsgContent": {"Text": f"im-prober {uuid.uuid4()}"}}
                ],
            },
        )
        if not self.config.verify_delivery:
            return base.Result.ok(http_status=200)
        seq = document.get("MsgSeq")
        return await self._until_found(context, lambda: self._group_has(seq, random))

    async def _roam_has(self, key: Any, random: int, sent_at: int) -> bool:
        document = await self.call(
            "openim/admin_getroammsg",
            {
                "Operator_Account": self.config.from_account,
                "Peer_Account": self.config.to_account,
                "MaxCnt": 20,
                "MinTime": sent_at - 5,
                "MaxTime": sent_at + 60,
            },
        )
        messages = document.get("MsgList") or []
        return any(
            isinstance(m, dict) and (m.get("MsgKey") == key or m.get("MsgRandom") == random)
            for m in messages
        )

    async def _group_has(self, seq: Any, random: int) -> bool:
        document = await self.call(
            "group_open_http_svc/group_msg_get_simple",
            {"GroupId": self.config.group_id, "ReqMsgNumber": 20},
        )
        messages = document.get("RspMsgList") or []
        return any(
            isinstance(m, dict) and (m.get("MsgSeq") == seq and m.get("MsgRandom") == random)
            for m in messages
        )

    async def _until_found(self, context: base.ProbeContext, check) -> base.Result:
        deadline = time.monotonic() + max(0.1, context.timeout - 0.3)
        while True:
            if await check():
                return base.Result.ok(http_status=200)
            if time.monotonic() + POLL_SECONDS >= deadline:
                return base.failure("not_delivered", "the message could not be read back in time")
            await asyncio.sleep(POLL_SECONDS)

    async def attempt(self, context: base.ProbeContext) -> base.Result:
        try:
            if context.probe == "login":
                return await self._login()
            if context.probe == "send_c2c":
                return await self._send_c2c(context)
            return await self._send_group(context)
        except _Fail as exc:
            return exc.result
