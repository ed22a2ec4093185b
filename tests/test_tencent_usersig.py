"""UserSig against Tencent's reference package (the oracle), and verification: round trip,
tampering, expiry, mismatched app or identifier, garbage. Plus the error-code taxonomy."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prober.adapters.tencent import errors, usersig
from prober.sla import Outcome

KEY = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e"
APP = 1400000000


def oracle(monkeypatch, sdkappid: int, key: str, identifier: str, now: int, expire: int) -> str:
    import TLSSigAPIv2

    monkeypatch.setattr(TLSSigAPIv2.time, "time", lambda: now)
    return TLSSigAPIv2.TLSSigAPIv2(sdkappid, key).gen_sig(identifier, expire)


def test_bytes_equal_the_reference_package(monkeypatch) -> None:
    for identifier, now, expire in [
        ("administrator", 1_790_000_000, 86400),
        ("xiaojun", 1_600_000_000, 180 * 86400),
        ("用户-1", 1_800_000_123, 300),
    ]:
        ours = usersig.generate(APP, KEY, identifier, now=now, expire=expire)
        assert ours == oracle(monkeypatch, APP, KEY, identifier, now, expire)


@settings(max_examples=50, deadline=None)
@given(
    identifier=st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40),
    sdkappid=st.integers(1_400_000_000, 1_600_000_000),
    now=st.integers(1_500_000_000, 2_000_000_000),
    expire=st.integers(1, 10**7),
)
def test_any_input_matches_the_oracle_and_verifies(identifier, sdkappid, now, expire) -> None:
    import TLSSigAPIv2

    original = TLSSigAPIv2.time.time
    TLSSigAPIv2.time.time = lambda: now
    try:
        reference = TLSSigAPIv2.TLSSigAPIv2(sdkappid, KEY).gen_sig(identifier, expire)
    finally:
        TLSSigAPIv2.time.time = original
    ours = usersig.generate(sdkappid, KEY, identifier, now=now, expire=expire)
    assert ours == reference
    info = usersig.verify(ours, sdkappid, KEY, now=now + expire, identifier=identifier)
    assert (info.identifier, info.expires_at) == (identifier, now + expire)


def reason(sig: str, **kw) -> str:
    with pytest.raises(usersig.InvalidUserSig) as info:
        usersig.verify(sig, **{"sdkappid": APP, "key": KEY, "now": 1_790_000_100, **kw})
    return info.value.reason


def test_verification_refuses_what_the_service_refuses() -> None:
    sig = usersig.generate(APP, KEY, "administrator", now=1_790_000_000, expire=3600)
    assert usersig.verify(sig, APP, KEY, now=1_790_000_100, identifier="administrator")
    assert reason(sig, now=1_790_003_601) == "expired"
    assert reason(sig, key="another-secret-key") == "tampered"
    assert reason(sig, sdkappid=APP + 1) == "mismatch"
    assert reason(sig, identifier="someone-else") == "mismatch"
    assert reason("not a usersig at all") == "malformed"
    assert reason("") == "malformed"
    assert reason("x" * 10_000) == "malformed"
    # a changed character inside the compressed document breaks the stream or the HMAC
    # (near the end it may only touch the deflate stream's unused padding bits)
    for position in (20, 60, 100):
        flipped = sig[:position] + ("A" if sig[position] != "A" else "B") + sig[position + 1 :]
        assert reason(flipped) in ("malformed", "tampered")


@pytest.mark.parametrize(
    ("code", "outcome", "kind"),
    [
        (0, Outcome.SUCCESS, ""),
        *[
            (c, Outcome.FAILURE, "internal")
            for c in (60013, 60014, 70169, 70500, 20002, 20004, 20005, 90994, 90995, 91000, 10002)
        ],
        *[
            (c, Outcome.CLIENT_ERROR, k)
            for c, k in (
                (60002, "parameter"),
                (60003, "parameter"),
                (60004, "signature"),
                (60005, "signature"),
                (60006, "permission"),
                (60009, "permission"),
                (60010, "permission"),
                (60021, "permission"),
                (70001, "signature"),
                (70020, "signature"),
                (70107, "account"),
                (70402, "parameter"),
                (70403, "parameter"),
                (90001, "parameter"),
                (90012, "parameter"),
                (93000, "parameter"),
                (80002, "parameter"),
                (10003, "group"),
                (10021, "group"),
            )
        ],
        *[
            (c, Outcome.THROTTLED, "rate_limited")
            for c in (60007, 60011, 60018, 60019, 70050, 10006, 10023)
        ],
        *[
            (c, Outcome.CLIENT_ERROR, k)
            for c, k in (
                (60016, "app_state"),
                (60017, "app_state"),
                (60020, "edition"),
                (70051, "account_state"),
                (70398, "edition"),
                (80001, "content_blocked"),
            )
        ],
        (99999, Outcome.FAILURE, "unknown_code"),
    ],
)
def test_every_listed_code_has_its_class(code: int, outcome: Outcome, kind: str) -> None:
    assert errors.classify(code) == errors.Classified(outcome, kind)


def test_every_code_in_the_listed_ranges_is_classified() -> None:
    for code in [*range(70001, 70021), *range(90001, 90013), *range(10003, 10022)]:
        assert errors.classify(code).kind != "unknown_code"
    kinds = {c.kind for c in errors.TABLE.values()}
    assert len(kinds) <= 12  # a small fixed set, fit for a label
