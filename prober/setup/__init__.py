"""Provisioning commands: the probe accounts, rooms and groups a target needs, created or
checked idempotently (`matrix`, `tencent`, `xmpp`), each printing the target's section.

May import: `adapters` (the kinds' own clients), `config`, `errors`. Never `demo` (the demo
uses these, not the other way round) nor the runtime.
"""
