"""Adapters, one module per target kind, registered here by kind name."""

from __future__ import annotations

from .base import Adapter, ProbeContext, Result, Section
from .external import ExternalAdapter
from .http import HttpAdapter
from .matrix import MatrixAdapter
from .tencent_im import TencentImAdapter
from .xmpp import XmppAdapter

REGISTRY: dict[str, type[Adapter]] = {
    HttpAdapter.kind: HttpAdapter,
    ExternalAdapter.kind: ExternalAdapter,
    MatrixAdapter.kind: MatrixAdapter,
    TencentImAdapter.kind: TencentImAdapter,
    XmppAdapter.kind: XmppAdapter,
}

__all__ = ["REGISTRY", "Adapter", "ProbeContext", "Result", "Section"]
