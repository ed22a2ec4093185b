"""Field types shared by the config and the kinds' sections: strict models, secret
references, durations, exact decimals, timezones."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    GetCoreSchemaHandler,
    PlainSerializer,
    PlainValidator,
    WithJsonSchema,
)
from pydantic_core import core_schema

from .durations import format_duration, parse_duration
from .secrets import Secret


def _not_a_boolean(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("expected a number, not true/false")
    return value


def _refuse_booleans(schema: Any) -> Any:
    """The core schema with every int/float/decimal check preceded by `_not_a_boolean`:
    pydantic's lax mode reads `attempts_per_minute: true` as 1, and YAML gives real bools."""
    if isinstance(schema, list):
        return [_refuse_booleans(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    if schema.get("type") == "function-before" and _is_guard(schema.get("function")):
        return schema  # a nested Strict model's schema, already guarded
    # Callables, references, serializers and JSON-schema metadata are left as they are.
    out = {
        key: value if key in _OPAQUE else _refuse_booleans(value) for key, value in schema.items()
    }
    if out.get("type") in ("int", "float", "decimal"):
        return core_schema.no_info_before_validator_function(_not_a_boolean, out)
    return out


def _is_guard(function: Any) -> bool:
    return isinstance(function, dict) and function.get("function") is _not_a_boolean


_OPAQUE = frozenset(
    {"function", "ref", "schema_ref", "serialization", "metadata", "cls", "default", "expected"}
)


class Strict(BaseModel):
    """Base of every config model: unknown keys are errors, values are frozen, and a
    boolean is never taken for a number (in any int/float field, however deeply nested)."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: type[BaseModel], handler: GetCoreSchemaHandler, /
    ) -> core_schema.CoreSchema:
        return _refuse_booleans(handler(source))


def _check_secret(value: Any) -> Secret:
    if isinstance(value, Secret):
        return value
    if isinstance(value, str | int | float):
        raise ValueError("secrets are never written inline: use {env: NAME} or {file: PATH}")
    raise ValueError("expected a secret reference: {env: NAME} or {file: PATH}")


SecretRef = Annotated[
    Secret,
    PlainValidator(_check_secret),
    PlainSerializer(lambda s: str(s), return_type=str),
    WithJsonSchema(
        {
            "oneOf": [
                {
                    "type": "object",
                    "properties": {"env": {"type": "string"}},
                    "required": ["env"],
                    "additionalProperties": False,
                },
                {
                    "type": "object",
                    "properties": {"file": {"type": "string"}},
                    "required": ["file"],
                    "additionalProperties": False,
                },
            ],
            "description": "a secret reference: {env: NAME} or {file: PATH}",
        }
    ),
]

# Every duration is between 1ms and MAX_DURATION (durations.py); a field narrows that with
# `Annotated[Duration, within(...)]`.
Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema({"type": ["string", "number"], "examples": ["500ms", "10s", "5m"]}),
]


def within(*, at_least: float | None = None, at_most: float | None = None) -> AfterValidator:
    """Bounds of one Duration field, said in the units operators write."""

    def check(seconds: float) -> float:
        if at_least is not None and seconds < at_least:
            raise ValueError(f"must be at least {format_duration(at_least)}")
        if at_most is not None and seconds > at_most:
            raise ValueError(f"must be at most {format_duration(at_most)}")
        return seconds

    return AfterValidator(check)


# Every exact decimal is below 10^12 in size with at most 6 decimal places: with the default
# 28-digit context every sum, product and rounding the reports make stays exact, so no
# input can reach an InvalidOperation. `decimal_within` narrows a field further.
DECIMAL_LIMIT = Decimal(10) ** 12
DECIMAL_PLACES = 6


def _exact_decimal(value: Any) -> Decimal:
    # YAML reads 0.99 as a float; its shortest repr is the decimal the operator wrote.
    if isinstance(value, bool):
        raise ValueError("expected a number, not true/false")
    if isinstance(value, float):
        value = repr(value)
    if not isinstance(value, str | int | Decimal):
        raise ValueError("expected a decimal number")
    text = str(value).strip()
    if len(text) > 40:  # a long string of digits is refused before Decimal parses it
        raise ValueError("expected a decimal number of at most 40 characters")
    try:
        result = Decimal(text)
    except ArithmeticError:
        raise ValueError(f"{text!r} is not a decimal number") from None
    if not result.is_finite():
        raise ValueError("expected a finite number")
    if abs(result) >= DECIMAL_LIMIT:
        raise ValueError(f"must be smaller than {DECIMAL_LIMIT:,.0f}")
    if _places(result) > DECIMAL_PLACES:
        raise ValueError(f"at most {DECIMAL_PLACES} decimal places")
    # 1E+3 and 1000 are the same amount; keep the plain form so reports print it plainly.
    return result if result.as_tuple().exponent <= 0 else result.quantize(Decimal(1))


def _places(value: Decimal) -> int:
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)  # finite
    return max(0, -exponent)


def decimal_within(*, places: int) -> AfterValidator:
    """A narrower number of decimal places for one ExactDecimal field (an amount of money)."""

    def check(value: Decimal) -> Decimal:
        if _places(value) > places:
            raise ValueError(f"at most {places} decimal places")
        return value

    return AfterValidator(check)


ExactDecimal = Annotated[
    Decimal,
    PlainValidator(_exact_decimal),
    PlainSerializer(lambda d: str(d), return_type=str),
    WithJsonSchema({"type": ["string", "number"]}),
]


def _timezone(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("expected an IANA timezone name such as Asia/Shanghai")
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown timezone {value!r} (expected e.g. Asia/Shanghai)") from None
    return value


TimezoneName = Annotated[str, PlainValidator(_timezone), WithJsonSchema({"type": "string"})]
