"""The daemon's status page: an overview of every target, a page per target, and the JSON
API behind them (docs/status-page.md). It reads the in-memory view and the ledger; its
figures are the report's own.

May import: `sla`, `records`, `stats`, `errors`, `config`, `ledger`, `reports`. Never the
runtime, `expose` or the adapters; only the daemon imports it (it hands the page's routes to
the web app).
"""
