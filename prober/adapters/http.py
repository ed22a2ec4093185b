"""The `http` kind: declarative request steps against any chat service with an HTTP API.

Each probe is a list of steps. A step renders its URL, headers and body from templates
(`{uuid}`, `{random}`, `{now}`, configured variables and secrets, values extracted by earlier
steps), sends the request, checks the status and JSON fields, and extracts values for later
steps. Extracted values persist across attempts of the target, so a login probe's token can
serve the send probes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, field_validator, model_validator

from ..config.fields import SecretRef
from ..config.secrets import Secret
from ..sla import Outcome
from . import base
from .templates import (
    MISSING,
    TemplateError,
    builtins,
    lookup,
    parse_path,
    placeholders,
    render,
    render_text,
)
from .transport import (
    LazySession,
    read_bounded,
    sendable_in_header,
    status_result,
    transport_failure,
)

Scalar = str | int | float | bool


class Extract(base.Section):
    path: str
    secret: bool = Field(False, description="scrub the value from logs and records (tokens)")

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        parse_path(value)
        return value


class Step(base.Section):
    name: str = ""
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"] = "GET"
    url: str = Field(description="absolute, or relative to base_url; a template")
    headers: dict[str, SecretRef | str] = Field(default_factory=dict)
    json_body: Any = Field(
        None, validation_alias=AliasChoices("json", "json_body"), serialization_alias="json"
    )
    body: str | None = None
    expect_status: list[Annotated[int, Field(ge=100, le=599)]] = Field(
        default_factory=list, description="accepted statuses; default any 2xx"
    )
    expect_json: dict[str, Any] = Field(
        default_factory=dict, description="JSON path -> the value it must have"
    )
    extract: dict[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")], str | Extract] = (
        Field(default_factory=dict)
    )

    @model_validator(mode="after")
    def _one_body(self) -> Step:
        if self.json_body is not None and self.body is not None:
            raise ValueError("give json or body, not both")
        for path in self.expect_json:
            parse_path(path)
        for spec in self.extract.values():
            parse_path(spec if isinstance(spec, str) else spec.path)
        return self

    def extracts(self) -> dict[str, Extract]:
        return {
            k: v if isinstance(v, Extract) else Extract(path=v) for k, v in self.extract.items()
        }


class HttpSection(base.Section):
    base_url: str | None = None
    headers: dict[str, SecretRef | str] = Field(default_factory=dict)
    variables: dict[
        Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")], SecretRef | Scalar
    ] = Field(default_factory=dict)
    probes: dict[str, list[Step]] = Field(description="steps of each probe", min_length=1)
    tls_verify: bool = True
    ca_file: Path | None = None
    max_body_bytes: int = Field(1 << 20, ge=1024, le=64 << 20)
    max_redirects: int = Field(0, ge=0, le=10)
    fresh_connection: bool = Field(
        False, description="a new connection for every attempt (DNS, TCP, TLS each time)"
    )
    refresh_with: str | None = Field(
        "login",
        description="probe whose steps run first when a needed value is missing or a step "
        "gets 401/403 (e.g. an expired token); null to turn off",
    )

    @field_validator("probes")
    @classmethod
    def _steps(cls, value: dict[str, list[Step]]) -> dict[str, list[Step]]:
        for name, steps in value.items():
            if not steps:
                raise ValueError(f"probe {name} has no steps")
        return value

    @field_validator("base_url")
    @classmethod
    def _base(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in ("http", "https"):
            raise ValueError("base_url must start with http:// or https://")
        return value


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    url: str
    headers: dict[str, str]
    content: bytes | None


class _UnsendableHeader(Exception):
    def __init__(self, name: str, template: Secret | str) -> None:
        self.name = name
        self.template = template


def _path_only(url: str) -> str:
    # Details never carry a query string: tokens and signatures travel there.
    parts = urlsplit(url)
    return parts.path or "/"


class HttpAdapter(base.Adapter):
    kind: ClassVar[str] = "http"
    section_model: ClassVar[type[base.Section]] = HttpSection
    probes: ClassVar[frozenset[str]] = frozenset()  # any probe that has steps

    def __init__(self, target: str, section: base.Section, timeout: float) -> None:
        super().__init__(target, section, timeout)
        assert isinstance(section, HttpSection)
        self.config: HttpSection = section
        self._http = LazySession(
            verify=section.tls_verify,
            ca_file=section.ca_file,
            fresh_connection=section.fresh_connection,
        )
        self.carried: dict[str, Any] = {}  # values extracted by earlier attempts

    @classmethod
    def probe_problems(cls, section: base.Section, probes: list[str]) -> list[str]:
        assert isinstance(section, HttpSection)
        return [
            f"probe {p} has no steps in the http section" for p in probes if p not in section.probes
        ]

    async def aclose(self) -> None:
        await self._http.aclose()

    async def attempt(self, context: base.ProbeContext) -> base.Result:
        values = builtins(
            {
                **self.config.variables,
                **self.carried,
                "target": context.target,
                "probe": context.probe,
                "attempt_id": context.attempt_id,
            }
        )
        result, stale = await self._run(self.config.probes[context.probe], values)
        refresh = self.config.refresh_with
        if stale and refresh and refresh != context.probe and refresh in self.config.probes:
            # A value the steps need is missing or was refused (401/403): run the refresh
            # probe's steps (usually login) within this attempt, then try once more.
            refreshed, _ = await self._run(self.config.probes[refresh], values)
            if refreshed.outcome is not Outcome.SUCCESS:
                return base.Result(
                    refreshed.outcome,
                    refreshed.error_kind,
                    refreshed.error_code,
                    refreshed.http_status,
                    f"{refresh} (refresh): {refreshed.detail}",
                )
            result, _ = await self._run(self.config.probes[context.probe], values)
        return result

    async def _run(self, steps: list[Step], values: dict[str, Any]) -> tuple[base.Result, bool]:
        """Run steps in order; also says whether a refresh (login) could help."""
        last_status: int | None = None
        for index, step in enumerate(steps):
            label = step.name or f"step {index + 1}"
            try:
                request = self._request(step, values)
            except TemplateError as exc:
                return base.client_error(base.CONFIG, f"{label}: {exc}"), exc.missing
            except _UnsendableHeader as exc:
                return self._unsendable(exc.name, exc.template, label), False
            result, document, status = await self._exchange(request, step, label)
            if result is not None:
                return result, result.error_kind == base.AUTH
            last_status = status
            for name, spec in step.extracts().items():
                found = lookup(document, parse_path(spec.path))
                if found is MISSING:
                    return base.failure(
                        base.ASSERTION, f"{label}: no {spec.path} to extract", http_status=status
                    ), False
                if spec.secret:
                    found = Secret(str(found), f"extracted:{name}", ephemeral=True)
                values[name] = found
                self.carried[name] = found
        return base.Result.ok(http_status=last_status), False

    def _request(self, step: Step, values: dict[str, Any]) -> Request:
        url = render_text(step.url, values)
        if self.config.base_url and not urlsplit(url).scheme:
            url = self.config.base_url.rstrip("/") + "/" + url.lstrip("/")
        if urlsplit(url).scheme not in ("http", "https"):
            raise TemplateError(f"bad URL {_path_only(url)!r}: not http(s)")
        templates = {**self.config.headers, **step.headers}
        headers = {k: str(render(v, values)) for k, v in templates.items()}
        for name, value in headers.items():
            if not sendable_in_header(value):
                raise _UnsendableHeader(name, templates[name])
        headers.setdefault("User-Agent", "im-prober")
        content: bytes | None = None
        if step.json_body is not None:
            content = json.dumps(render(step.json_body, values)).encode()
            headers.setdefault("Content-Type", "application/json")
        elif step.body is not None:
            content = render_text(step.body, values).encode()
        return Request(step.method, url, headers, content)

    def _unsendable(self, name: str, template: Secret | str, label: str) -> base.Result:
        """A header value with a control character: the provider's bad response when a value
        extracted from one of its answers put it there, else the config's."""
        carried = placeholders(template) if isinstance(template, str) else []
        for used in carried:
            value = self.carried.get(used)
            if isinstance(value, Secret):
                value = value.reveal()
            if used in self.carried and not sendable_in_header(str(value)):
                return base.failure(
                    base.BAD_RESPONSE,
                    f"{label}: the extracted {used} has a control character (header {name})",
                )
        return base.client_error(base.CONFIG, f"{label}: header {name} has a control character")

    async def _exchange(
        self, request: Request, step: Step, label: str
    ) -> tuple[base.Result | None, Any, int | None]:
        where = f"{label}: {request.method} {_path_only(request.url)}"
        try:
            response = await self._http.session.request(
                request.method,
                request.url,
                headers=request.headers,
                data=request.content,
                allow_redirects=self.config.max_redirects > 0,
                max_redirects=max(self.config.max_redirects, 1),
            )
        except Exception as exc:
            return transport_failure(exc, where), None, None
        try:
            status = response.status
            detail = f"{where} -> {status}"
            forced = status_result(status, detail)
            if forced is not None:
                return forced, None, status
            accepted = status in step.expect_status if step.expect_status else 200 <= status < 300
            if not accepted:
                kind = base.HTTP_4XX if 400 <= status < 500 else "unexpected_status"
                make = base.client_error if 400 <= status < 500 else base.failure
                return make(kind, detail, http_status=status), None, status
            try:
                body = await read_bounded(response, self.config.max_body_bytes)
            except Exception as exc:
                return transport_failure(exc, detail, status), None, status
            if body is None:
                return (
                    base.failure(
                        "body_too_large",
                        f"{detail}: body over {self.config.max_body_bytes} bytes",
                        http_status=status,
                    ),
                    None,
                    status,
                )
        finally:
            response.release()
        if not step.expect_json and not step.extract:
            return None, None, status
        try:
            document = json.loads(body)
        except (ValueError, RecursionError) as exc:
            return (
                base.failure(
                    base.BAD_RESPONSE,
                    f"{detail}: not JSON ({type(exc).__name__})",
                    http_status=status,
                ),
                None,
                status,
            )
        for path, expected in step.expect_json.items():
            found = lookup(document, parse_path(path))
            if found is MISSING:
                return (
                    base.failure(base.ASSERTION, f"{detail}: {path} missing", http_status=status),
                    None,
                    status,
                )
            if found != expected or isinstance(found, bool) != isinstance(expected, bool):
                shown = json.dumps(found)[:60]
                return (
                    base.failure(
                        base.ASSERTION,
                        f"{detail}: {path} is {shown}, expected {json.dumps(expected)}",
                        http_status=status,
                    ),
                    None,
                    status,
                )
        return None, document, status
