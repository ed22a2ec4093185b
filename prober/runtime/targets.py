"""The configured targets as the runtime holds them: each one's adapter, attempt plans and
closing rules, built in one place, and the set of them changed by a reload (unchanged
targets kept as they are, changed ones rebuilt, removed ones retired once their minutes
have closed)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from .. import sla
from ..adapters import REGISTRY, Adapter
from ..config.models import TargetBase
from ..sla import Reason, State, Verdict
from .book import TargetRules
from .plan import ProbePlan, probe_plan

PROBER_DOWN = Verdict(State.NO_DATA, Reason.PROBER_DOWN)
MAINTENANCE = Verdict(State.MAINTENANCE)


def build_adapter(target: TargetBase) -> Adapter:
    # The config's kinds are the registry's (config/models.py), so the lookup cannot miss.
    return REGISTRY[target.kind](target.name, target.section, target.largest_timeout)


def missed_minute_verdict(target: TargetBase) -> Callable[[int], Verdict]:
    """The verdict of a minute the prober did not observe: maintenance inside a declared
    window, otherwise no_data/prober_down."""
    windows = target.windows

    def verdict_of(minute: int) -> Verdict:
        return MAINTENANCE if sla.in_maintenance(minute, windows) else PROBER_DOWN

    return verdict_of


@dataclass
class TargetRuntime:
    config: TargetBase
    adapter: Adapter
    plans: tuple[ProbePlan, ...]
    rules: TargetRules

    @classmethod
    def build(cls, target: TargetBase) -> TargetRuntime:
        plans = tuple(
            probe_plan(target.name, name, probe.attempts_per_minute, probe.timeout)
            for name, probe in target.probes.items()
        )
        rules = TargetRules(target.name, tuple(target.probes), target.sla.policy, target.windows)
        return cls(target, build_adapter(target), plans, rules)


@dataclass
class Change:
    """What a reload did to the set of targets."""

    renewed: list[TargetRuntime]  # new or changed: to be planned at once
    added: list[TargetBase]  # new names: their missed minutes are recorded
    replaced: list[Adapter]  # adapters of changed or removed targets, to close later


@dataclass
class TargetSet:
    runtimes: dict[str, TargetRuntime] = field(default_factory=dict)
    # removed targets: their rules until the last minute planned for them has closed
    retiring: dict[str, tuple[TargetRules, int]] = field(default_factory=dict)
    _largest: tuple[dict[str, TargetRuntime], float] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    @classmethod
    def build(cls, targets: Iterable[TargetBase]) -> TargetSet:
        return cls({t.name: TargetRuntime.build(t) for t in targets})

    def __len__(self) -> int:
        return len(self.runtimes)

    def current(self, name: str) -> TargetRuntime | None:
        return self.runtimes.get(name)

    def all(self) -> list[TargetRuntime]:
        return list(self.runtimes.values())

    def largest_timeout(self) -> float:
        # Asked every second (the closer's delay); the targets change only with a reload,
        # which replaces the dict, so the figure is kept per dict (O(targets) each time
        # was ~10 ms a second at 5,000 targets).
        known = self._largest
        if known is None or known[0] is not self.runtimes:
            largest = max((r.config.largest_timeout for r in self.runtimes.values()), default=0.0)
            known = self._largest = (self.runtimes, largest)
        return known[1]

    def rules_for(self, minute: int) -> list[TargetRules]:
        """The rules of every target that may have attempts in `minute`."""
        rules = [r.rules for r in self.runtimes.values()]
        for name, (retired, last) in list(self.retiring.items()):
            if minute <= last:
                rules.append(retired)
            else:
                del self.retiring[name]
        return rules

    def verdict_of_missed(self, name: str) -> Callable[[int], Verdict]:
        runtime = self.runtimes.get(name)
        if runtime is None:
            return lambda _minute: PROBER_DOWN
        return missed_minute_verdict(runtime.config)

    def replace(self, targets: Iterable[TargetBase], planned_through: int) -> Change:
        fresh: dict[str, TargetRuntime] = {}
        added: list[TargetBase] = []
        for target in targets:
            runtime = self.runtimes.get(target.name)
            if runtime is not None and runtime.config == target:
                fresh[target.name] = runtime
                continue
            fresh[target.name] = TargetRuntime.build(target)
            if runtime is None:
                added.append(target)
        replaced = []
        for name, runtime in self.runtimes.items():
            if fresh.get(name) is not runtime:
                if name not in fresh:
                    self.retiring[name] = (runtime.rules, planned_through)
                replaced.append(runtime.adapter)
        renewed = [r for n, r in fresh.items() if r is not self.runtimes.get(n)]
        self.runtimes = fresh
        return Change(renewed, added, replaced)
