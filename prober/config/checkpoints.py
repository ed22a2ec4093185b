"""The config of signed evidence and of checkpoints: the signing key, the time-stamping
authority of packs, and where the daily and month-end checkpoints of the ledger's chain heads
go (a file, a webhook, a git repository the customer controls)."""

from __future__ import annotations

import re
from datetime import time
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from .fields import Duration, SecretRef, Strict, within

MAX_SINKS = 8
MAX_URL_LENGTH = 2048
# git's own rules are looser; these names are plain enough to pass on a command line.
GIT_NAME = r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,99}$"
REPO_FOLDER = r"^[A-Za-z0-9_-][A-Za-z0-9._-]*(/[A-Za-z0-9_-][A-Za-z0-9._-]*)*$"


def sink_path(path: Path, base_dir: Path) -> Path:
    """A sink's path as given, or relative to the config file's folder."""
    return path if path.is_absolute() else base_dir / path


def http_url(value: str, credentials: str) -> str:
    """An http(s) URL with a host, bounded, without credentials (`credentials` says where
    they go instead)."""
    if len(value) > MAX_URL_LENGTH:
        raise ValueError(f"longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ValueError("not a URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"no credentials in the URL: {credentials}")
    return value


class TimestampAuthorityConfig(Strict):
    """An RFC 3161 time-stamping authority that stamps each pack's SHA256SUMS."""

    url: str = Field(description="http(s) URL the timestamp query is POSTed to")
    ca_file: Path | None = Field(
        None,
        description="PEM file of the authority's CA certificate(s), relative to the config "
        "file's folder: each token is checked against it before the pack keeps it",
    )
    timeout: Annotated[Duration, within(at_least=1.0, at_most=60.0)] = Field(
        10.0, description="for the whole exchange; an authority slower than that is skipped"
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return http_url(value, "a time-stamping authority is asked without them")


class EvidenceConfig(Strict):
    signing_key: SecretRef | None = Field(
        None,
        description="Ed25519 private key (PEM) that signs evidence packs and checkpoints, "
        "e.g. {file: keys/evidence.key}; `im-prober keygen` makes one",
    )
    timestamp_authority: TimestampAuthorityConfig | None = Field(
        None,
        description="an RFC 3161 time-stamping authority: each pack's SHA256SUMS gets its "
        "token (SHA256SUMS.tsr), a third party's word for when the pack existed",
    )


class FileSink(Strict):
    kind: Literal["file"]
    path: Path = Field(description="relative to the config file's folder")
    mode: Literal["folder", "append"] = Field(
        "folder",
        description="folder: one file per checkpoint in the folder `path`; append: one "
        "line per checkpoint appended to the file `path` (JSON Lines)",
    )


class WebhookSink(Strict):
    kind: Literal["webhook"]
    url: str = Field(description="http(s) URL the checkpoint is POSTed to as JSON")
    token: SecretRef | None = Field(None, description="sent as `Authorization: Bearer …`")
    timeout: Annotated[Duration, within(at_least=1.0, at_most=60.0)] = 10.0

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return http_url(value, "put the token in `token`")


class GitSink(Strict):
    kind: Literal["git"]
    repo: Path = Field(
        description="a local clone the customer controls (relative to the config file's "
        "folder); each checkpoint is committed there"
    )
    folder: Annotated[str, Field(max_length=200)] = Field(
        "checkpoints", description="folder inside the repository for the checkpoint files"
    )
    push: bool = Field(False, description="push each commit to `remote`")
    remote: Annotated[str, Field(pattern=GIT_NAME)] = "origin"
    branch: Annotated[str, Field(pattern=GIT_NAME)] | None = Field(
        None, description="branch to push to (default: the checked-out branch's name)"
    )
    timeout: Annotated[Duration, within(at_least=1.0, at_most=300.0)] = Field(
        60.0, description="for each git command; a command still running then is stopped"
    )

    @field_validator("folder")
    @classmethod
    def _inside(cls, value: str) -> str:
        if (
            not re.fullmatch(REPO_FOLDER, value)
            or ".." in value.split("/")
            or value.split("/")[0] == ".git"
        ):
            raise ValueError(
                "must be a relative folder inside the repository: letters, digits, `._-` "
                "and `/` (no `..`, not .git)"
            )
        return value


Sink = Annotated[FileSink | WebhookSink | GitSink, Field(discriminator="kind")]


class CheckpointsConfig(Strict):
    """Signed checkpoints of every chain's head, sent where the prober's operator cannot
    rewrite them: once a day, and after each target's service month ends."""

    at: time = Field(
        time(0, 5),
        description="UTC time of the daily checkpoint, HH:MM (the day's last minute has "
        "closed by 00:05)",
    )
    month_end: bool = Field(
        True, description="also a checkpoint once a target's service month has closed"
    )
    sinks: list[Sink] = Field(min_length=1, max_length=MAX_SINKS)

    @field_validator("at", mode="before")
    @classmethod
    def _hhmm(cls, value: Any) -> Any:
        # YAML 1.1 reads 00:05 as a sexagesimal integer (5); pydantic would read any other
        # integer as seconds, so only those two forms are taken.
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 24 * 60:
            return time(value // 60, value % 60)
        if isinstance(value, str) and re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", value):
            return value
        raise ValueError("expected HH:MM (UTC), e.g. 00:05")
