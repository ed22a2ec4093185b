"""Prometheus exposition, rendered at scrape time from the in-memory ledger view
(DESIGN.md §8), in the text format or OpenMetrics.

Rendering is hand-written rather than prometheus_client's generic path because a prober
with 1,000 targets exposes ~60,000 lines: the ledger-derived blocks only change when a minute
closes, so they are cached per view generation, and each duration histogram is re-rendered
only after it changed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
from prometheus_client import generate_latest as text_exposition
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_exposition

from .. import sla
from ..config.models import TargetBase
from ..ledger.store import TARGET_LEVEL
from ..ledger.view import WINDOWS, LedgerView
from ..sla import Outcome, State
from ..stats import DURATION_BUCKETS, Histogram, RuntimeStats

TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float | int | Fraction) -> str:
    if isinstance(value, int):
        return str(value)
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def _labels(pairs: Sequence[tuple[str, str]]) -> str:
    if not pairs:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in pairs) + "}"


class HistogramText:
    """Each histogram's lines, rendered again only after it changed: with thousands of
    targets most duration histograms do not change between two scrapes."""

    def __init__(self) -> None:
        self._cache: dict[Histogram, tuple[int, str]] = {}  # keyed by identity

    def render(self, histogram: Histogram, name: str, labels: Sequence[tuple[str, str]]) -> str:
        cached = self._cache.get(histogram)
        if cached is not None and cached[0] == histogram.changes:
            return cached[1]
        lines = []
        cumulative = 0
        for bound, count in zip((*histogram.buckets, math.inf), histogram.counts, strict=True):
            cumulative += count
            le = "+Inf" if math.isinf(bound) else repr(bound)
            lines.append(f"{name}_bucket{_labels([*labels, ('le', le)])} {cumulative}\n")
        lines.append(f"{name}_sum{_labels(labels)} {_number(histogram.sum)}\n")
        lines.append(f"{name}_count{_labels(labels)} {cumulative}\n")
        text = "".join(lines)
        self._cache[histogram] = (histogram.changes, text)
        return text


def header(name: str, kind: str, help_: str, openmetrics: bool) -> str:
    base = name[: -len("_total")] if openmetrics and kind == "counter" else name
    return f"# HELP {base} {help_}\n# TYPE {base} {kind}\n"


@dataclass(frozen=True)
class TargetInfo:
    """What metrics need of a configured target."""

    name: str
    probes: tuple[str, ...]
    objective: Fraction
    tiers: tuple[sla.CreditTier, ...]
    # each probe's configured cadence, in the order of `probes` (empty: not known)
    attempts_per_minute: tuple[int, ...] = ()


def target_info(target: TargetBase) -> TargetInfo:
    return TargetInfo(
        target.name,
        tuple(target.probes),
        target.sla.objective_exact,
        target.sla.tiers,
        tuple(p.attempts_per_minute for p in target.probes.values()),
    )


class StandardSeries:
    """The `process_*` and `python_info` series every exporter has, from prometheus_client's
    own collectors (a handful of lines read from /proc at each scrape), rendered after the
    hand-written families."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)

    def render(self, openmetrics: bool) -> str:
        if not openmetrics:
            return text_exposition(self.registry).decode()
        text = openmetrics_exposition(self.registry).decode()
        return text.removesuffix("# EOF\n")  # the exposition ends once, after everything


class Exposition:
    """The ledger-derived families from the in-memory view (cached until it changes) and the
    process's own from the runtime's stats."""

    def __init__(self, view: LedgerView, stats: RuntimeStats, version: str) -> None:
        self.view = view
        self.stats = stats
        self.version = version
        self.targets: list[TargetInfo] = []
        self._cache: dict[bool, tuple[int, str]] = {}
        self._histograms = HistogramText()
        self._standard = StandardSeries()
        self._config_cache: dict[bool, str] = {}
        self._probe_labels: list[tuple[tuple[str, str], str]] = []

    def set_targets(self, targets: Iterable[TargetInfo]) -> None:
        self.targets = list(targets)
        self._cache.clear()
        self._config_cache.clear()
        # the label text of every configured (target, probe), made once per target list
        self._probe_labels = [
            ((t.name, probe), f'{{target="{_escape(t.name)}",probe="{_escape(probe)}"}}')
            for t in self.targets
            for probe in t.probes
        ]
        self.stats.keep_streaks({key for key, _ in self._probe_labels})

    def configure(self, targets: Iterable[TargetBase]) -> None:
        """The configured targets, at start and after each reload (the runtime's hook)."""
        self.set_targets(target_info(t) for t in targets)

    def render(self, now: float, *, openmetrics: bool = False) -> bytes:
        cached = self._cache.get(openmetrics)
        if cached is None or cached[0] != self.view.generation:
            cached = (self.view.generation, self._ledger_block(now, openmetrics))
            self._cache[openmetrics] = cached
        config = self._config_cache.get(openmetrics)
        if config is None:
            config = self._config_cache[openmetrics] = self._config_block(openmetrics)
        # In a fleet only the closer shows the fleet's figures, so Prometheus sums no
        # minute twice; every prober shows its own vantage's verdicts.
        fleet_figures = self.stats.fleet_closer != 0
        parts = [
            cached[1] if fleet_figures else "",
            self._fleet_block(openmetrics),
            config,
            self._streak_block(openmetrics),
            self._process_block(openmetrics),
            self._standard.render(openmetrics),
        ]
        if openmetrics:
            parts.append("# EOF\n")
        return "".join(parts).encode()

    # -- from the ledger ------------------------------------------------------------

    def _ledger_block(self, now: float, om: bool) -> str:
        out: list[str] = []
        view = self.view
        out.append(
            header(
                "im_probe_attempts_total",
                "counter",
                "Attempts by outcome (from the ledger; continues across restarts).",
                om,
            )
        )
        for t in self.targets:
            for probe in t.probes:
                counts = view.attempts.get((t.name, probe), {})
                for outcome in Outcome:
                    out.append(
                        f'im_probe_attempts_total{{target="{t.name}",probe="{probe}",'
                        f'outcome="{outcome}"}} {counts.get(outcome, 0)}\n'
                    )
        out.append(
            header(
                "im_minute_verdicts_total",
                "counter",
                "Closed minutes by SLA verdict (from the ledger).",
                om,
            )
        )
        for t in self.targets:
            counts = view.verdicts.get((t.name, TARGET_LEVEL), {})
            for state in State:
                out.append(
                    f'im_minute_verdicts_total{{target="{t.name}",state="{state}"}} '
                    f"{counts.get(state, 0)}\n"
                )
        out.append(
            header(
                "im_probe_minute_verdicts_total",
                "counter",
                "Closed minutes by verdict of each probe alone (from the ledger).",
                om,
            )
        )
        for t in self.targets:
            for probe in t.probes:
                counts = view.verdicts.get((t.name, probe), {})
                for state in State:
                    out.append(
                        f'im_probe_minute_verdicts_total{{target="{t.name}",probe="{probe}",'
                        f'state="{state}"}} {counts.get(state, 0)}\n'
                    )
        out.append(
            header(
                "im_availability_ratio",
                "gauge",
                "Measured availability A/(A+F) over rolling windows of closed minutes.",
                om,
            )
        )
        for t in self.targets:
            target_view = view.targets.get(t.name)
            if target_view is None:
                continue
            for window in WINDOWS:
                value = target_view.ring.availability(window)
                if value is not None:
                    out.append(
                        f'im_availability_ratio{{target="{t.name}",window="{window}"}} '
                        f"{_number(value)}\n"
                    )
        out.extend(self._month_block(now, om))
        out.append(
            header(
                "im_last_closed_minute_timestamp_seconds",
                "gauge",
                "Start of the newest minute written to the ledger (Unix time).",
                om,
            )
        )
        for t in self.targets:
            target_view = view.targets.get(t.name)
            if target_view is not None and target_view.last_closed is not None:
                out.append(
                    f'im_last_closed_minute_timestamp_seconds{{target="{t.name}"}} '
                    f"{target_view.last_closed * 60}\n"
                )
        return "".join(out)

    def _month_block(self, now: float, om: bool) -> list[str]:
        families: dict[str, tuple[str, list[str]]] = {
            "im_sla_availability_ratio": (
                "SLA availability 1-F/T of the current service month so far.",
                [],
            ),
            "im_sla_coverage_ratio": (
                "Observed share (A+F)/(T-M) of the current service month so far.",
                [],
            ),
            "im_sla_downtime_seconds": (
                "Failed minutes of the current service month, in seconds.",
                [],
            ),
            "im_sla_downtime_budget_remaining_seconds": (
                "Failed time the whole service month may still have and meet the objective.",
                [],
            ),
            "im_sla_credit_ratio": (
                "Credit owed for the current service month so far (share of the fee).",
                [],
            ),
        }
        for t in self.targets:
            target_view = self.view.targets.get(t.name)
            if target_view is None:
                continue
            tally = target_view.current_month(now)
            if tally is None:
                continue
            month = tally.month
            end = target_view.last_closed + 1 if target_view.last_closed is not None else 0
            figures = sla.month_so_far(month, end, tally.counts)
            label = f'{{target="{t.name}"}}'
            availability = figures.sla_availability
            if availability is not None:
                families["im_sla_availability_ratio"][1].append(f"{label} {_number(availability)}")
                ratio = sla.credit_ratio(availability, t.tiers)
                families["im_sla_credit_ratio"][1].append(f"{label} {_number(ratio)}")
            if figures.coverage is not None:
                families["im_sla_coverage_ratio"][1].append(f"{label} {_number(figures.coverage)}")
            families["im_sla_downtime_seconds"][1].append(f"{label} {figures.downtime_seconds}")
            budget = sla.downtime_budget_seconds(t.objective, month.minutes)
            families["im_sla_downtime_budget_remaining_seconds"][1].append(
                f"{label} {budget - figures.downtime_seconds}"
            )
        out = []
        for name, (help_, samples) in families.items():
            out.append(header(name, "gauge", help_, om))
            out.extend(f"{name}{sample}\n" for sample in samples)
        return out

    # -- from the configuration (changes only with the target list) -------------------

    def _fleet_block(self, om: bool) -> str:
        p = self.stats
        if p.fleet_closer is None:
            return ""
        out = [
            header(
                "im_fleet_closer",
                "gauge",
                "1 while this prober closes the fleet's minutes (one prober at a time).",
                om,
            ),
            f"im_fleet_closer {p.fleet_closer}\n",
            header(
                "im_vantage_minute_verdicts_total",
                "counter",
                "Minutes this prober decided as a vantage, by verdict (from the ledger).",
                om,
            ),
        ]
        vantage = _escape(p.vantage)
        for t in self.targets:
            name = _escape(t.name)
            for state in State:
                count = p.vantage_verdicts.get((t.name, state.value), 0)
                out.append(
                    f'im_vantage_minute_verdicts_total{{target="{name}",vantage="{vantage}",'
                    f'state="{state}"}} {count}\n'
                )
        return "".join(out)

    def _config_block(self, om: bool) -> str:
        out = [
            header(
                "im_probe_attempts_per_minute",
                "gauge",
                "Attempts a minute each probe is configured to make (IMTargetFailingNow "
                "derives its threshold from it).",
                om,
            )
        ]
        for t in self.targets:
            for probe, cadence in zip(t.probes, t.attempts_per_minute, strict=False):
                out.append(
                    f'im_probe_attempts_per_minute{{target="{_escape(t.name)}",'
                    f'probe="{_escape(probe)}"}} {cadence}\n'
                )
        return "".join(out)

    # -- each attempt as it ends (not when its minute closes) ----------------------------

    def _streak_block(self, om: bool) -> str:
        streaks = self.stats.streaks
        failures = [
            header(
                "im_probe_consecutive_failures",
                "gauge",
                "Failed attempts in a row, updated as each attempt ends; a success resets "
                "it, excluded outcomes (client_error, throttled, prober_fault) leave it.",
                om,
            )
        ]
        successes = [
            header(
                "im_probe_last_success_timestamp_seconds",
                "gauge",
                "When the probe's latest successful attempt ended (Unix time); 0 until the "
                "first since this process started.",
                om,
            )
        ]
        for key, labels in self._probe_labels:
            streak = streaks.get(key)
            if streak is None:
                failures.append(f"im_probe_consecutive_failures{labels} 0\n")
                successes.append(f"im_probe_last_success_timestamp_seconds{labels} 0\n")
            else:
                failures.append(f"im_probe_consecutive_failures{labels} {streak.failures}\n")
                successes.append(
                    f"im_probe_last_success_timestamp_seconds{labels} "
                    f"{_number(streak.last_success)}\n"
                )
        return "".join(failures) + "".join(successes)

    # -- this process ----------------------------------------------------------------

    def _process_block(self, om: bool) -> str:
        p = self.stats
        out = [
            header(
                "im_probe_duration_seconds",
                "histogram",
                "Duration of attempts (monotonic clock), since this process started.",
                om,
            )
        ]
        for t in self.targets:
            for probe in t.probes:
                histogram = p.durations.get((t.name, probe))
                if histogram is None:
                    histogram = p.durations[(t.name, probe)] = Histogram(DURATION_BUCKETS)
                out.append(
                    self._histograms.render(
                        histogram,
                        "im_probe_duration_seconds",
                        (("target", t.name), ("probe", probe)),
                    )
                )
        out.append(
            header(
                "im_scheduler_lag_seconds",
                "histogram",
                "How late attempts started against their planned time.",
                om,
            )
        )
        out.append(self._histograms.render(p.lag, "im_scheduler_lag_seconds", ()))
        for name, help_, value in (
            (
                "im_ledger_write_errors_total",
                "Failed ledger writes (closed minutes are kept in memory and retried).",
                p.ledger_write_errors,
            ),
            (
                "im_scheduler_misfires_total",
                "Attempts skipped because they could not start near their planned time.",
                p.misfires,
            ),
            (
                "im_attempts_discarded_total",
                "Attempts that finished after their minute had closed (clock step or stall).",
                p.discarded_attempts,
            ),
            (
                "im_attempts_unstored_total",
                "Finished attempts never stored: the ledger refused writes past the buffer.",
                p.dropped_attempts,
            ),
            (
                "im_clock_steps_total",
                "Wall-clock steps noticed against the monotonic clock.",
                p.clock_steps,
            ),
        ):
            out.append(header(name, "counter", help_, om))
            out.append(f"{name} {value}\n")
        if p.network_up is not None:
            out.append(
                header(
                    "im_prober_network_up",
                    "gauge",
                    "1 when a reference endpoint answered in the last network check.",
                    om,
                )
            )
            out.append(f"im_prober_network_up {p.network_up}\n")
        out.append(
            header(
                "im_config_last_reload_successful",
                "gauge",
                "1 when the last configuration (re)load succeeded.",
                om,
            )
        )
        out.append(f"im_config_last_reload_successful {p.reload_successful}\n")
        out.append(
            header(
                "im_config_last_reload_success_timestamp_seconds",
                "gauge",
                "When the configuration was last loaded successfully (Unix time).",
                om,
            )
        )
        out.append(
            f"im_config_last_reload_success_timestamp_seconds {_number(p.reload_timestamp)}\n"
        )
        expiries = [
            (t.name, expiry)
            for t in self.targets
            if (expiry := p.earliest_certificate_expiry(t.name, t.probes)) is not None
        ]
        if expiries:
            out.append(
                header(
                    "im_probe_tls_cert_expiry_timestamp_seconds",
                    "gauge",
                    "Earliest notAfter (Unix time) of the leaf certificates the target's "
                    "probes last saw; only targets reached over TLS.",
                    om,
                )
            )
            out.extend(
                f'im_probe_tls_cert_expiry_timestamp_seconds{{target="{_escape(name)}"}} '
                f"{_number(expiry)}\n"
                for name, expiry in expiries
            )
        out.append(header("im_prober_build_info", "gauge", "The running im-prober's version.", om))
        out.append(f'im_prober_build_info{{version="{_escape(self.version)}"}} 1\n')
        return "".join(out)
