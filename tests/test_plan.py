"""Where attempts go in the minute: evenly spaced, staggered, and never at a minute's edge."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from prober.runtime.plan import EDGE_MARGIN, GRID, offsets, probe_plan


@given(
    target=st.text(min_size=1, max_size=30),
    probe=st.sampled_from(["login", "send_c2c", "send_group"]),
    per_minute=st.integers(1, 60),
)
def test_offsets_are_evenly_spaced_and_keep_off_the_minute_edges(
    target: str, probe: str, per_minute: int
) -> None:
    found = offsets(target, probe, per_minute)
    spacing = 60 / per_minute
    margin = min(EDGE_MARGIN, spacing / 4)
    assert len(found) == per_minute
    assert all(abs((b - a) - spacing) < 1e-9 for a, b in itertools.pairwise(found))
    # A few hundred ms of scheduling lag must not push the last attempt into the next minute.
    assert found[0] >= margin - 1e-9
    assert found[-1] <= 60 - margin + 1e-9
    assert offsets(target, probe, per_minute) == found  # stable across restarts


def test_targets_are_staggered_across_the_slot() -> None:
    firsts = sorted(offsets(f"t{i}", "login", 1)[0] for i in range(2000))
    assert firsts[0] < 2 and firsts[-1] > 58  # spread over the whole usable minute
    # roughly uniform: each ten-second band holds a sixth, give or take
    bands = [sum(1 for f in firsts if 10 * k <= f < 10 * (k + 1)) for k in range(6)]
    assert all(250 < band < 420 for band in bands), bands


@given(
    target=st.text(min_size=1, max_size=30),
    per_minute=st.sampled_from([1, 2, 3, 4, 6, 12, 30, 60]),
)
def test_staggers_lie_on_the_grid(target: str, per_minute: int) -> None:
    spacing = 60 / per_minute
    margin = min(EDGE_MARGIN, spacing / 4)
    first = offsets(target, "send_c2c", per_minute)[0]
    steps = (first - margin) / GRID
    assert abs(steps - round(steps)) < 1e-6, first


def test_targets_of_one_cadence_share_start_instants() -> None:
    # 1,000 targets at 4 a minute: 4,000 attempts on the 131 grid instants of a 15 s slot
    # (1.0 to 14.0 s), about seven at each, so the loop wakes ~10 times a second, not 67
    starts = {round(o, 3) for i in range(1000) for o in offsets(f"t{i:05d}", "send_c2c", 4)}
    assert len(starts) <= 4 * (round((15 - 2 * EDGE_MARGIN) / GRID) + 1)
    assert len(starts) > 4 * 100  # and still spread over the slot, not a few bursts


def test_a_plan_lists_the_attempts_of_a_minute_after_an_instant() -> None:
    plan = probe_plan("t", "send_c2c", 4, 5.0)
    minute = 29_000_000
    every = plan.attempts_in(minute)
    assert [p.minute for p in every] == [minute] * 4
    later = plan.attempts_in(minute, after=every[1].at)
    assert later == every[1:]
