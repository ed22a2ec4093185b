from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

BASE_TARGET = """\
  - name: demo
    kind: http
    http:
      base_url: http://127.0.0.1:9
      probes:
        login: [{method: POST, url: /login, json: {user: probe}}]
        send_c2c: [{method: POST, url: /send, json: {text: "probe {uuid}"}}]
    probes:
      login: {attempts_per_minute: 1, timeout: 10s}
      send_c2c: {attempts_per_minute: 4, timeout: 10s}
    sla:
      service_month_anchor: 2026-03-17
      timezone: Asia/Shanghai
      monthly_fee: "1200.00"
      currency: USD
"""


def external_config(
    name: str = "box",
    *,
    per_minute: int = 1,
    timeout: str = "1s",
    anchor: object = "2026-01-01",
    ledger: str = "ledger.sqlite3",
) -> str:
    """A config of one `external` target running `true`: the lightest target that works."""
    return f"""\
ledger: {{path: {ledger}}}
targets:
  - name: {name}
    kind: external
    external: {{command: ["true"]}}
    probes: {{login: {{attempts_per_minute: {per_minute}, timeout: {timeout}}}}}
    sla: {{service_month_anchor: {anchor}}}
"""


UNGROUPED = pytest.StashKey[bool]()


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Notice when `--dist loadgroup` stops grouping. Each end-to-end module shares one
    real-time daemon run across its tests; ungrouped, every worker that gets one of its tests
    makes its own run (pytest 9.2 with xdist 3.8 did exactly that, silently, and the suite
    ran each scenario up to eight times at once)."""
    if getattr(config.option, "loadgroup", False):
        for item in items:
            if item.get_closest_marker("xdist_group") and "@" not in item.nodeid:
                item.stash[UNGROUPED] = True


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    # Before any fixture starts its daemon.
    if item.stash.get(UNGROUPED, False):
        pytest.fail(
            "this test has an xdist_group mark but --dist loadgroup did not group it: "
            "this pytest and pytest-xdist do not work together (see pyproject.toml)",
            pytrace=False,
        )


@pytest.fixture
def write_config(tmp_path: Path):
    """Write a config file into a fresh folder; returns its path."""

    def write(text: str, name: str = "config.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    return write


@pytest.fixture
def demo_config(write_config) -> Path:
    return write_config("ledger: {path: ledger.sqlite3}\ntargets:\n" + BASE_TARGET)


from .ledger_backends import backend  # noqa: E402,F401 - both ledger backends
from .postgres_fixture import postgres, postgres_url  # noqa: E402,F401 - session fixtures
from .synapse_fixture import matrix, strict_matrix  # noqa: E402,F401 - session fixtures
