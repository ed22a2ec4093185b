"""What the daemon shows: the Prometheus exposition rendered from the view and the stats
(`metrics`), the HTTP endpoints (`web`), the listener that bounds its connections
(`listener`) and the web config's TLS and basic auth (`webconfig`).

May import: `sla`, `stats`, `ledger` (the view), `config`, `logs`, `errors`. Never the
runtime: the web app gets the renderer and the readiness check as callables.
"""
