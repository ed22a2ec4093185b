"""Reading checkpoints back from the file and git sinks the daemon wrote them to (a webhook's
are the receiver's): an evidence pack carries the one that covers its month."""

from __future__ import annotations

import os
from collections.abc import Iterator

from ..config.checkpoints import GitSink, WebhookSink, sink_path
from ..config.models import ConfigFile

# Bounds on what is read back: a sink folder is the customer's, and may hold anything.
MAX_STORED_FILES = 20_000
MAX_STORED_BYTES = 8 << 20


def stored_checkpoints(config: ConfigFile) -> Iterator[tuple[str, str]]:
    """(where, text) of every checkpoint the file and git sinks hold (a webhook's are the
    receiver's), bounded in count and size; unreadable entries are skipped."""
    settings = config.config.checkpoints
    if settings is None:
        return
    base_dir = config.path.parent
    seen = 0
    for sink in settings.sinks:
        if isinstance(sink, WebhookSink):
            continue
        if isinstance(sink, GitSink):
            folder, mode = sink_path(sink.repo, base_dir) / sink.folder, "folder"
        else:
            folder, mode = sink_path(sink.path, base_dir), sink.mode
        if mode == "append":
            try:
                with open(folder, encoding="utf-8") as lines:
                    for number, line in enumerate(lines, 1):
                        seen += 1
                        if seen > MAX_STORED_FILES:
                            return
                        if line.strip() and len(line) <= MAX_STORED_BYTES:
                            yield f"{folder}:{number}", line
            except (OSError, UnicodeDecodeError):
                continue
            continue
        try:
            names = sorted(n for n in os.listdir(folder) if n.startswith("checkpoint-"))
        except OSError:
            continue
        for name in names:
            seen += 1
            if seen > MAX_STORED_FILES:
                return
            path = folder / name
            try:
                if path.is_file() and path.stat().st_size <= MAX_STORED_BYTES:
                    yield str(path), path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue
