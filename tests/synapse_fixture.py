"""Session-wide real Synapse homeservers for the tests (see prober/demo/homeserver.py)."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from prober.demo.homeserver import Homeserver
from prober.setup.matrix import Provisioned, provision

PASSWORD = "probe-password-4711"
PEER_PASSWORD = "peer-password-0815"


@dataclass
class MatrixWorld:
    server: Homeserver
    setup: Provisioned


def require_synapse() -> None:
    if importlib.util.find_spec("synapse") is None:
        pytest.fail("matrix-synapse is not installed: it is part of the test extra")


@pytest.fixture(scope="session")
def matrix(tmp_path_factory) -> Iterator[MatrixWorld]:
    """A relaxed Synapse with the probe accounts and rooms provisioned."""
    require_synapse()
    server = Homeserver(tmp_path_factory.mktemp("synapse"), relaxed=True).start()
    try:
        setup = provision(
            server.url,
            user="probe",
            password=PASSWORD,
            peer="probe-peer",
            peer_password=PEER_PASSWORD,
            shared_secret=server.shared_secret,
        )
        yield MatrixWorld(server, setup)
    finally:
        server.stop()


@pytest.fixture(scope="session")
def strict_matrix(tmp_path_factory) -> Iterator[Homeserver]:
    """A Synapse with its default rate limits."""
    require_synapse()
    server = Homeserver(tmp_path_factory.mktemp("synapse-strict"), relaxed=False).start()
    try:
        server.register("probe", PASSWORD)
        yield server
    finally:
        server.stop()
