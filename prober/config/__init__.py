"""The configuration: strict models (`models`), YAML that remembers each value's line and
keeps loading bounded (`yamlsource`), `{env}`/`{file}` secret references and redaction
(`secrets`), the field types the kinds' sections share (`fields`, `durations`).

May import: `sla`, `errors`, and the adapter registry (each kind's section model comes from
its adapter). Adapters import `fields` and `secrets` only, never `models`, so there is no
cycle. Nothing here touches the ledger, the runtime or the network.
"""
