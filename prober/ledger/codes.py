"""The ledger's small integer codes for outcomes, states and reasons: stored on disk,
so never renumbered. The SLA core names them; only storage needs the numbers."""

from __future__ import annotations

from ..sla import Outcome, Reason, State

OUTCOME_CODES: dict[Outcome, int] = {
    Outcome.SUCCESS: 0,
    Outcome.FAILURE: 1,
    Outcome.CLIENT_ERROR: 2,
    Outcome.THROTTLED: 3,
    Outcome.PROBER_FAULT: 4,
}
STATE_CODES: dict[State, int] = {
    State.AVAILABLE: 0,
    State.APPARENT_FAILURE: 1,
    State.MAINTENANCE: 2,
    State.NO_DATA: 3,
}
REASON_CODES: dict[Reason, int] = {
    Reason.NONE: 0,
    Reason.PROBER_DOWN: 1,
    Reason.PROBER_NETWORK: 2,
    Reason.EXCLUDED_ONLY: 3,
    Reason.BELOW_QUORUM: 4,
}
OUTCOMES_BY_CODE = {v: k for k, v in OUTCOME_CODES.items()}
STATES_BY_CODE = {v: k for k, v in STATE_CODES.items()}
REASONS_BY_CODE = {v: k for k, v in REASON_CODES.items()}
