"""The ledger: the store (`store`: the SQL both backends run — one transaction per minute,
running totals, imports, reads; every evidence row a link of a hash chain, `chain`: the
encoding, the links written, `verify`), on SQLite (`sqlite_file`: the default single file; schema,
migrations, PRAGMAs, read-only opening for read commands) or PostgreSQL (`postgres`: a
fleet's shared database; its schema, versions, reconnecting), chosen by `opening` from the
config; the fleet's rows (`fleet`), its integer codes (`codes`), the one-daemon locks
(`lock`), the CSV form of minute rows (`minute_csv`, `csv_cells`), and the in-memory view of
its running state that metrics read (`view`).

May import: `sla`, `records`, `errors`, `config` (names and probes to check imports against;
`config.secrets` and `config.dburl` for the database's password and URL).
Never the runtime, `expose`, `reports` or `adapters`.
"""
