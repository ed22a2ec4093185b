"""The pure SLA core: verdicts, figures, service months, credits, claim windows, incidents.

Nothing here reads a clock, the network or a disk; everything is exact arithmetic.
"""

from .claims import ClaimWindow, claim_window, working_days_of
from .credits import DEFAULT_TIERS, CreditTier, credit_amount, credit_ratio
from .figures import Figures, count_states, downtime_budget_seconds, month_so_far
from .fleet import decide_fleet
from .incidents import Incident, find_incidents
from .maintenance import OneOffWindow, RecurringWindow, Window, in_maintenance
from .months import ServiceCalendar, ServiceMonth, epoch_minute, minute_iso, minute_start
from .types import Outcome, OutcomeCounts, Policy, Reason, State, Verdict
from .verdicts import apply_network_check, decide, decide_probes, decide_target

__all__ = [
    "DEFAULT_TIERS",
    "ClaimWindow",
    "CreditTier",
    "Figures",
    "Incident",
    "OneOffWindow",
    "Outcome",
    "OutcomeCounts",
    "Policy",
    "Reason",
    "RecurringWindow",
    "ServiceCalendar",
    "ServiceMonth",
    "State",
    "Verdict",
    "Window",
    "apply_network_check",
    "claim_window",
    "count_states",
    "credit_amount",
    "credit_ratio",
    "decide",
    "decide_fleet",
    "decide_probes",
    "decide_target",
    "downtime_budget_seconds",
    "epoch_minute",
    "find_incidents",
    "in_maintenance",
    "minute_iso",
    "minute_start",
    "month_so_far",
    "working_days_of",
]
