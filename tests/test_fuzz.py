"""Hypothesis fuzzing of everything that reads outside input: the config loader, the web
config, the minute-CSV import, and the response parsing of every protocol adapter (fed by a
real local server that answers with generated statuses, headers and bodies). Only clean
errors are allowed: a UserError for files, a Result for responses; never another exception,
never a hang."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from prober.adapters import ProbeContext
from prober.adapters.base import Result
from prober.adapters.http import HttpAdapter, HttpSection
from prober.adapters.matrix import MatrixAdapter, MatrixSection
from prober.adapters.tencent_im import TencentImAdapter, TencentSection
from prober.config.models import parse_config
from prober.config.secrets import Secret
from prober.errors import UserError
from prober.expose.webconfig import load_web_config, parse_basic
from prober.ledger.minute_csv import read_rows
from prober.sla import Outcome

from .chat_app import free_port
from .daemon_util import ROOT
from .loop_thread import LoopThread

EXAMPLE = (ROOT / "config" / "example.yaml").read_text()
SAMPLE = (ROOT / "config" / "sample.yaml").read_text()
FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# -- files -------------------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=True),
    st.text(max_size=30),
    st.sampled_from(
        ["{env: X}", "{file: /nonexistent}", "[]", "{}", "*a", "&a x", "!!python/object:os.system"]
    ),
)


@st.composite
def mutated_yaml(draw: st.DrawFn, base: str) -> str:
    lines = base.splitlines()
    for _ in range(draw(st.integers(1, 4))):
        if not lines:
            break
        i = draw(st.integers(0, len(lines) - 1))
        action = draw(st.sampled_from(["drop", "dup", "value", "indent", "insert"]))
        line = lines[i]
        if action == "drop":
            del lines[i]
        elif action == "dup":
            lines.insert(i, line)
        elif action == "value" and ":" in line:
            key = line.split(":", 1)[0]
            lines[i] = f"{key}: {draw(scalars)}"
        elif action == "indent":
            lines[i] = " " * draw(st.integers(0, 7)) + line.lstrip()
        else:
            lines.insert(i, draw(st.text(max_size=40)))
    return "\n".join(lines) + "\n"


def load_or_user_error(text: str, path: Path) -> None:
    started = time.monotonic()
    try:
        parse_config(text, path, resolve_secrets=False)
    except UserError as exc:
        assert str(exc)  # a message, naming the file
        assert str(path) in str(exc)
    assert time.monotonic() - started < 5


@FUZZ
@given(text=st.one_of(mutated_yaml(EXAMPLE), mutated_yaml(SAMPLE), st.text(max_size=300)))
def test_config_loader_gives_clean_errors(tmp_path: Path, text: str) -> None:
    load_or_user_error(text, tmp_path / "config.yaml")


@FUZZ
@given(
    text=st.one_of(
        mutated_yaml(
            "tls_server_config:\n  cert_file: a.crt\n  key_file: a.key\n  min_version: TLS12\n"
            "basic_auth_users:\n  u: $2b$10$abcdefghijklmnopqrstuuFz0BzJ0mY8Yp1gq3cZQ8yq7M6lZb1nO\n"
            "open_health_endpoints: true\n"
        ),
        st.text(max_size=200),
    )
)
def test_web_config_loader_gives_clean_errors(tmp_path: Path, text: str) -> None:
    path = tmp_path / "web.yml"
    path.write_text(text, encoding="utf-8")
    try:
        load_web_config(path)
    except UserError as exc:
        assert str(path) in str(exc)


@FUZZ
@given(
    header=st.one_of(
        st.none(), st.text(max_size=80), st.binary(max_size=60).map(lambda b: "Basic " + b.hex())
    )
)
def test_basic_auth_header_parsing_never_raises(header: str | None) -> None:
    parsed = parse_basic(header)
    assert parsed is None or isinstance(parsed[0], str)


CSV_HEADER = "target,probe,minute,state,reason\n"
csv_fields = st.one_of(
    st.sampled_from(
        [
            "demo",
            "nope",
            "",
            "login",
            "2026-10-01T00:00:00Z",
            "2026-10-01T00:00:30Z",
            "available",
            "no_data",
            "prober_down",
            "maintenance",
            '"',
            "\x00",
            "\r",
        ]
    ),
    st.text(max_size=12),
)


@FUZZ
@given(
    body=st.one_of(
        st.lists(st.lists(csv_fields, min_size=0, max_size=7), max_size=8).map(
            lambda rows: CSV_HEADER + "\n".join(",".join(r) for r in rows)
        ),
        st.binary(max_size=300).map(lambda b: b.decode("latin-1")),
    ),
    gzipped=st.booleans(),
)
def test_csv_import_gives_clean_errors(tmp_path: Path, body: str, gzipped: bool) -> None:
    import gzip

    path = tmp_path / "rows.csv"
    raw = body.encode("utf-8", "surrogatepass")
    path.write_bytes(gzip.compress(raw) if gzipped else raw)
    try:
        rows = read_rows(path, {"demo"})
    except UserError as exc:
        assert str(path) in str(exc) or "nothing was imported" in str(exc)
    else:
        assert all(row.target == "demo" for _, row in rows)


# -- protocol responses ------------------------------------------------------------------

json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63),
    st.floats(allow_nan=False),
    st.text(max_size=20),
)
KEYS = [
    "ActionStatus",
    "ErrorCode",
    "ErrorInfo",
    "ResultItem",
    "UserID",
    "AccountStatus",
    "MsgTime",
    "MsgKey",
    "MsgList",
    "RspMsgList",
    "errcode",
    "error",
    "access_token",
    "device_id",
    "event_id",
    "room_id",
    "chunk",
    "joined_rooms",
    "token",
    "ok",
    "id",
]
json_docs = st.recursive(
    json_leaf,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.one_of(st.sampled_from(KEYS), st.text(max_size=8)), children, max_size=6
        ),
    ),
    max_leaves=20,
)
# Tokens go back in a header: ones aiohttp refuses to write there are drawn often, not by luck.
token_leaf = st.one_of(
    json_leaf, st.sampled_from(["syt_\r\nX-Injected: 1", "syt_\x00", "syt_\x7f", "syt_\ud800"])
)
plausible = st.fixed_dictionaries(
    {
        "ActionStatus": st.sampled_from(["OK", "FAIL", "", None]),
        "ErrorCode": st.one_of(st.sampled_from([0, 70001, 90001, 20003, 10002, -1]), json_leaf),
    },
    optional={
        "ResultItem": json_docs,
        "ErrorInfo": json_leaf,
        "access_token": token_leaf,
        "event_id": json_leaf,
        "errcode": st.sampled_from(["M_FORBIDDEN", "M_LIMIT_EXCEEDED", "M_UNKNOWN_TOKEN", ""]),
        "token": token_leaf,
        "ok": json_leaf,
        "room_id": json_leaf,
    },
)
bodies = st.one_of(
    json_docs.map(lambda d: json.dumps(d).encode()),
    plausible.map(lambda d: json.dumps(d).encode()),
    st.binary(max_size=200),
    st.integers(1, 3000).map(lambda n: b"[" * n + b"]" * n),
    st.just(b""),
)
UNSENDABLE_TOKENS = json.dumps({"access_token": "syt_\r\nX: 1", "token": "syt_\x00"}).encode()
responses = st.tuples(
    st.sampled_from([200, 200, 200, 201, 204, 301, 400, 401, 403, 404, 429, 500, 502, 503]),
    st.sampled_from(["application/json", "text/plain", "application/json; charset=latin-1", ""]),
    bodies,
)


class FuzzServer:
    """Answers every request with the response of the current example."""

    def __init__(self) -> None:
        self.port = free_port()
        self.response: tuple[int, str, bytes] = (200, "application/json", b"{}")
        self._thread = LoopThread("fuzz-server")
        self._runner: web.AppRunner | None = None

    def start(self) -> FuzzServer:
        async def setup() -> None:
            async def answer(_request: web.Request) -> web.Response:
                status, content_type, body = self.response
                headers = {"Content-Type": content_type} if content_type else {}
                if 300 <= status < 400:
                    headers["Location"] = "/elsewhere"
                return web.Response(status=status, body=body, headers=headers)

            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", answer)
            self._runner = web.AppRunner(app)
            await self._runner.setup()
            await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

        self._thread.start(setup)
        return self

    def stop(self) -> None:
        async def cleanup() -> None:
            if self._runner is not None:
                await self._runner.cleanup()

        self._thread.stop(cleanup)


@pytest.fixture(scope="module")
def fuzz_server():
    server = FuzzServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client_loop():
    loop = LoopThread("fuzz-client")

    async def nothing() -> None:
        return None

    loop.start(nothing)
    yield loop

    async def done() -> None:
        return None

    loop.stop(done)


def adapters(port: int) -> dict[str, Any]:
    base = f"http://127.0.0.1:{port}"
    http = HttpAdapter(
        "fuzz-http",
        HttpSection.model_validate(
            {
                "base_url": base,
                "probes": {
                    "login": [
                        {
                            "method": "POST",
                            "url": "/login",
                            "extract": {"token": {"path": "token", "secret": True}},
                        }
                    ],
                    "send_c2c": [
                        {
                            "url": "/send",
                            "headers": {"Authorization": "Bearer {token}"},
                            "expect_json": {"ok": True, "items[0].id": 1},
                            "extract": {"id": "items[1].id"},
                        }
                    ],
                },
                "refresh_with": None,
            }
        ),
        2.0,
    )
    matrix = MatrixAdapter(
        "fuzz-matrix",
        MatrixSection.model_validate(
            {
                "homeserver": base,
                "user": "@probe:example.org",
                "password": Secret("matrix-pass", "env:X"),
                "direct_room": "!room:example.org",
                "group_room": "#group:example.org",
                "peer_user": "@peer:example.org",
                "peer_password": Secret("peer-pass", "env:Y"),
            }
        ),
        2.0,
    )
    tencent = TencentImAdapter(
        "fuzz-tencent",
        TencentSection.model_validate(
            {
                "sdkappid": 1400000001,
                "secret_key": Secret("fuzz-key-0123456789", "env:Z"),
                "domain": f"127.0.0.1:{port}",
                "scheme": "http",
                "group_id": "g1",
                "verify_delivery": True,
            }
        ),
        2.0,
    )
    return {"http": http, "matrix": matrix, "tencent": tencent}


@pytest.fixture(scope="module")
def fuzz_adapters(fuzz_server, client_loop):
    made = adapters(fuzz_server.port)
    yield made

    async def close() -> None:
        for adapter in made.values():
            await adapter.aclose()

    client_loop.call(close())


PROBES = {
    "http": ["login", "send_c2c"],
    "matrix": ["login", "send_c2c", "send_group"],
    "tencent": ["login", "send_c2c", "send_group"],
}


@pytest.mark.parametrize("kind", sorted(PROBES))
@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(response=responses, probe_index=st.integers(0, 2))
# run first, in this order: a login answered with a token that cannot go in a header, then a
# send, which would carry it (the adapter keeps its token from one example to the next)
@example(response=(200, "application/json", UNSENDABLE_TOKENS), probe_index=0)
@example(response=(200, "application/json", b'{"ok": true}'), probe_index=1)
def test_adapters_turn_any_response_into_a_result(
    kind: str, response, probe_index: int, fuzz_server, client_loop, fuzz_adapters
) -> None:
    fuzz_server.response = response
    adapter = fuzz_adapters[kind]
    probe = PROBES[kind][probe_index % len(PROBES[kind])]

    async def one() -> Result | None:
        context = ProbeContext(adapter.target, probe, 2.0, time.time(), "f1")
        try:
            async with asyncio.timeout(3.0):
                return await adapter.attempt(context)
        except TimeoutError:
            return None

    result = client_loop.call(one())
    assert result is not None, "the adapter hung on a complete response"
    assert isinstance(result, Result)
    assert "matrix-pass" not in result.detail and "fuzz-key" not in result.detail


@FUZZ
@given(
    stdout=st.one_of(
        st.binary(max_size=200),
        st.builds(
            lambda d, rest: json.dumps(d).encode() + rest,
            st.dictionaries(
                st.sampled_from(["outcome", "error_kind", "detail", "x"]),
                st.one_of(
                    json_leaf,
                    st.lists(json_leaf, max_size=2),
                    st.sampled_from(
                        [
                            "success",
                            "failure",
                            "client_error",
                            "throttled",
                            "prober_fault",
                            "Bad Kind",
                        ]
                    ),
                ),
                max_size=4,
            ),
            st.binary(max_size=20),
        ),
    ),
    returncode=st.integers(-255, 255),
)
def test_external_report_line_gives_a_result(stdout: bytes, returncode: int) -> None:
    from prober.adapters.external import parse_report

    result = parse_report(stdout, returncode)
    assert isinstance(result, Result)
    if returncode != 0:
        assert result.outcome is not Outcome.SUCCESS
