"""Field types shared by the config and the kinds' sections: strict models, secret
references, durations, exact decimals, timezones."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    PlainSerializer,
    PlainValidator,
    WithJsonSchema,
)

from .durations import format_duration, parse_duration
from .secrets import Secret


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


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

Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema({"type": ["string", "number"], "examples": ["500ms", "10s", "5m"]}),
]


def _exact_decimal(value: Any) -> Decimal:
    # YAML reads 0.99 as a float; its shortest repr is the decimal the operator wrote.
    if isinstance(value, bool):
        raise ValueError("expected a number")
    if isinstance(value, float):
        value = repr(value)
    try:
        result = Decimal(str(value).strip())
    except ArithmeticError:
        raise ValueError(f"{value!r} is not a decimal number") from None
    if not result.is_finite():
        raise ValueError("expected a finite number")
    return result


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
