"""The command line: thin wrappers that parse flags, call the modules, print, exit."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from . import __version__
from .config.models import ConfigFile, json_schema, load_config
from .config.secrets import redact
from .errors import UserError
from .ledger.minute_csv import parse_instant, read_rows, write_rows
from .ledger.opening import display_location, open_ledger
from .ledger.store import ImportConflict, Ledger
from .reports.report import RENDERERS, Report, build_report
from .sla import ServiceMonth

EXIT_USAGE = 2
EXIT_INTERNAL = 70  # EX_SOFTWARE


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        raise UserError(message)


def _now(args: argparse.Namespace) -> datetime:
    return parse_instant(args.now) if getattr(args, "now", None) else datetime.now(UTC)


def _month(config: ConfigFile, target: str, month: str | None, now: datetime) -> ServiceMonth:
    calendar = config.config.target(target).sla.calendar()
    if month is None:
        found = calendar.month_containing(now)
        if found is None:
            raise UserError(
                f"target {target}: the first service month starts on {calendar.first_day}; "
                "nothing to report yet"
            )
        return found
    match = re.fullmatch(r"(\d{4})-(\d{2})", month)
    if not match or not 1 <= int(match.group(2)) <= 12:
        raise UserError(f"--month {month!r}: expected YYYY-MM, e.g. 2026-04")
    try:
        return calendar.month_starting_in(int(match.group(1)), int(match.group(2)))
    except ValueError as exc:
        raise UserError(f"--month {month}: {exc}") from None


def _read_ledger(config: ConfigFile) -> Ledger:
    """The ledger for a command that only reads it: opened read-only, never changed."""
    return open_ledger(config, readonly=True)


def cmd_check_config(args: argparse.Namespace) -> int:
    from .expose.webconfig import load_web_config

    config = load_config(args.config, resolve_secrets=not args.skip_secrets)
    checked = "secret references not read" if args.skip_secrets else "secrets resolved"
    print(f"# {config.path}: valid; {len(config.config.targets)} target(s); {checked}")
    web_path = Path(args.web_config) if args.web_config else config.web_config_path
    if web_path is not None:
        security = load_web_config(web_path)
        print(
            f"# {web_path}: valid; TLS {'on' if security.tls else 'off'}; "
            f"{len(security.settings.basic_auth_users)} basic-auth user(s)"
        )
    print(yaml.safe_dump(config.redacted(), sort_keys=False, allow_unicode=True), end="")
    return 0


def cmd_config_schema(_args: argparse.Namespace) -> int:
    print(json.dumps(json_schema(), indent=2))
    return 0


def _report_for(args: argparse.Namespace, config: ConfigFile) -> Callable[[Ledger], Report]:
    """Check the target and month first (clear errors before any file is opened), then
    return what computes the report from an open ledger."""
    target = config.config.target(args.target)
    now = _now(args)
    month = _month(config, args.target, args.month, now)
    return lambda ledger: build_report(ledger, target, month, now)


def cmd_report(args: argparse.Namespace) -> int:
    config = load_config(args.config, resolve_secrets=False)
    compute = _report_for(args, config)
    with _read_ledger(config) as ledger:
        report = compute(ledger)
    sys.stdout.write(RENDERERS[args.format](report))
    return 0


def cmd_evidence(args: argparse.Namespace) -> int:
    from .reports.evidence import TIMESTAMP, timestamp_pack, write_evidence
    from .reports.signing import signing_key
    from .reports.stored_checkpoints import stored_checkpoints
    from .reports.timestamp import TimestampError, stamper

    missing = [flag for flag in ("config", "target", "month", "out") if not getattr(args, flag)]
    if missing:
        flags = ", ".join("-c/--config" if f == "config" else f"--{f}" for f in missing)
        raise UserError(f"evidence: the following arguments are required: {flags}")
    config = load_config(args.config, resolve_secrets=False)
    compute = _report_for(args, config)
    key = signing_key(config)
    authority = stamper(config)
    with _read_ledger(config) as ledger:
        report = compute(ledger)
        files = write_evidence(
            ledger,
            report,
            Path(args.out),
            config_digest=config.digest,
            force=args.force,
            key=key,
            checkpoints=stored_checkpoints(config),
            timestamp_by=None if authority is None else authority.shown,
        )
    print(
        f"wrote {len(files)} files to {args.out} ({report.figures.apparent_failure} failed minutes)"
    )
    for name, digest in sorted(files.items()):
        print(f"  {digest}  {name}")
    if key is None:
        print("not signed: set evidence.signing_key in the config to sign packs")
    else:
        print(f"signed by key {key.public.fingerprint}")
    if authority is None:
        return 0
    # the pack stands without its timestamp: made, and the command says so and exits 1,
    # as `ledger checkpoint` does when a sink cannot be reached
    try:
        token = timestamp_pack(Path(args.out), authority)
    except TimestampError as exc:
        print(
            f"not timestamped: {exc}; the pack is made without {TIMESTAMP} (make it again "
            "with --force to try again)",
            file=sys.stderr,
        )
        return 1
    print(f"timestamped: SHA256SUMS existed at {token.time_iso} by {token.authority} ({TIMESTAMP})")
    return 0


def cmd_evidence_verify(args: argparse.Namespace) -> int:
    from .reports.pack_check import check_pack
    from .reports.signing import load_public_key
    from .reports.timestamp import load_authority

    trusted = load_public_key(Path(args.key)) if args.key else None
    tsa = load_authority(Path(args.tsa_ca), "TSA CA file") if args.tsa_ca else None
    proof = check_pack(Path(args.dir), trusted, tsa)
    sys.stdout.write(proof.render())
    return 0 if proof.ok else 1


def cmd_ledger_export(args: argparse.Namespace) -> int:
    config = load_config(args.config, resolve_secrets=False)
    if args.target:
        config.config.target(args.target)
    since = parse_instant(args.since).timestamp() // 60 if args.since else None
    until = parse_instant(args.until).timestamp() // 60 if args.until else None
    with _read_ledger(config) as ledger:
        write_rows(
            ledger.minute_rows(
                args.target,
                None if since is None else int(since),
                None if until is None else int(until),
            ),
            sys.stdout,
        )
    return 0


def cmd_ledger_import(args: argparse.Namespace) -> int:
    config = load_config(args.config, resolve_secrets=False)
    path = Path(args.csv)
    targets = config.config.targets
    rows = read_rows(
        path, {t.name for t in targets}, probes={t.name: set(t.probes) for t in targets}
    )
    with open_ledger(config, create=True) as ledger:
        try:
            result = ledger.import_rows(rows)
        except ImportConflict as exc:
            raise UserError(f"{path}: {exc}") from None
    print(f"{path}: {result.added} minute rows added, {result.unchanged} already present")
    return 0


def cmd_ledger_migrate(args: argparse.Namespace) -> int:
    from .ledger.store import SCHEMA_VERSION

    config = load_config(args.config, resolve_secrets=False)
    # Opening for writing upgrades an older schema in one transaction (and refuses files
    # that are not ledgers, or are newer); a missing ledger is not created.
    with open_ledger(config, create=False) as ledger:
        chained = ledger.chained
    print(f"{display_location(config)}: ledger schema {SCHEMA_VERSION}, up to date")
    if chained is not None:
        rows = ", ".join(f"{n:,} {table}" for table, n in chained.items())
        print(f"chained the rows already in the ledger, each chain from its first row: {rows}")
    return 0


def cmd_ledger_verify_checkpoints(args: argparse.Namespace) -> int:
    """`ledger verify`, with --checkpoint: each file's signature first, then its heads."""
    from .reports.signing import chain_heads, load_checkpoints, load_public_key

    if not args.checkpoint:
        if args.key:
            raise UserError("--key PUB checks checkpoints: give --checkpoint FILE too")
        return cmd_ledger_verify(args)
    trusted = load_public_key(Path(args.key)) if args.key else None
    checkpoints = load_checkpoints([Path(p) for p in args.checkpoint], trusted)
    for path, found in zip(args.checkpoint, checkpoints, strict=True):
        whose = "the key you trust" if trusted else "the key it carries"
        print(
            f"{path}: checkpoint of {found.time_iso} ({found.reason}, {found.vantage}), "
            f"{len(found.heads):,} heads, signed by {found.fingerprint} ({whose})"
        )
    heads = {id(c): chain_heads(c) for c in checkpoints}

    def said(result: Any) -> None:
        # a chain's first break is listed: a head on a chain broken earlier is not shown
        broken_chains = {b.key for b in result.breaks}
        for found in checkpoints:
            mine = {(h.key, h.seq) for h in heads[id(found)]}
            missing = [b for b in result.breaks if (b.key, b.seq) in mine]
            unsure = [h for h in heads[id(found)] if h.key in broken_chains]
            if missing:
                print(
                    f"BROKEN: the ledger no longer extends checkpoint of {found.time_iso}: "
                    f"first head that does not hold: {missing[0].key} seq {missing[0].seq}"
                )
            elif unsure or result.more_breaks:
                where = f"{unsure[0].key} is broken" if unsure else "chains are broken"
                print(
                    f"not shown: whether it still extends checkpoint of {found.time_iso} ({where})"
                )
            else:
                print(f"the ledger still extends checkpoint of {found.time_iso}")

    return cmd_ledger_verify(args, [h for c in checkpoints for h in heads[id(c)]], said)


def cmd_ledger_verify(
    args: argparse.Namespace,
    checkpoints: Sequence = (),
    said: Callable[[Any], None] = lambda _result: None,
) -> int:
    from .ledger.chain import TABLES, verify

    config = load_config(args.config, resolve_secrets=False)
    since = parse_instant(args.since).timestamp() // 60 if args.since else None
    until = parse_instant(args.until).timestamp() // 60 if args.until else None
    with _read_ledger(config) as ledger:
        result = verify(
            ledger,
            target=args.target,
            since=None if since is None else int(since),
            until=None if until is None else int(until),
            checkpoints=checkpoints,
        )
    if args.target is not None and not any(result.chains.values()):
        raise UserError(f"--target {args.target}: the ledger holds no rows of this target")
    where = display_location(config) + (f", target {args.target}" if args.target else "")
    print(f"{where}: hash chains")
    for table in TABLES:
        print(f"  {table}: {result.chains[table]:,} chains, {result.rows[table]:,} rows checked")
    if result.reclassified:
        print(
            f"  {result.reclassified:,} attempts made prober_fault by a failed network check "
            "(hashed as failure, accepted)"
        )
    print(f"checked {sum(result.rows.values()):,} rows in {result.seconds:.1f} s")
    said(result)
    if result.ok:
        print("ledger verified: every chain intact")
        return 0
    first, *others = result.breaks
    print(f"BROKEN: {first.describe()}")
    for other in others[:9]:
        print(f"  also broken: {other.describe()}")
    more = len(others) - 9 + result.more_breaks
    if more > 0:
        print(f"  and {more:,} more broken chains")
    print(f"ledger broken: {len(result.breaks) + result.more_breaks:,} broken chains")
    return 1


def cmd_keygen(args: argparse.Namespace) -> int:
    from .reports.signing import generate_key_pair

    private = Path(args.keyfile)
    public_path, public = generate_key_pair(private)
    print(f"wrote the private key to {private} (mode 0600: keep it secret, back it up)")
    print(f"wrote the public key to {public_path} (give it to whoever checks your evidence)")
    print(f"fingerprint {public.fingerprint}")
    print(f"in the config:  evidence: {{signing_key: {{file: {private}}}}}")
    return 0


def cmd_ledger_checkpoint(args: argparse.Namespace) -> int:
    from .reports.signing import checkpoint_of, signing_key
    from .runtime.checkpoints import as_document, deliver_all

    config = load_config(args.config, resolve_secrets=False)
    settings = config.config.checkpoints
    if args.out is None and settings is None:
        raise UserError(f"{config.path}: no checkpoints.sinks configured; give --out FILE")
    key = signing_key(config)
    if key is None:
        raise UserError(
            f"{config.path}: set evidence.signing_key to sign checkpoints "
            "(im-prober keygen KEYFILE makes a key)"
        )
    with _read_ledger(config) as ledger:
        text = checkpoint_of(ledger, config, "manual", _now(args), key)
    document = as_document(text)
    heads = len(json.loads(text)["heads"])
    said = f"checkpoint of {document.time.isoformat()}: {heads} chain heads, signed by " + (
        key.public.fingerprint
    )
    if args.out is not None:
        if args.out == "-":
            sys.stdout.write(text)
            return 0
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        try:
            with os.fdopen(os.open(args.out, flags, 0o644), "w", encoding="utf-8") as out:
                out.write(text)
        except OSError as exc:
            raise UserError(f"{args.out}: cannot write: {exc.strerror or exc}") from None
        print(f"{said}; written to {args.out}")
        return 0
    assert settings is not None
    failed = deliver_all(settings, text, config.path.parent)
    total = len(settings.sinks)
    print(f"{said}; delivered to {total - len(failed)} of {total} sinks")
    for name, why in failed.items():
        print(f"  {name}: not delivered: {why}", file=sys.stderr)
    return 1 if failed else 0


def cmd_run(args: argparse.Namespace) -> int:
    from . import logs
    from .daemon import run

    logs.setup(args.log_format, args.log_level)
    web_config = Path(args.web_config) if args.web_config else None
    return run(Path(args.config), args.listen_address, web_config)


def cmd_hash_password(args: argparse.Namespace) -> int:
    import getpass

    from .expose.webconfig import hash_password

    if sys.stdin.isatty():
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            raise UserError("the two passwords differ")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise UserError("empty password")
    print(hash_password(password.encode(), args.cost))
    return 0


def cmd_probe_once(args: argparse.Namespace) -> int:
    import asyncio

    from .runtime.probe_once import all_succeeded, probe_all, render

    config = load_config(args.config)
    targets = [config.config.target(args.target)] if args.target else list(config.config.targets)
    rows = asyncio.run(probe_all(targets))
    sys.stdout.write(render(rows))
    return 0 if all_succeeded(rows) else 1


def _env_secret(name: str | None, flag: str) -> str | None:
    if name is None:
        return None
    value = os.environ.get(name)
    if not value:
        raise UserError(f"{flag}: environment variable {name} is not set")
    return value


def cmd_matrix_setup(args: argparse.Namespace) -> int:
    from .setup.matrix import provision, snippet

    shared = _env_secret(args.shared_secret_env, "--shared-secret-env")
    admin = _env_secret(args.admin_token_env, "--admin-token-env")
    if not shared and not admin:
        raise UserError("give --shared-secret-env or --admin-token-env (and --server-name)")
    password = _env_secret(args.password_env, "--password-env")
    peer_password = _env_secret(args.peer_password_env, "--peer-password-env")
    assert password is not None and peer_password is not None
    done = provision(
        args.homeserver,
        user=args.user,
        password=password,
        peer=args.peer,
        peer_password=peer_password,
        shared_secret=shared,
        admin_token=admin,
        server_name=args.server_name,
    )
    print(f"# accounts {done.user} and {done.peer_user}, rooms ready; the target's section:")
    print(snippet(done, args.password_env, args.peer_password_env), end="")
    return 0


def cmd_xmpp_setup(args: argparse.Namespace) -> int:
    from .adapters.xmpp import XmppSection
    from .config.secrets import Secret
    from .setup.xmpp import provision, snippet

    password = _env_secret(args.password_env, "--password-env")
    peer_password = _env_secret(args.peer_password_env, "--peer-password-env")
    assert password is not None and peer_password is not None
    try:
        section = XmppSection.model_validate(
            {
                "jid": args.jid,
                "password": Secret(password, f"env:{args.password_env}"),
                "peer_jid": args.peer_jid,
                "peer_password": Secret(peer_password, f"env:{args.peer_password_env}"),
                "room": args.room,
                "host": args.host,
                "port": args.port,
                "tls": args.tls,
                "ca_file": args.ca_file,
            }
        )
    except ValueError as exc:
        raise UserError(f"xmpp-setup: {exc}") from None
    done = provision(section, args.password_env, args.peer_password_env)
    for line in done.done:
        print(f"# {line}")
    if not done.complete:
        print("# the server does not allow in-band registration; on the server, run:")
        for line in done.manual:
            print(line)
        print("# then run xmpp-setup again")
        return 1
    print("# the target's section:")
    print(snippet(section, args.password_env, args.peer_password_env), end="")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo.run import main as demo

    return demo(Path(args.dir), args.listen_address)


def cmd_tencent_setup(args: argparse.Namespace) -> int:
    from .adapters.tencent_im import TencentSection
    from .setup.tencent import setup

    config = load_config(args.config)
    target = config.config.target(args.target)
    if not isinstance(target.section, TencentSection):
        raise UserError(f"target {args.target} is of kind {target.kind}, not tencent_im")
    for line in setup(target.name, target.section):
        print(line)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="im-prober",
        description="Availability prober for IM services, measured as the SLA defines it.",
    )
    parser.add_argument("--version", action="version", version=f"im-prober {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def add(
        name: str, func: Callable[[argparse.Namespace], int], help_: str
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_, description=help_)
        sub.set_defaults(func=func)
        return sub

    def with_config(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("-c", "--config", required=True, help="the YAML config file")

    def with_now(sub: argparse.ArgumentParser) -> None:
        # Hidden: compute "as of" another instant (audits, tests).
        sub.add_argument("--now", help=argparse.SUPPRESS)

    sub = add("run", cmd_run, "the daemon: probe every minute, write the ledger, serve metrics")
    with_config(sub)
    sub.add_argument(
        "--web.listen-address",
        dest="listen_address",
        help="host:port for /metrics etc. (overrides web.listen_address)",
    )
    sub.add_argument(
        "--web.config.file",
        dest="web_config",
        help="TLS and basic-auth settings for /metrics etc. (overrides web.config_file)",
    )
    sub.add_argument("--log-format", choices=["human", "json"], default="human")
    sub.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="info")

    sub = add(
        "probe-once",
        cmd_probe_once,
        "one attempt of each probe now, as a table; exit 1 unless all succeed",
    )
    with_config(sub)
    sub.add_argument("--target", help="only this target")

    sub = add(
        "demo", cmd_demo, "run against a throwaway local Synapse (the demo extra); Ctrl-C stops"
    )
    sub.add_argument("--dir", default="data/demo", help="working folder (default data/demo)")
    sub.add_argument(
        "--web.listen-address",
        dest="listen_address",
        help="host:port for /metrics (default 127.0.0.1:9469, or a free port)",
    )

    sub = add(
        "tencent-setup",
        cmd_tencent_setup,
        "import the probe accounts and create the probe group of a tencent_im target",
    )
    with_config(sub)
    sub.add_argument("--target", required=True)

    sub = add(
        "matrix-setup",
        cmd_matrix_setup,
        "create the Matrix probe accounts and rooms (idempotent); print the config",
    )
    sub.add_argument("--homeserver", required=True, help="e.g. https://matrix.example.org")
    sub.add_argument("--user", default="im-prober", help="probe account localpart")
    sub.add_argument("--peer", default="im-prober-peer", help="second account localpart")
    sub.add_argument(
        "--password-env",
        required=True,
        help="environment variable holding the probe account's password",
    )
    sub.add_argument(
        "--peer-password-env",
        required=True,
        help="environment variable holding the second account's password",
    )
    sub.add_argument(
        "--shared-secret-env",
        help="environment variable holding Synapse's registration_shared_secret",
    )
    sub.add_argument("--admin-token-env", help="environment variable holding an admin token")
    sub.add_argument("--server-name", help="the homeserver's server_name (with an admin token)")

    sub = add(
        "xmpp-setup",
        cmd_xmpp_setup,
        "create or check the XMPP probe accounts and MUC room (idempotent); print the config",
    )
    sub.add_argument("--jid", required=True, help="the probe account, probe@example.org")
    sub.add_argument("--peer-jid", required=True, help="the second account, peer@example.org")
    sub.add_argument("--room", required=True, help="MUC room, probes@conference.example.org")
    sub.add_argument("--password-env", required=True, help="variable with the probe's password")
    sub.add_argument("--peer-password-env", required=True, help="variable with the peer's")
    sub.add_argument("--host", help="server host (default: the domain's SRV records)")
    sub.add_argument("--port", type=int, help="server port (with --host)")
    sub.add_argument("--tls", choices=["starttls", "direct"], default="starttls")
    sub.add_argument("--ca-file", help="CA bundle to verify the server's certificate with")

    sub = add(
        "hash-password",
        cmd_hash_password,
        "bcrypt a password for basic_auth_users in the web config (reads it from stdin)",
    )
    sub.add_argument("--cost", type=int, default=12, choices=range(10, 16), metavar="10..15")

    sub = add(
        "keygen",
        cmd_keygen,
        "make an Ed25519 key pair that signs evidence packs and checkpoints (KEYFILE, KEYFILE.pub)",
    )
    sub.add_argument("keyfile", metavar="KEYFILE", help="the private key's file (must not exist)")

    sub = add("check-config", cmd_check_config, "validate a config; print it with secrets redacted")
    with_config(sub)
    sub.add_argument("--web.config.file", dest="web_config", help="also check this web config")
    sub.add_argument(
        "--skip-secrets",
        action="store_true",
        help="check the form of {env}/{file} references without reading them "
        "(validate a config where its secrets are not present)",
    )
    add("config-schema", cmd_config_schema, "print the config's JSON Schema (for editors)")

    sub = add("report", cmd_report, "the SLA report of a service month, from the ledger")
    with_config(sub)
    sub.add_argument("--target", required=True)
    sub.add_argument(
        "--month",
        help="YYYY-MM: the service month that starts in that month "
        "(default: the current one, figures so far)",
    )
    sub.add_argument("--format", choices=sorted(RENDERERS), default="text")
    with_now(sub)

    sub = add("evidence", cmd_evidence, "write the failed minutes and their attempts for a claim")
    # not required here: `evidence verify DIR` needs none of them (cmd_evidence checks them)
    sub.add_argument("-c", "--config", help="the YAML config file")
    sub.add_argument("--target")
    sub.add_argument("--month", help="YYYY-MM, as for report")
    sub.add_argument("--out", help="folder to write the files into (new or empty)")
    verify = sub.add_subparsers(dest="evidence_command", parser_class=_Parser)
    check = verify.add_parser(
        "verify",
        help="check a pack's sums, signature and chained rows; say what they prove",
        description="check a pack's sums, signature and chained rows, with only the pack "
        "(no config, no ledger); exit 0 when everything holds and the pack is signed",
    )
    check.set_defaults(func=cmd_evidence_verify)
    check.add_argument("dir", metavar="DIR", help="the pack's folder")
    check.add_argument("--key", metavar="PUB", help="the public key you trust (PEM)")
    check.add_argument(
        "--tsa-ca",
        metavar="FILE",
        help="the time-stamping authority's CA certificate(s) you trust (PEM): check the "
        "timestamp's signature",
    )
    sub.add_argument(
        "--force",
        action="store_true",
        help="replace the files of an earlier pack in --out (other files are still refused)",
    )
    with_now(sub)

    ledger = add(
        "ledger", lambda _a: 0, "import or export minute rows as CSV; upgrade the ledger file"
    )
    ledger_commands = ledger.add_subparsers(
        dest="ledger_command", required=True, parser_class=_Parser
    )
    sub = ledger_commands.add_parser("export", help="minute rows as CSV on stdout")
    sub.set_defaults(func=cmd_ledger_export)
    with_config(sub)
    sub.add_argument("--target")
    sub.add_argument("--since", help="ISO-8601 instant, inclusive")
    sub.add_argument("--until", help="ISO-8601 instant, exclusive")
    sub = ledger_commands.add_parser("import", help="add minute rows from a CSV (or .csv.gz)")
    sub.set_defaults(func=cmd_ledger_import)
    with_config(sub)
    sub.add_argument("csv", help="file with the header target,probe,minute,state,reason")
    sub = ledger_commands.add_parser(
        "migrate", help="upgrade the ledger file to this version's schema (the daemon also does)"
    )
    sub.set_defaults(func=cmd_ledger_migrate)
    with_config(sub)
    sub = ledger_commands.add_parser(
        "verify",
        help="walk the ledger's hash chains; report the first broken link (exit 1)",
    )
    sub.set_defaults(func=cmd_ledger_verify_checkpoints)
    with_config(sub)
    sub.add_argument(
        "--checkpoint",
        nargs="+",
        metavar="F",
        help="signed checkpoint files: prove the ledger still holds each of their heads",
    )
    sub.add_argument("--key", metavar="PUB", help="the checkpoints must be signed by this key")
    sub.add_argument("--target", help="only this target's chains")
    sub.add_argument("--since", help="ISO-8601 instant, inclusive: the rows of minutes from it")
    sub.add_argument("--until", help="ISO-8601 instant, exclusive")
    sub = ledger_commands.add_parser(
        "checkpoint",
        help="a signed checkpoint of every chain's head now, to the configured sinks or --out",
    )
    sub.set_defaults(func=cmd_ledger_checkpoint)
    with_config(sub)
    sub.add_argument("--out", help="write it to this new file instead (- for stdout)")
    with_now(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        return int(args.func(args))
    except UserError as exc:
        print(f"im-prober: error: {redact(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except ValueError as exc:  # a malformed flag value (e.g. --since) parsed deep inside
        print(f"im-prober: error: {redact(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # a bug: say so in one line, still without a traceback
        print(
            f"im-prober: internal error: {type(exc).__name__}: {redact(str(exc))} "
            "(please report it; run with IM_PROBER_TRACEBACK=1 for details)",
            file=sys.stderr,
        )
        if os.environ.get("IM_PROBER_TRACEBACK"):
            raise
        return EXIT_INTERNAL
