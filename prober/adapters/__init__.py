"""Adapters, one module per target kind behind `Adapter.attempt(context) -> Result`, and the
registry of kinds — the one place that lists them: the config's `kind` values and their
sections are built from it. Adding a kind is its module plus its import and its name in the
registry below.

May import: `sla`, `errors`, `logs`, `config.fields` and `config.secrets` (never the config
models, the ledger, the runtime or the exposition)."""

from __future__ import annotations

from .base import Adapter, ProbeContext, Result, Section
from .external import ExternalAdapter
from .http import HttpAdapter
from .matrix import MatrixAdapter
from .tencent_im import TencentImAdapter
from .xmpp import XmppAdapter

KIND_ADAPTERS: tuple[type[Adapter], ...] = (
    TencentImAdapter,
    MatrixAdapter,
    XmppAdapter,
    HttpAdapter,
    ExternalAdapter,
)
REGISTRY: dict[str, type[Adapter]] = {adapter.kind: adapter for adapter in KIND_ADAPTERS}


def preload(kinds: set[str]) -> None:
    """`Adapter.preload` of each of these kinds."""
    for kind in kinds:
        REGISTRY[kind].preload()


__all__ = ["REGISTRY", "Adapter", "ProbeContext", "Result", "Section", "preload"]
