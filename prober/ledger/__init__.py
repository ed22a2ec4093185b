"""The ledger: the SQLite store (`store`: schema, migrations, one transaction per minute,
running totals, read-only opening for read commands), its integer codes (`codes`), the
one-daemon lock (`lock`), the CSV form of minute rows (`minute_csv`, `csv_cells`), and the
in-memory view of its running state that metrics read (`view`).

May import: `sla`, `records`, `errors`, `config` (names and probes to check imports against).
Never the runtime, `expose`, `reports` or `adapters`.
"""
