"""Reports of a service month from the ledger: the SLA report in text, JSON, CSV and HTML
(`report`) and the evidence pack behind a credit claim (`evidence`).

May import: `sla`, `records`, `ledger`, `config`, `errors`. Never the runtime or `expose`.
"""
