"""The exposition as a scraper reads it: the hand-written families and the standard
`process_*`/`python_info` series together, valid in both formats (prometheus_client's own
parsers and `promtool check metrics`), and the per-attempt streak series that page before a
minute closes."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import textwrap
from datetime import date
from fractions import Fraction
from pathlib import Path

from aiohttp import web
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om
from prometheus_client.parser import text_string_to_metric_families as parse_text

from prober.config.models import parse_config
from prober.expose import metrics
from prober.expose.metrics import Exposition, TargetInfo
from prober.ledger.store import Ledger
from prober.ledger.view import LedgerView
from prober.logs import LOGGER_NAME
from prober.records import Attempt, ClosedMinute
from prober.runtime.plan import Planned
from prober.runtime.prober import Prober
from prober.sla import DEFAULT_TIERS, Outcome, OutcomeCounts, ServiceCalendar, State, Verdict
from prober.stats import RuntimeStats

from .chat_app import free_port
from .runtime_util import BASE, FakeClock
from .test_prometheus_rules import MINUTE, promtool


def exposition() -> Exposition:
    view = LedgerView()
    view.track("t", ServiceCalendar(date(2026, 1, 1), "UTC"))
    view.targets["t"].add(MINUTE, State.APPARENT_FAILURE)
    stats = RuntimeStats()
    stats.observe_duration("t", "login", 0.2)
    stats.saw_attempt(Attempt("t", "login", MINUTE * 60 + 3, 0.2, Outcome.SUCCESS))
    stats.saw_attempt(Attempt("t", "login", MINUTE * 60 + 18, 0.2, Outcome.FAILURE))
    result = Exposition(view, stats, "test")
    result.set_targets([TargetInfo("t", ("login",), Fraction(99, 100), DEFAULT_TIERS, (4,))])
    return result


def test_the_standard_process_series_stand_beside_the_ledger_families() -> None:
    text = exposition().render(MINUTE * 60 + 90).decode()
    parsed = list(parse_text(text))
    assert len(parsed) == len({f.name for f in parsed}), "a family is exposed twice"
    families = {f.name: f for f in parsed}
    assert families["process_resident_memory_bytes"].samples[0].value > 0
    assert families["process_open_fds"].samples[0].value >= 3
    assert families["python_info"].samples[0].labels["implementation"]
    assert families["im_sla_downtime_seconds"].samples[0].value == 60


def test_openmetrics_ends_once_and_parses() -> None:
    text = exposition().render(MINUTE * 60 + 90, openmetrics=True).decode()
    assert text.endswith("# EOF\n") and text.count("# EOF") == 1
    names = {f.name for f in parse_om(text)}
    assert {"process_cpu_seconds", "python_info", "im_probe_attempts"} <= names


def test_promtool_accepts_the_whole_exposition() -> None:
    body = exposition().render(MINUTE * 60 + 90)
    done = subprocess.run(
        [promtool(), "check", "metrics"], input=body, capture_output=True, timeout=30
    )
    assert done.returncode == 0, done.stdout + done.stderr


# -- the streaks: failed attempts in a row, as each attempt ends ---------------------------

TWO_PROBES = TargetInfo("t", ("login", "send"), Fraction(99, 100), DEFAULT_TIERS, (1, 4))


def samples(exposition: Exposition, name: str) -> dict[tuple[str, str], float]:
    text = exposition.render(MINUTE * 60 + 90).decode()
    family = next(f for f in parse_text(text) if f.name == name)
    return {(s.labels["target"], s.labels["probe"]): s.value for s in family.samples}


def ended(outcome: Outcome, at: float, probe: str = "login") -> Attempt:
    return Attempt("t", probe, at, 0.25, outcome)


def test_every_configured_probe_has_its_streak_series_from_the_start() -> None:
    shown = Exposition(LedgerView(), RuntimeStats(), "test")
    shown.set_targets([TWO_PROBES])
    expected = {("t", "login"): 0, ("t", "send"): 0}
    assert samples(shown, "im_probe_consecutive_failures") == expected
    assert samples(shown, "im_probe_last_success_timestamp_seconds") == expected
    assert samples(shown, "im_probe_attempts_per_minute") == {("t", "login"): 1, ("t", "send"): 4}


def test_failed_attempts_add_up_excluded_outcomes_leave_the_streak_and_a_success_resets_it():
    stats = RuntimeStats()
    shown = Exposition(LedgerView(), stats, "test")
    shown.set_targets([TWO_PROBES])
    start = MINUTE * 60
    stats.saw_attempt(ended(Outcome.SUCCESS, start + 2))
    stats.saw_attempt(ended(Outcome.FAILURE, start + 17))
    stats.saw_attempt(ended(Outcome.FAILURE, start + 32))
    # in the middle of the streak: the caller's fault, throttling, the prober's own trouble
    stats.saw_attempt(ended(Outcome.CLIENT_ERROR, start + 47))
    stats.saw_attempt(ended(Outcome.THROTTLED, start + 62))
    stats.saw_attempt(ended(Outcome.PROBER_FAULT, start + 77))
    stats.saw_attempt(ended(Outcome.FAILURE, start + 92))
    stats.saw_attempt(ended(Outcome.FAILURE, start + 5, probe="send"))
    assert samples(shown, "im_probe_consecutive_failures") == {("t", "login"): 3, ("t", "send"): 1}
    # the last success is the first attempt's end: its start plus its duration
    last = samples(shown, "im_probe_last_success_timestamp_seconds")
    assert last == {("t", "login"): start + 2.25, ("t", "send"): 0}
    stats.saw_attempt(ended(Outcome.SUCCESS, start + 107))
    assert samples(shown, "im_probe_consecutive_failures") == {("t", "login"): 0, ("t", "send"): 1}
    last = samples(shown, "im_probe_last_success_timestamp_seconds")
    assert last[("t", "login")] == start + 107.25
    # an earlier attempt that ends late does not move the stamp back
    stats.saw_attempt(ended(Outcome.SUCCESS, start + 100))
    assert samples(shown, "im_probe_last_success_timestamp_seconds")[("t", "login")] == (
        start + 107.25
    )


def test_a_failure_while_the_network_check_finds_the_network_down_does_not_add() -> None:
    stats = RuntimeStats(network_up=1)
    stats.saw_attempt(ended(Outcome.FAILURE, MINUTE * 60))
    stats.network_up = 0  # every reference failed: the prober's own network is broken
    stats.saw_attempt(ended(Outcome.FAILURE, MINUTE * 60 + 15))
    stats.saw_attempt(ended(Outcome.FAILURE, MINUTE * 60 + 30))
    assert stats.streaks[("t", "login")].failures == 1
    stats.network_up = 1
    stats.saw_attempt(ended(Outcome.FAILURE, MINUTE * 60 + 45))
    assert stats.streaks[("t", "login")].failures == 2


def test_a_reload_keeps_the_streaks_of_kept_probes_and_drops_those_of_removed_ones() -> None:
    stats = RuntimeStats()
    shown = Exposition(LedgerView(), stats, "test")
    other = TargetInfo("u", ("login",), Fraction(99, 100), DEFAULT_TIERS, (2,))
    shown.set_targets([TWO_PROBES, other])
    for _ in range(2):
        stats.saw_attempt(ended(Outcome.FAILURE, MINUTE * 60))
        stats.saw_attempt(Attempt("u", "login", MINUTE * 60, 0.1, Outcome.FAILURE))
    shown.set_targets([TWO_PROBES])  # u removed
    assert samples(shown, "im_probe_consecutive_failures") == {("t", "login"): 2, ("t", "send"): 0}
    shown.set_targets([TWO_PROBES, other])  # u back: it starts afresh
    assert samples(shown, "im_probe_consecutive_failures")[("u", "login")] == 0


def test_each_attempt_moves_the_streak_as_it_ends_not_when_its_minute_closes(tmp_path: Path):
    """The real runtime against a real HTTP server: 503, 503, 429, 401, 503 leave three
    failures in /metrics before any minute has closed; a 200 resets them."""
    statuses: list[int] = []

    async def answer(_request: web.Request) -> web.Response:
        return web.Response(status=statuses.pop(0))

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/", answer)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        text = textwrap.dedent(f"""\
            ledger: {{path: ledger.sqlite3}}
            targets:
              - name: t
                kind: http
                http: {{probes: {{login: [{{url: "http://127.0.0.1:{port}/"}}]}}}}
                probes: {{login: {{attempts_per_minute: 4, timeout: 2s}}}}
                sla: {{service_month_anchor: 2026-01-01}}
            """)
        config = parse_config(text, tmp_path / "config.yaml")
        ledger = Ledger(tmp_path / "ledger.sqlite3")
        view, stats = LedgerView(), RuntimeStats()
        shown = Exposition(view, stats, "test")
        clock = FakeClock(BASE + 5)  # the planned attempts of "t" lie well past this test
        prober = Prober(config, ledger, clock=clock, view=view, stats=stats,
                        on_targets=shown.configure)  # fmt: skip
        await prober.start()
        adapter = prober.targets.current("t").adapter
        try:
            statuses.extend([503, 503, 429, 401, 503])
            for _ in range(5):
                planned = Planned(clock.now, "t", "login", 2.0, 15.0)
                prober.clockwork.book.started(planned.minute)
                await prober.clockwork.attempt(planned, adapter)
                clock.now += 1
            assert samples(shown, "im_probe_consecutive_failures") == {("t", "login"): 3}
            assert samples(shown, "im_probe_last_success_timestamp_seconds") == {("t", "login"): 0}
            assert prober.clockwork.next_close == int(BASE // 60)  # no minute closed yet
            statuses.append(200)
            planned = Planned(clock.now, "t", "login", 2.0, 15.0)
            prober.clockwork.book.started(planned.minute)
            await prober.clockwork.attempt(planned, adapter)
            assert samples(shown, "im_probe_consecutive_failures") == {("t", "login"): 0}
            (last,) = samples(shown, "im_probe_last_success_timestamp_seconds").values()
            assert clock.now < last < clock.now + 1
        finally:
            await prober.stop()
            ledger.close()
            await runner.cleanup()

    asyncio.run(main())


# -- what a scrape on the daemon's event loop waits for ------------------------------------


def many_targets(view: LedgerView, n: int) -> list[TargetInfo]:
    targets = [
        TargetInfo(f"t{i:04d}", ("login",), Fraction(99, 100), DEFAULT_TIERS, (4,))
        for i in range(n)
    ]
    for t in targets:
        view.track(t.name, ServiceCalendar(date(2026, 1, 1), "UTC"))
    return targets


def shown_with(n: int) -> tuple[LedgerView, RuntimeStats, list[TargetInfo], Exposition]:
    """An exposition of `n` one-probe targets over an empty view and fresh stats."""
    view, stats = LedgerView(), RuntimeStats()
    targets = many_targets(view, n)
    shown = Exposition(view, stats, "test")
    shown.set_targets(targets)
    return view, stats, targets, shown


def available_minutes(body: bytes, target: str) -> float:
    family = next(f for f in parse_text(body.decode()) if f.name == "im_minute_verdicts")
    (value,) = [
        s.value
        for s in family.samples
        if s.labels == {"target": target, "state": "available"} and s.name.endswith("_total")
    ]
    return value


def test_a_scrape_during_the_ledger_render_after_a_close_gets_the_previous_one_at_once(
    monkeypatch,
) -> None:
    """At 10,000 targets the render after a close took seconds while the loop was busiest;
    a scrape then no longer waits for it, and the next scrape has the new minute. With no
    rendering for the configured targets (a reload) a scrape still waits for one."""
    monkeypatch.setattr(metrics, "HOLD", 0.0)  # yield after every slice: the render is long
    rendering: list[bool] = []
    original = Exposition._ledger_block

    def watched(self: Exposition, now: float, out: list) -> object:
        rendering.append(True)
        yield from original(self, now, out)
        rendering.clear()

    monkeypatch.setattr(Exposition, "_ledger_block", watched)
    view, _stats, targets, shown = shown_with(1000)
    now = MINUTE * 60 + 90

    async def scrape() -> bytes:
        return b"".join(await shown.render_pieces(now))

    async def main() -> None:
        assert available_minutes(await scrape(), "t0000") == 0
        view.apply([ClosedMinute("t0000", MINUTE, Verdict(State.AVAILABLE), OutcomeCounts(1))])
        ready = asyncio.get_running_loop().create_task(shown.keep_ready(lambda: now))
        try:
            while not rendering:
                await asyncio.sleep(0)
            assert available_minutes(await scrape(), "t0000") == 0  # not held by the render
            while rendering:
                await asyncio.sleep(0)
            assert available_minutes(await scrape(), "t0000") == 1
            # a reload: the families of the new target list, waited for
            shown.set_targets([*targets, *many_targets(view, 1001)[1000:]])
            assert available_minutes(await scrape(), "t1000") == 0
        finally:
            ready.cancel()

    asyncio.run(main())


def test_a_close_the_runtime_puts_in_the_view_is_rendered_at_once_and_served(
    tmp_path: Path, caplog
) -> None:
    """keep_ready renders the ledger families once the view has stopped changing, a quarter
    to half a second after a close; the runtime's `show` starts that render as soon as the
    close is in the view, and the next scrape serves it (no keep_ready runs here). The
    render's time is logged at debug."""
    caplog.set_level(logging.DEBUG, LOGGER_NAME)
    closed_port = free_port()
    text = textwrap.dedent(f"""\
        ledger: {{path: ledger.sqlite3}}
        targets:
          - name: t
            kind: http
            http: {{probes: {{login: [{{url: "http://127.0.0.1:{closed_port}/"}}]}}}}
            probes: {{login: {{attempts_per_minute: 1, timeout: 1s}}}}
            sla: {{service_month_anchor: 2026-01-01}}
        """)
    config = parse_config(text, tmp_path / "config.yaml")
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    view, stats = LedgerView(), RuntimeStats()
    shown = Exposition(view, stats, "test")
    clock = FakeClock(BASE + 5)
    prober = Prober(config, ledger, clock=clock, view=view, stats=stats,
                    on_targets=shown.configure, show=shown.show)  # fmt: skip

    def no_data_minutes(scraped: list[bytes]) -> float:
        [family] = [
            f for f in parse_text(b"".join(scraped).decode()) if f.name == "im_minute_verdicts"
        ]
        (value,) = [
            s.value
            for s in family.samples
            if s.labels == {"target": "t", "state": "no_data"} and s.name.endswith("_total")
        ]
        return value

    async def main() -> None:
        await prober.start()
        try:
            minute = int(BASE // 60)
            assert no_data_minutes(await shown.render_pieces(clock.now)) == 0
            clock.now = (minute + 2) * 60 + 10  # two minutes ended, nothing attempted
            caplog.clear()
            await prober.clockwork.close_due()
            for _ in range(10_000):
                if any(r.getMessage() == "ledger families rendered" for r in caplog.records):
                    break
                await asyncio.sleep(0)
            assert no_data_minutes(await shown.render_pieces(clock.now)) == 2
            [logged] = [r for r in caplog.records if r.getMessage() == "ledger families rendered"]
            assert logged.fields["targets"] == 1 and logged.fields["seconds"] >= 0
        finally:
            await prober.stop()
            ledger.close()

    asyncio.run(main())


def test_a_probe_s_live_lines_follow_its_attempts_from_scrape_to_scrape() -> None:
    """Histogram and streak lines are rendered again only for the probes whose attempts
    ended since the last scrape; the others keep theirs, and all are served."""
    view, stats = LedgerView(), RuntimeStats()
    shown = Exposition(view, stats, "test")
    shown.set_targets(many_targets(view, 3))

    def counts() -> dict[str, float]:
        text = shown.render(MINUTE * 60 + 90).decode()
        family = next(f for f in parse_text(text) if f.name == "im_probe_duration_seconds")
        return {s.labels["target"]: s.value for s in family.samples if s.name.endswith("_count")}

    assert counts() == {"t0000": 0, "t0001": 0, "t0002": 0}
    stats.observe_duration("t0001", "login", 0.3)
    stats.saw_attempt(Attempt("t0001", "login", MINUTE * 60, 0.3, Outcome.FAILURE))
    assert counts() == {"t0000": 0, "t0001": 1, "t0002": 0}
    stats.observe_duration("t0000", "login", 0.1)
    stats.observe_duration("t0001", "login", 0.2)
    assert counts() == {"t0000": 1, "t0001": 2, "t0002": 0}
    assert samples(shown, "im_probe_consecutive_failures") == {
        ("t0000", "login"): 0, ("t0001", "login"): 1, ("t0002", "login"): 0}  # fmt: skip
    # a success alone (no duration observed) resets the streak and stamps its end
    stats.saw_attempt(Attempt("t0001", "login", MINUTE * 60 + 20, 0.5, Outcome.SUCCESS))
    assert samples(shown, "im_probe_last_success_timestamp_seconds")[("t0001", "login")] == (
        MINUTE * 60 + 20.5
    )
    assert samples(shown, "im_probe_consecutive_failures")[("t0001", "login")] == 0


def test_a_scrape_s_own_rendering_lets_the_event_loop_run_while_it_goes() -> None:
    """2,000 probes whose attempts moved them since the last scrape: rendering their lines
    again takes tens of ms, and the scrape yields to the loop (at least every HOLD), so
    timers due meanwhile run before it ends."""
    _view, stats, targets, shown = shown_with(2000)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    async def main() -> None:
        await shown.render_pieces(MINUTE * 60 + 90)  # the first rendering of everything
        for t in targets:
            stats.observe_duration(t.name, "login", 0.1)
        running = asyncio.get_running_loop().create_task(ticker())
        await asyncio.sleep(0)
        before = ticks
        body = b"".join(await shown.render_pieces(MINUTE * 60 + 90))
        running.cancel()
        assert ticks - before >= 2
        assert body.count(b'im_probe_duration_seconds_count{target="t') == 2000

    asyncio.run(main())


def test_a_reload_while_a_scrape_or_the_ledger_render_is_paused_loses_nothing(
    monkeypatch,
) -> None:
    """The scrape paused mid-way serves every probe's live lines (none blank), and the
    ledger render cut short by the reload is done again for the new targets."""
    monkeypatch.setattr(metrics, "HOLD", 0.0)  # yield at every chance
    view, stats, targets, shown = shown_with(1000)
    now = MINUTE * 60 + 90

    async def main() -> None:
        loop = asyncio.get_running_loop()
        await shown.render_pieces(now)
        for t in targets:
            stats.observe_duration(t.name, "login", 0.1)
        scrape = loop.create_task(shown.render_pieces(now))
        for _ in range(3):
            await asyncio.sleep(0)
        more = [*targets, *many_targets(view, 1001)[1000:]]
        shown.set_targets(more)  # a reload while the scrape is paused
        body = b"".join(await scrape)
        for name in (
            b"im_probe_duration_seconds_count",
            b"im_probe_consecutive_failures",
            b"im_probe_last_success_timestamp_seconds",
        ):
            assert body.count(name + b'{target="t') in (1000, 1001), name
        # keep_ready's render of the ledger families, with a reload in the middle of it
        ready = loop.create_task(shown.keep_ready(lambda: now))
        try:
            view.apply([ClosedMinute("t0000", MINUTE, Verdict(State.AVAILABLE), OutcomeCounts(1))])
            await asyncio.sleep(metrics.REFRESH_EVERY * 1.5)
            shown.set_targets([*more])  # a second reload, while that render runs
            for _ in range(400):
                ledger = shown._ledger
                if ledger is not None and ledger.generation == view.generation:
                    break
                await asyncio.sleep(0.01)
            body = b"".join(await shown.render_pieces(now))
            assert available_minutes(body, "t0000") == 1
            assert available_minutes(body, "t1000") == 0
            assert not ready.done()
        finally:
            ready.cancel()

    asyncio.run(main())
