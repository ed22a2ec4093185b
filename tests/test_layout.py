"""The house stays the way docs/architecture.md draws it: which part may import which (an
AST walk of every import in prober/, function-level ones too), one list of kinds, and
runtime dependencies that the package really imports."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from prober.adapters import REGISTRY
from prober.config.models import KINDS

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "prober"

# part → the parts it must never import (a part is a subpackage or top-level module)
FORBIDDEN: dict[str, set[str]] = {
    "config": {"runtime", "ledger", "expose", "reports", "setup", "demo", "daemon", "cli"},
    "adapters": {"runtime", "ledger", "expose", "reports", "setup", "demo", "daemon", "cli"},
    "runtime": {"expose", "reports", "setup", "demo", "daemon", "cli"},
    "ledger": {"runtime", "expose", "reports", "adapters", "setup", "demo", "daemon", "cli"},
    "expose": {"runtime", "reports", "adapters", "setup", "demo", "daemon", "cli"},
    "reports": {"runtime", "expose", "adapters", "setup", "demo", "daemon", "cli"},
    # the status page: figures from the view and the reports, never the runtime or adapters
    "status": {"runtime", "expose", "adapters", "setup", "demo", "daemon", "cli"},
    "setup": {"runtime", "expose", "reports", "ledger", "demo", "daemon", "cli"},
    "demo": {"cli"},
    "logs": {"runtime", "ledger", "expose", "reports", "adapters", "setup", "demo", "daemon"},
    "daemon": {"cli", "demo", "setup"},
}
# The status page reads the view, the ledger and the reports; nothing below it imports it.
for _part in ("config", "adapters", "runtime", "ledger", "expose", "reports", "setup", "logs"):
    FORBIDDEN[_part].add("status")
# finer rules inside a part
MODULE_RULES: dict[str, set[str]] = {
    # the minute book is pure: records in, records out, no storage
    "prober.runtime.book": {"prober.ledger", "prober.adapters", "prober.config"},
    "prober.runtime.plan": {"prober.ledger", "prober.adapters", "prober.config"},
    # adapters use the config's value types, never its models (the models import adapters)
    "prober.adapters": {"prober.config.models", "prober.config.yamlsource"},
}
# the leaves: the only parts they may import at all
ONLY: dict[str, set[str]] = {"sla": set(), "records": {"sla"}, "stats": set(), "errors": set()}
PARTS = {
    "sla", "records", "stats", "errors", "logs", "config", "adapters", "runtime", "ledger",
    "expose", "reports", "status", "setup", "demo", "daemon", "cli", "__init__", "__main__",
}  # fmt: skip


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in the file, `from x import y` giving x.y too
    (y may be a module)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names]
    return [(line, t) for line, t in found if t == "prober" or t.startswith("prober.")]


def part_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def existing(module: str) -> bool:
    relative = Path(*module.split("."))
    return (ROOT / relative).with_suffix(".py").exists() or (ROOT / relative).is_dir()


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_belongs_to_a_known_part() -> None:
    assert {part_of(module_name(p)) for p in SOURCES} <= PARTS


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_imports_what_its_part_may_not(path: Path) -> None:
    here = module_name(path)
    part = part_of(here)
    forbidden = FORBIDDEN.get(part, set())
    broken = []
    for line, target in imports_of(path):
        if not existing(target):
            continue  # `from x import name`: the name is not a module
        there = part_of(target)
        if there == part or there == "__init__":
            continue
        if there in forbidden or (part in ONLY and there not in ONLY[part]):
            broken.append(f"{path.name}:{line} imports {target}")
        for prefix, banned in MODULE_RULES.items():
            inside = here == prefix or here.startswith(prefix + ".")
            if inside and any(target == b or target.startswith(b + ".") for b in banned):
                broken.append(f"{path.name}:{line} imports {target}")
    assert broken == [], f"{part} may not import these (docs/architecture.md)"


def test_the_pure_core_imports_nothing_but_itself() -> None:
    for path in (PACKAGE / "sla").rglob("*.py"):
        outside = [t for _, t in imports_of(path) if not t.startswith("prober.sla")]
        assert outside == [], path


def test_the_kinds_are_the_registrys_and_nothing_else() -> None:
    assert set(KINDS) == set(REGISTRY)
    assert all(REGISTRY[kind].kind == kind for kind in REGISTRY)
    source = (PACKAGE / "config" / "models.py").read_text()
    for kind in KINDS:  # no second spelling of the kinds in the config
        assert f'"{kind}"' not in source, kind


def test_an_unknown_kind_is_refused_at_load(tmp_path: Path) -> None:
    from prober.config.models import parse_config
    from prober.errors import UserError

    text = (
        "targets:\n  - name: t\n    kind: irc\n    probes: {login: {}}\n"
        "    sla: {service_month_anchor: 2026-01-01}\n"
    )
    with pytest.raises(UserError) as caught:
        parse_config(text, tmp_path / "c.yaml")
    message = str(caught.value)
    assert "c.yaml:3: targets[0].kind:" in message
    assert "'xmpp'" in message  # names the kinds there are


# distribution → the module it provides, where they differ
IMPORT_NAME = {"pyyaml": "yaml", "prometheus-client": "prometheus_client"}
# imported by the standard library on the package's behalf, never by name
NOT_IMPORTED = {"tzdata": "zoneinfo reads its database when the system has none"}


def test_every_runtime_dependency_is_imported_by_the_package() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    imported = {
        target.split(".")[0]
        for path in SOURCES
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Import | ast.ImportFrom) and not getattr(node, "level", 0)
        for target in (
            [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
        )
    }
    unused = []
    for requirement in project["dependencies"]:
        name = re.split(r"[<>=!~\[ ;]", requirement, maxsplit=1)[0].lower()
        if name in NOT_IMPORTED:
            continue
        module = IMPORT_NAME.get(name, name.replace("-", "_"))
        if module.lower() not in {m.lower() for m in imported}:
            unused.append(name)
    assert unused == []


def test_the_version_is_written_once() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "version" not in project and "version" in project["dynamic"]


def test_the_daemon_imports_slixmpp_only_for_an_xmpp_target() -> None:
    # ~6 MB of memory a daemon without xmpp targets does not hold (bench/README.md "Scale");
    # the daemon preloads the kinds of its config in a worker thread before building them
    code = (
        "import sys\n"
        "import prober.cli, prober.daemon\n"
        "from prober.adapters import preload\n"
        "assert 'slixmpp' not in sys.modules, 'imported at start'\n"
        "preload({'http', 'matrix', 'tencent_im', 'external'})\n"
        "assert 'slixmpp' not in sys.modules, 'imported for another kind'\n"
        "preload({'xmpp'})\n"
        "assert 'slixmpp' in sys.modules, 'not imported for xmpp'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
