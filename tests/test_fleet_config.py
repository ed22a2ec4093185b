"""The fleet's settings: the vantage name and the shard from the file or the environment
(the environment wins, so one config serves every replica), one clear error for bad values,
and shards that split the targets so each is probed by exactly `vantages_per_target`."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prober.config.models import ConfigError, parse_config
from prober.errors import UserError

TARGETS = "".join(
    f"  - {{name: t{i}, kind: http, http: {{probes: {{login: [{{url: 'http://127.0.0.1:9/'}}]}}}},"
    f" probes: {{login: {{}}}}, sla: {{service_month_anchor: 2026-01-01}}}}\n"
    for i in range(60)
)


def load(extra: str = "", environ: dict[str, str] | None = None):
    return parse_config(
        extra + "targets:\n" + TARGETS, Path("/nowhere/c.yaml"), environ=environ or {}
    )


def test_the_vantage_comes_from_the_environment_then_the_file_then_the_host_name() -> None:
    assert load("vantage: fra\n", {"IM_PROBER_VANTAGE": "pod-2"}).vantage == "pod-2"
    assert load("vantage: fra\n").vantage == "fra"
    assert load().vantage  # the host name, made to fit a vantage name


def test_a_bad_vantage_name_is_one_clear_error() -> None:
    with pytest.raises(UserError, match="IM_PROBER_VANTAGE"):
        load(environ={"IM_PROBER_VANTAGE": "a b"})
    with pytest.raises(ConfigError, match="vantage"):
        load("vantage: 'no spaces'\n")


def test_the_shard_comes_from_the_environment_and_must_fit_its_count() -> None:
    config = load(
        "fleet: {shard: {index: 0, count: 2}}\n",
        {"IM_PROBER_SHARD_INDEX": "2", "IM_PROBER_SHARD_COUNT": "3"},
    )
    assert (config.shard.index, config.shard.count) == (2, 3)
    with pytest.raises(UserError, match="index must be below the count"):
        load(environ={"IM_PROBER_SHARD_INDEX": "3", "IM_PROBER_SHARD_COUNT": "3"})
    with pytest.raises(UserError, match="not a whole number"):
        load(environ={"IM_PROBER_SHARD_INDEX": "-1"})
    with pytest.raises(ConfigError, match=r"fleet\.shard\.index"):
        load("fleet: {shard: {index: 4, count: 3}}\n")


@settings(deadline=None)  # config parsing times vary on a loaded machine; the rule does not
@given(st.integers(1, 7), st.integers(1, 7))
def test_every_target_is_probed_by_exactly_vantages_per_target_shards(count: int, per: int) -> None:
    configs = [
        load(f"fleet: {{shard: {{index: {i}, count: {count}}}, vantages_per_target: {per}}}\n")
        for i in range(count)
    ]
    for n in range(60):
        probing = [c for c in configs if c.probes_target(f"t{n}")]
        assert len(probing) == min(per, count)


def test_without_a_shard_every_prober_probes_every_target() -> None:
    config = load()
    assert all(config.probes_target(f"t{n}") for n in range(60))
