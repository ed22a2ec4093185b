"""Loading the daemon's config in a short-lived child process.

Parsing and validating a config costs several times what the result keeps: at 10,000
targets the YAML nodes, line map and validation leave a peak of ~220 MB for ~50 MB of live
models, and the allocator keeps most of that peak for the life of the process (freed objects
sit between live ones). In a child the peak goes away with the child; the daemon receives
the validated result as one pickle and keeps only what it needs. A hostile config's cost
(an alias bomb, a huge file) stays in the child too, and a child that dies or runs past its
time is one clear error.

`python -m prober.config.isolated PATH` is the child: it writes ("ok", ConfigFile) or
("error", message) to its standard output.
"""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

from ..errors import UserError
from .models import ConfigFile, load_config
from .secrets import Secret

# Far beyond any real config (10,000 targets load in ~10 s of CPU and pickle to 7 MB); a
# bound all the same.
CHILD_SECONDS = 300.0


class _Pickler(pickle.Pickler):
    """Secrets refuse ordinary pickling; this one pipe between the daemon and its own child
    carries them, rebuilt through Secret's constructor so the daemon redacts them too."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, Secret):
            return (Secret, (obj._value, obj.source))  # the one sanctioned copy
        return NotImplemented


def _dump(result: Any) -> bytes:
    buffer = io.BytesIO()
    _Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(result)
    return buffer.getvalue()


def _share_equal_parts(loaded: ConfigFile) -> None:
    """Makes targets whose probes, SLA, maintenance or kind section are equal hold one object
    for it, so the pickle carries each once and the daemon keeps each once: at 10,000 targets
    with one contract and one probe plan that is ~5 KB a target less (bench/README.md,
    "Scale"). The models are frozen; the dicts and lists inside them are not, and nothing
    writes to a loaded config's (adapters copy what they change), which sharing relies on."""
    seen: dict[tuple[str, bytes], Any] = {}
    for target in loaded.config.targets:
        parts = vars(target)
        for field in ("probes", "sla", "maintenance", target.kind):
            value = parts[field]
            parts[field] = seen.setdefault((field, _dump(value)), value)


def load_config_isolated(path: str | Path) -> ConfigFile:
    """`load_config(path)` (secrets resolved), done in a child process."""
    path = Path(path)
    try:
        done = subprocess.run(
            [sys.executable, "-m", __name__, os.fspath(path)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=CHILD_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise UserError(f"{path}: loading the config took over {CHILD_SECONDS:.0f} s") from None
    except OSError as exc:
        # No process to spare (descriptors, memory): the config is not at fault; say so.
        raise UserError(f"{path}: cannot start the config loader: {exc}") from None
    if done.returncode != 0 or not done.stdout:
        # Only the exit status: the child's output may quote the config.
        raise UserError(
            f"{path}: the config loader failed (exit status {done.returncode}); "
            "`im-prober check-config` on the same file says more"
        )
    status, value = pickle.loads(done.stdout)  # our own child's output, never a file
    if status == "error":
        raise UserError(value)
    assert isinstance(value, ConfigFile)
    return value


def _child(argv: list[str]) -> int:
    try:
        loaded = load_config(argv[0])
        _share_equal_parts(loaded)
        result: tuple[str, Any] = ("ok", loaded)
    except UserError as exc:
        result = ("error", str(exc))
    except MemoryError:
        result = ("error", f"{argv[0]}: the config needs more memory than there is to load it")
    sys.stdout.buffer.write(_dump(result))
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(_child(sys.argv[1:]))
