"""The runtime: plan each minute's attempts, fire them on time, collect their outcomes per
minute, close each minute into verdicts and hand them to the writer, which keeps the ledger
and the in-memory view. Also `probe-once`, which runs one attempt the same way.

May import: `sla`, `records`, `stats`, `config`, `adapters`, `ledger`, `logs`, `errors`.
Never `expose`, `reports`, `setup`, `demo`, the daemon or the CLI: the daemon hands in what
the runtime fills (the view, the stats) and a hook for the target list.
"""
