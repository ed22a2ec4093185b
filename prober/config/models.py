"""The configuration: strict models, YAML with line numbers, secret references.

Every model forbids unknown keys; every error names the file, the dotted field path and the
line. Secrets come only from `{env: NAME}` or `{file: PATH}` references.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from fractions import Fraction
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar
from zoneinfo import ZoneInfo

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from .. import sla
from ..adapters import REGISTRY
from ..errors import UserError
from . import dburl
from .checkpoints import CheckpointsConfig, EvidenceConfig
from .durations import format_duration
from .fields import (
    Duration,
    ExactDecimal,
    SecretRef,
    Strict,
    TimezoneName,
    decimal_within,
    within,
)
from .secrets import Secret, resolve_references
from .yamlsource import YamlDocument, YamlError, load_yaml, read_yaml_file

M = TypeVar("M", bound=BaseModel)

# The kinds are the adapter registry's: a kind without an adapter is refused at load.
KINDS: tuple[str, ...] = tuple(REGISTRY)
Kind = Literal[KINDS]  # type: ignore[valid-type]
PROBE_NAME = r"^[a-z][a-z0-9_]{0,31}$"
TARGET_NAME = r"^[a-z0-9_-]{1,64}$"
# Attempts must outlive a claim: a service month (<= 31 days) plus the 60-day claim window.
MIN_ATTEMPTS_RETENTION_DAYS = 92
MAX_ATTEMPTS_RETENTION_DAYS = 36_500
# A minute closes this long after its last attempt's timeout at most: minutes are written,
# and /readyz judges the closer, within two minutes of their end.
MAX_CLOSE_GRACE = 60.0
# Service months and maintenance windows are computed in local time around these years;
# far outside them date arithmetic overflows, and no contract is that old or that long.
FIRST_YEAR, LAST_YEAR = 2000, 2199


class PlacedError(ValueError):
    """A model validator's complaint about one value inside the model: `where` is that
    value's location below the model, `first` (if any) the earlier value it clashes with.
    `validate_document` reports it at the value's own line and names the first one's."""

    def __init__(
        self,
        message: str,
        where: tuple[str | int, ...],
        first: tuple[str | int, ...] = (),
        first_is: str = "first on line",
    ) -> None:
        super().__init__(message)
        self.where = where
        self.first = first
        self.first_is = first_is


class LedgerConfig(Strict):
    path: Path = Field(Path("./data/ledger.sqlite3"), description="SQLite file of the ledger")
    url: Annotated[str, AfterValidator(dburl.check_url)] | None = Field(
        None,
        description="PostgreSQL ledger shared by a fleet of probers, instead of `path`: "
        "postgresql://USER@HOST:PORT/DATABASE, without a password",
    )
    password: SecretRef | None = Field(None, description="the PostgreSQL role's password")
    attempts_retention_days: int = Field(
        120,
        le=MAX_ATTEMPTS_RETENTION_DAYS,
        description="how long attempt records are kept; minute rows are kept for good",
    )

    @model_validator(mode="after")
    def _one_place(self) -> LedgerConfig:
        if self.url is not None and "path" in self.model_fields_set:
            raise PlacedError(
                "set either path (SQLite) or url (PostgreSQL), not both", ("url",), ("path",)
            )
        if self.url is None and self.password is not None:
            raise PlacedError("a password is for a PostgreSQL ledger: set url too", ("password",))
        return self

    @property
    def display_url(self) -> str | None:
        """The URL as it may be printed."""
        return None if self.url is None else dburl.display_url(self.url)

    @field_validator("attempts_retention_days")
    @classmethod
    def _outlives_claims(cls, value: int) -> int:
        if value < MIN_ATTEMPTS_RETENTION_DAYS:
            raise ValueError(
                f"must be at least {MIN_ATTEMPTS_RETENTION_DAYS} days: attempts are the evidence "
                "of a claim, which may be filed until 60 days after a service month ends"
            )
        return value


class ProbeConfig(Strict):
    attempts_per_minute: int = Field(1, ge=1, le=60)
    timeout: Duration = Field(10.0, description="per attempt; shorter than the spacing")

    @model_validator(mode="after")
    def _timeout_within_spacing(self) -> ProbeConfig:
        spacing = 60.0 / self.attempts_per_minute
        if self.timeout >= spacing:
            raise ValueError(
                f"timeout {format_duration(self.timeout)} must be shorter than the spacing "
                f"between attempts ({format_duration(spacing)} at "
                f"{self.attempts_per_minute} a minute)"
            )
        return self

    @property
    def spacing(self) -> float:
        return 60.0 / self.attempts_per_minute


class CreditTierConfig(Strict):
    below: ExactDecimal
    credit: ExactDecimal

    @property
    def shown(self) -> str:
        return f"below {self.below} (credit {self.credit})"

    @model_validator(mode="after")
    def _ranges(self) -> CreditTierConfig:
        if not Decimal(0) < self.below <= Decimal(1):
            raise ValueError("below must be in (0, 1]")
        if not Decimal(0) <= self.credit <= Decimal(1):
            raise ValueError("credit must be in [0, 1] (a share of the monthly fee)")
        return self


DEFAULT_CREDIT_TIERS = (
    CreditTierConfig(below=Decimal("0.99"), credit=Decimal("0.10")),
    CreditTierConfig(below=Decimal("0.95"), credit=Decimal("0.20")),
    CreditTierConfig(below=Decimal("0.90"), credit=Decimal("0.30")),
)


def _in_years(value: date) -> date:
    if not FIRST_YEAR <= value.year <= LAST_YEAR:
        raise ValueError(f"must be in the years {FIRST_YEAR}–{LAST_YEAR}")
    return value


class SLAConfig(Strict):
    service_month_anchor: Annotated[date, AfterValidator(_in_years)] = Field(
        description="purchase date: the first service month holds it (anchored months "
        "start on its day)"
    )
    timezone: TimezoneName = "UTC"
    service_month: sla.months.MonthKind = Field(
        sla.months.MonthKind.ANCHORED,
        description="anchored (on the purchase day), calendar, or calendar_from_purchase "
        "(calendar months, the first from the purchase date)",
    )
    objective: ExactDecimal = Decimal("0.99")
    credit_tiers: tuple[CreditTierConfig, ...] = DEFAULT_CREDIT_TIERS
    monthly_fee: Annotated[ExactDecimal, decimal_within(places=4)] | None = Field(
        None, description="below 10^12, at most 4 decimal places"
    )
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] | None = None
    holidays: str = Field("CN", description="country whose business days open the claim window")
    policy: sla.Policy = sla.Policy.SLA

    @field_validator("holidays")
    @classmethod
    def _known_country(cls, value: str) -> str:
        if value not in sla.claims.supported_countries():
            raise ValueError(f"{value!r} is not a country the holidays library knows (e.g. CN)")
        return value

    @model_validator(mode="after")
    def _ranges(self) -> SLAConfig:
        if not Decimal(0) < self.objective <= Decimal(1):
            raise ValueError("objective must be in (0, 1], e.g. 0.99")
        if self.monthly_fee is not None and self.monthly_fee < 0:
            raise ValueError("monthly_fee cannot be negative")
        self._tiers_agree()
        return self

    def _tiers_agree(self) -> None:
        """Tiers are read together (the largest credit of every tier a month is below), so
        two with one `below`, a worse month earning less, or a credit while the objective is
        met are contradictions in the contract as written: refused, not silently resolved."""
        seen: dict[Decimal, int] = {}
        for index, tier in enumerate(self.credit_tiers):
            if tier.below > self.objective and "credit_tiers" not in self.model_fields_set:
                raise PlacedError(
                    f"the objective {self.objective} is below the default credit tier "
                    f"{tier.shown}: a month that meets it would earn a credit; write "
                    "credit_tiers for this objective",
                    ("objective",),
                )
            if tier.below > self.objective:
                raise PlacedError(
                    f"below {tier.below} is above the objective {self.objective}: a month "
                    "that meets the objective would earn a credit",
                    ("credit_tiers", index, "below"),
                )
            if tier.below in seen:
                raise PlacedError(
                    f"two credit tiers have below {tier.below}",
                    ("credit_tiers", index, "below"),
                    ("credit_tiers", seen[tier.below], "below"),
                )
            seen[tier.below] = index
        for index, tier in enumerate(self.credit_tiers):
            for other_index, other in enumerate(self.credit_tiers):
                if other.below > tier.below and other.credit > tier.credit:
                    raise PlacedError(
                        f"the tier {tier.shown} gives less than the milder tier "
                        f"{other.shown}: a worse month cannot earn a smaller credit",
                        ("credit_tiers", index, "credit"),
                        ("credit_tiers", other_index, "credit"),
                        "that tier is on line",
                    )

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def objective_exact(self) -> Fraction:
        return Fraction(self.objective)

    @property
    def tiers(self) -> tuple[sla.CreditTier, ...]:
        return tuple(
            sla.CreditTier(Fraction(t.below), Fraction(t.credit)) for t in self.credit_tiers
        )

    def calendar(self) -> sla.ServiceCalendar:
        return sla.ServiceCalendar(self.service_month_anchor, self.zone, self.service_month)


def _aware_in_years(value: datetime) -> datetime:
    _in_years(value.date())
    return value


class OneOffMaintenance(Strict):
    start: Annotated[AwareDatetime, AfterValidator(_aware_in_years)]
    end: Annotated[AwareDatetime, AfterValidator(_aware_in_years)]
    reason: str = ""

    @model_validator(mode="after")
    def _ordered(self) -> OneOffMaintenance:
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self


WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class RecurringMaintenance(Strict):
    every: str | list[str] = Field(description="day, or a list of weekdays: mon..sun")
    at: time = Field(description="local time in the SLA timezone, HH:MM")
    duration: Duration
    reason: str = ""

    @field_validator("at", mode="before")
    @classmethod
    def _hhmm(cls, value: Any) -> Any:
        if isinstance(value, int):  # YAML 1.1 reads 02:00 as a sexagesimal integer
            return time(value // 60, value % 60) if 0 <= value < 24 * 60 else value
        return value

    @field_validator("every")
    @classmethod
    def _days(cls, value: str | list[str]) -> str | list[str]:
        if value == "day" or (isinstance(value, list) and value and set(value) <= set(WEEKDAYS)):
            return value
        raise ValueError(f"must be `day` or a list of weekdays from {', '.join(WEEKDAYS)}")

    @field_validator("duration")
    @classmethod
    def _under_a_week(cls, value: float) -> float:
        if value > 7 * 86400:
            raise ValueError("a recurring window lasts at most 7 days")
        return value


def _maintenance_kind(value: Any) -> str:
    if isinstance(value, RecurringMaintenance):
        return "recurring"
    return "recurring" if isinstance(value, dict) and "every" in value else "once"


Maintenance = Annotated[
    Annotated[OneOffMaintenance, Tag("once")] | Annotated[RecurringMaintenance, Tag("recurring")],
    Discriminator(_maintenance_kind),
]


class TargetBase(Strict):
    """The keys every target has; `TargetConfig` adds one section per kind."""

    name: Annotated[str, Field(pattern=TARGET_NAME)]
    kind: Kind  # type: ignore[valid-type]
    probes: dict[Annotated[str, Field(pattern=PROBE_NAME)], ProbeConfig] = Field(min_length=1)
    sla: SLAConfig
    maintenance: list[Maintenance] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _no_foreign_section(cls, data: Any) -> Any:
        # Checked before the sections themselves, so a stray section is named as such
        # rather than reported as a list of its missing keys.
        if isinstance(data, dict) and isinstance(data.get("kind"), str):
            others = [k for k in KINDS if k != data["kind"] and k in data]
            if others:
                raise ValueError(
                    f"kind is {data['kind']}, so section(s) {', '.join(others)} do not belong"
                )
        return data

    @model_validator(mode="after")
    def _one_section(self) -> TargetBase:
        section = getattr(self, self.kind, None)
        if section is None:
            raise ValueError(f"kind {self.kind} needs its section `{self.kind}:`")
        problems = REGISTRY[self.kind].probe_problems(section, list(self.probes))
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def section(self) -> Any:
        return getattr(self, self.kind)

    @property
    def largest_timeout(self) -> float:
        return max(p.timeout for p in self.probes.values())

    @cached_property
    def windows(self) -> tuple[sla.Window, ...]:
        zone = self.sla.zone
        out: list[sla.Window] = []
        for window in self.maintenance:
            if isinstance(window, OneOffMaintenance):
                out.append(sla.OneOffWindow(window.start, window.end, window.reason))
            else:
                days = (
                    range(7) if window.every == "day" else [WEEKDAYS.index(d) for d in window.every]
                )
                out.append(
                    sla.RecurringWindow(
                        frozenset(days),
                        window.at,
                        timedelta(seconds=window.duration),
                        zone,
                        window.reason,
                    )
                )
        return tuple(out)


# One optional section per kind, the adapter's own strict model.
TargetConfig = create_model(  # type: ignore[call-overload]
    "TargetConfig",
    __base__=TargetBase,
    **{kind: (REGISTRY[kind].section_model | None, None) for kind in KINDS},
)


class WebConfig(Strict):
    listen_address: str = Field(
        "0.0.0.0:9469", description="host:port for /metrics, /healthz, /readyz"
    )
    enable_lifecycle: bool = Field(False, description="allow POST /-/reload")
    config_file: Path | None = Field(
        None,
        description="web config with TLS and basic auth (relative to this file); "
        "--web.config.file overrides it",
    )
    max_connections: int = Field(
        64,
        ge=1,
        le=10_000,
        strict=True,
        description="connections the web port keeps open at once (never more than a quarter "
        "of the descriptor limit); past it the one waiting longest for its request makes "
        "room, or the new one is refused with 503",
    )
    request_timeout: Duration = Field(
        5.0,
        ge=1.0,
        le=60.0,
        description="time a web connection has to send a complete request head (TLS "
        "handshake included), from opening or from its previous response; then it is closed",
    )

    @field_validator("listen_address")
    @classmethod
    def _host_port(cls, value: str) -> str:
        parse_listen_address(value)
        return value


def parse_listen_address(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{value!r} is not host:port (e.g. 0.0.0.0:9469 or [::1]:9469)")
    return host.strip("[]") or "0.0.0.0", int(port)


class NetworkCheckConfig(Strict):
    """Reference endpoints outside the provider (SLA 4.11): when every one of them fails in
    a minute, the prober's own network is down and provider failures are not counted."""

    urls: list[str] = Field(min_length=1)
    attempts_per_minute: int = Field(1, ge=1, le=12)
    timeout: Duration = 5.0

    @field_validator("urls")
    @classmethod
    def _http(cls, value: list[str]) -> list[str]:
        for url in value:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"{url!r}: reference URLs must start with http:// or https://")
        return value

    @model_validator(mode="after")
    def _spacing(self) -> NetworkCheckConfig:
        if self.timeout >= 60 / self.attempts_per_minute:
            raise ValueError("timeout must be shorter than the spacing between checks")
        return self


class SchedulerConfig(Strict):
    close_grace: Annotated[Duration, within(at_most=MAX_CLOSE_GRACE)] = Field(
        2.0,
        description="how long past its end plus the largest attempt timeout a minute may "
        "wait for attempts that have not finished (at most 60s); a minute whose attempts "
        "have all finished closes at once",
    )
    write_buffer_minutes: int = Field(
        60,
        ge=1,
        le=1440,
        description="closed minutes kept in memory while the ledger cannot be written",
    )


class StatusPageConfig(Strict):
    """The daemon's status page (`/`) and its JSON API (`/api/v1/`), behind the same web
    config (TLS, basic auth) as /metrics."""

    public: bool = Field(
        False,
        description="show states and figures only: no attempt details, error kinds or "
        "evidence downloads (for a page shown to people outside the team)",
    )
    refresh: Annotated[Duration, within(at_least=5.0, at_most=300.0)] = Field(
        15.0, description="how often an open page fetches fresh figures"
    )


VANTAGE_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
# The environment wins over the file, so one config serves every replica of a StatefulSet.
ENV_VANTAGE = "IM_PROBER_VANTAGE"
ENV_SHARD_INDEX = "IM_PROBER_SHARD_INDEX"
ENV_SHARD_COUNT = "IM_PROBER_SHARD_COUNT"
MAX_SHARDS = 1000


class ShardConfig(Strict):
    index: int = Field(0, ge=0, lt=MAX_SHARDS, description="this replica's place, from 0")
    count: int = Field(1, ge=1, le=MAX_SHARDS, description="how many replicas split targets")

    @model_validator(mode="after")
    def _index_below_count(self) -> ShardConfig:
        if self.index >= self.count:
            raise PlacedError(
                f"shard index {self.index} is not below the shard count {self.count}",
                ("index",),
            )
        return self


class FleetConfig(Strict):
    shard: ShardConfig = ShardConfig()
    vantages_per_target: int | None = Field(
        None, ge=1, le=MAX_SHARDS, description="replicas probing each target (default: all)"
    )
    failure_quorum: int = Field(
        1,
        ge=1,
        le=MAX_SHARDS,
        description="vantages that must see failures, with no success anywhere, for an "
        "apparent_failure; fewer make the minute no_data/below_quorum",
    )
    close_deadline: Annotated[Duration, within(at_least=1.0, at_most=600.0)] = Field(
        30.0,
        description="how long the fleet verdict waits, after a minute's close time, for "
        "vantages that are alive but have not closed it",
    )


class Config(Strict):
    vantage: Annotated[str, Field(pattern=VANTAGE_NAME)] | None = Field(
        None, description="this prober's name as a vantage point (default: the host name)"
    )
    fleet: FleetConfig = FleetConfig()
    ledger: LedgerConfig = LedgerConfig()
    web: WebConfig = WebConfig()
    network_check: NetworkCheckConfig | None = None
    scheduler: SchedulerConfig = SchedulerConfig()
    status_page: StatusPageConfig = StatusPageConfig()
    evidence: EvidenceConfig = EvidenceConfig()
    checkpoints: CheckpointsConfig | None = None
    targets: list[TargetConfig] = Field(min_length=1)  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _checkpoints_signed(self) -> Config:
        if self.checkpoints is not None and self.evidence.signing_key is None:
            raise PlacedError(
                "checkpoints are signed: set evidence.signing_key too", ("checkpoints",)
            )
        return self

    @model_validator(mode="after")
    def _unique_names(self) -> Config:
        seen: dict[str, int] = {}
        for index, target in enumerate(self.targets):
            if target.name in seen:
                raise PlacedError(
                    f"target name {target.name!r} is used twice",
                    ("targets", index, "name"),
                    ("targets", seen[target.name], "name"),
                )
            seen[target.name] = index
        return self

    def target(self, name: str) -> TargetBase:
        for target in self.targets:
            if target.name == name:
                return target
        known = ", ".join(t.name for t in self.targets)
        raise UserError(f"no target named {name!r} in the config (targets: {known})")


def restart_only_changes(old: ConfigFile, new: ConfigFile) -> list[str]:
    """Settings a reload cannot apply (the ledger file, the listener): named so the daemon
    can say it keeps the old value. The web config file itself is re-read on reload."""
    changed = []
    if new.ledger_path != old.ledger_path:
        changed.append("ledger.path")
    for key in ("url", "password"):
        if getattr(new.config.ledger, key) != getattr(old.config.ledger, key):
            changed.append(f"ledger.{key}")
    if new.vantage != old.vantage:  # the name its stored attempts are taken back by
        changed.append("vantage")
    for key in ("listen_address", "enable_lifecycle", "max_connections", "request_timeout"):
        if getattr(new.config.web, key) != getattr(old.config.web, key):
            changed.append(f"web.{key}")
    return changed


class ConfigError(UserError):
    """One or more problems in a config file, each with file, line and field."""

    def __init__(self, file: Path, problems: list[tuple[int | None, str, str]]) -> None:
        self.file = file
        self.problems = problems
        lines = []
        for line, field_path, message in problems:
            where = f"{file}:{line}" if line else str(file)
            lines.append(
                f"{where}: {field_path}: {message}" if field_path else f"{where}: {message}"
            )
        super().__init__("\n".join(lines))


def dotted(location: tuple[Any, ...], document: YamlDocument | None = None, kind: str = "") -> str:
    """A pydantic location as `targets[0].sla.timezone`. With the document, elements that
    are not keys of the YAML (union member tags such as `str` or `function-plain[...]`) are
    left out; a last element naming a missing or unknown key stays."""
    out = ""
    path: tuple[Any, ...] = ()
    for position, element in enumerate(location):
        if document is not None:
            candidate = (*path, element)
            is_last = position == len(location) - 1
            if candidate not in document.lines and not (
                is_last and kind in ("missing", "extra_forbidden")
            ):
                continue
            path = candidate
        elif element in ("once", "recurring") or str(element).startswith("function-"):
            continue
        if isinstance(element, int):
            out += f"[{element}]"
        else:
            out += f".{element}" if out else str(element)
    return out


def _message(error: dict[str, Any]) -> str:
    # Built from the message only: pydantic's input echo could carry a secret.
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    message = str(error["msg"])
    return re.sub(r"^(Value|Assertion) error, ", "", message)


def _redacted_value(value: Any) -> Any:
    # Kind sections are free-form until their adapter checks them; secrets in them print as
    # their reference, like every SecretRef field.
    if isinstance(value, Secret):
        return str(value)
    raise TypeError(f"cannot print a {type(value).__name__} in a config")


class ConfigFile:
    """A loaded, validated config and where it came from."""

    def __init__(self, path: Path, config: Config, environ: dict[str, str] | None = None) -> None:
        self.path = path
        self.config = config
        env = os.environ if environ is None else environ
        self.vantage = _vantage(config, env)
        self.shard = _shard(config, env)

    @property
    def vantages_per_target(self) -> int:
        wanted = self.config.fleet.vantages_per_target
        return self.shard.count if wanted is None else min(wanted, self.shard.count)

    def probes_target(self, name: str) -> bool:
        """Whether this replica's shard probes `name`: each target goes to
        `vantages_per_target` consecutive shards from a stable hash of its name, so a target
        stays where it is when others are added."""
        count = self.shard.count
        if count == 1:
            return True
        first = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") % count
        return (self.shard.index - first) % count < self.vantages_per_target

    @property
    def ledger_path(self) -> Path:
        """Relative ledger paths are taken from the config file's folder, like secret files."""
        configured = self.config.ledger.path
        return configured if configured.is_absolute() else self.path.parent / configured

    @property
    def web_config_path(self) -> Path | None:
        configured = self.config.web.config_file
        if configured is None or configured.is_absolute():
            return configured
        return self.path.parent / configured

    def redacted(self) -> dict[str, Any]:
        return self.config.model_dump(mode="json", exclude_none=True, fallback=_redacted_value)

    @property
    def digest(self) -> str:
        """SHA-256 of the resolved config with secrets shown as their references."""
        canonical = json.dumps(self.redacted(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


def validate_document(
    model: type[M],
    text: str,
    path: Path,
    *,
    resolve_secrets: bool = True,
    not_mapping: str = "the config must be a YAML mapping with `targets:`",
) -> M:
    """Parse YAML text and validate it as `model`; every problem names file, line and field."""
    try:
        document: YamlDocument = load_yaml(text)
    except YamlError as exc:
        raise ConfigError(path, [(exc.line, "", str(exc))]) from None
    if not isinstance(document.data, dict):
        raise ConfigError(path, [(1, "", not_mapping)])
    data, secret_problems = resolve_references(document.data, path.parent, resolve=resolve_secrets)
    problems = [(document.line_of(loc), dotted(loc, document), msg) for loc, msg in secret_problems]
    unresolved = [loc for loc, _ in secret_problems]
    try:
        validated = model.model_validate(data)
    except ValidationError as exc:
        messages: dict[tuple[int | None, str], list[str]] = {}
        for error in exc.errors():
            loc = tuple(error["loc"])
            if any(loc[: len(bad)] == bad for bad in unresolved):
                continue  # already reported: the reference could not be resolved
            message = _message(error)
            placed = (error.get("ctx") or {}).get("error")
            if isinstance(placed, PlacedError):
                if placed.first and (first := document.line_of((*loc, *placed.first))):
                    message += f" ({placed.first_is} {first})"
                loc = (*loc, *placed.where)
            key = (document.line_of(loc), dotted(loc, document, error["type"]))
            found = messages.setdefault(key, [])
            if message not in found:
                found.append(message)
        # A union reports each member's complaint at the same place: say them once, together.
        problems += [(line, where, " or ".join(found)) for (line, where), found in messages.items()]
        problems.sort(key=lambda p: (p[0] or 0, p[1]))
        raise ConfigError(path, problems) from None
    if problems:
        problems.sort(key=lambda p: (p[0] or 0, p[1]))
        raise ConfigError(path, problems)
    return validated


def parse_config(
    text: str,
    path: Path,
    *,
    resolve_secrets: bool = True,
    environ: dict[str, str] | None = None,
) -> ConfigFile:
    """A config from its text; `environ` (default: the process's) may set the vantage and
    the shard (ENV_VANTAGE, ENV_SHARD_INDEX, ENV_SHARD_COUNT)."""
    config = validate_document(Config, text, path, resolve_secrets=resolve_secrets)
    return ConfigFile(path, config, environ)


def _vantage(config: Config, env: os._Environ[str] | dict[str, str]) -> str:
    configured = env.get(ENV_VANTAGE)
    if configured is not None:
        if not re.match(VANTAGE_NAME, configured):
            raise UserError(
                f"{ENV_VANTAGE}={configured[:80]!r}: a vantage name is 1-63 letters, digits, "
                "'.', '_' or '-', starting with a letter or digit"
            )
        return configured
    if config.vantage is not None:
        return config.vantage
    # The host name, made to fit (a pod's or a machine's name usually fits as it is).
    host = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname()).strip("-._")[:63]
    return host or "prober"


def _shard(config: Config, env: os._Environ[str] | dict[str, str]) -> ShardConfig:
    shard = config.fleet.shard
    values = {"index": shard.index, "count": shard.count}
    for key, name in (("index", ENV_SHARD_INDEX), ("count", ENV_SHARD_COUNT)):
        raw = env.get(name)
        if raw is None:
            continue
        if not re.fullmatch(r"[0-9]{1,4}", raw.strip()):
            raise UserError(f"{name}={raw[:80]!r}: not a whole number")
        values[key] = int(raw)
    try:
        return ShardConfig(**values)
    except ValueError as exc:
        raise UserError(
            f"fleet shard from {ENV_SHARD_INDEX}/{ENV_SHARD_COUNT} and the config: "
            f"index {values['index']}, count {values['count']}: the index must be below the "
            f"count, which is 1 to {MAX_SHARDS}"
        ) from exc


def load_config(path: str | Path, *, resolve_secrets: bool = True) -> ConfigFile:
    """Load and validate a config. Commands that only read the ledger pass
    `resolve_secrets=False`: references are checked for form but not read."""
    path = Path(path)
    try:
        text = read_yaml_file(path)
    except FileNotFoundError:
        raise UserError(f"{path}: config file not found") from None
    except YamlError as exc:
        raise ConfigError(path, [(exc.line, "", str(exc))]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read the config: {exc}") from None
    return parse_config(text, path, resolve_secrets=resolve_secrets)


def json_schema() -> dict[str, Any]:
    return Config.model_json_schema(mode="validation")
