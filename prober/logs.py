"""One line per event, human or JSON, with every known secret scrubbed from the line, and a
line that repeats (same event, same cause) let through a few times a minute, then counted."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

from .config.secrets import redact

LOGGER_NAME = "im_prober"
log = logging.getLogger(LOGGER_NAME)

# A line may repeat this many times per interval before its repeats are only counted.
REPEATS_PER_INTERVAL = 5
REPEAT_INTERVAL = 60.0
# Distinct lines remembered; the least recently seen is forgotten first.
REPEAT_KEYS = 1024


def event(level: int, message: str, **fields: Any) -> None:
    """Log an event with structured fields (`target=`, `minute=` …)."""
    log.log(level, message, extra={"fields": fields})


def _timestamp(record: logging.LogRecord) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + (
        f".{int(record.msecs):03d}Z"
    )


def _suppressed_note(record: logging.LogRecord) -> str:
    count = getattr(record, "suppressed", 0)
    return f" ({count} similar lines suppressed)" if count else ""


class HumanFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", {})
        extra = " ".join(f"{k}={v}" for k, v in fields.items())
        line = f"{_timestamp(record)} {record.levelname.lower():7} {record.getMessage()}"
        line += _suppressed_note(record)
        if extra:
            line += " " + extra
        if record.exc_info:
            line += " | " + self.formatException(record.exc_info).replace("\n", " | ")
        return redact(line)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "msg": record.getMessage(),
        }
        if getattr(record, "suppressed", 0):
            payload["suppressed"] = record.suppressed
        for key, value in getattr(record, "fields", {}).items():
            payload[key] = value if isinstance(value, int | float | bool | None) else str(value)
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return redact(json.dumps(payload, ensure_ascii=False))


def repeat_key(record: logging.LogRecord) -> Hashable:
    """What makes two lines "the same": the logger, the level, the message before its
    arguments are filled in (a peer address or a count does not make a new line), the
    event's fields and the exception's type."""
    fields = getattr(record, "fields", None) or {}
    cause = record.exc_info[0].__name__ if record.exc_info and record.exc_info[0] else ""
    return (
        record.name,
        record.levelno,
        str(record.msg),
        tuple((k, str(v)) for k, v in fields.items()),
        cause,
    )


class _Window:
    __slots__ = ("last", "passed", "started", "suppressed")

    def __init__(self, now: float) -> None:
        self.started = now
        self.passed = 0
        self.suppressed = 0
        self.last: logging.LogRecord | None = None


class RepeatLimiter(logging.Filter):
    """Lets `burst` lines with the same `repeat_key` through per `interval`; the rest of that
    interval's are only counted, and the first one let through after it says how many were
    suppressed (`record.suppressed`, which the formatters print). `flush()` reports counts
    no later line has carried yet, e.g. at shutdown.

    A flood of one error (the accept loop out of descriptors, a client resending a bad
    request) then costs a few lines a minute instead of the disk."""

    def __init__(
        self,
        burst: int = REPEATS_PER_INTERVAL,
        interval: float = REPEAT_INTERVAL,
        *,
        clock: Callable[[], float] = time.monotonic,
        keys: int = REPEAT_KEYS,
    ) -> None:
        super().__init__()
        self.burst = burst
        self.interval = interval
        self._clock = clock
        self._keys = keys
        self._windows: OrderedDict[Hashable, _Window] = OrderedDict()
        # Records arrive from worker threads too (asyncio.to_thread).
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        key = repeat_key(record)
        now = self._clock()
        with self._lock:
            window = self._windows.get(key)
            if window is None or now - window.started >= self.interval:
                carried = window.suppressed if window is not None else 0
                window = _Window(now)
                self._windows[key] = window
                if carried:
                    record.suppressed = carried
            self._windows.move_to_end(key)
            while len(self._windows) > self._keys:
                self._windows.popitem(last=False)
            if window.passed < self.burst:
                window.passed += 1
                return True
            window.suppressed += 1
            window.last = self._bare(record)
            return False

    @staticmethod
    def _bare(record: logging.LogRecord) -> logging.LogRecord:
        # Kept for `flush()`: the line without its traceback (which would also keep every
        # frame of it alive).
        bare = logging.makeLogRecord(record.__dict__)
        bare.exc_info = bare.exc_text = None
        return bare

    def flush(self) -> list[logging.LogRecord]:
        """The last suppressed line of every key whose count no line has reported yet, each
        carrying its count; the counts start again from zero."""
        pending = []
        with self._lock:
            for window in self._windows.values():
                if window.suppressed and window.last is not None:
                    window.last.suppressed = window.suppressed
                    pending.append(window.last)
                    window.suppressed = 0
                    window.last = None
        return pending


_limiter: RepeatLimiter | None = None


def flush_suppressed() -> None:
    """Write the counts of lines suppressed since they last repeated (at shutdown)."""
    if _limiter is None:
        return
    for record in _limiter.flush():
        for handler in logging.getLogger().handlers:
            if record.levelno >= handler.level:
                # emit, not handle: the limiter itself would hold the line back again.
                handler.acquire()
                try:
                    handler.emit(record)
                finally:
                    handler.release()


def loop_exception_handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The event loop's unhandled errors as one line each, through the same limiter: the
    message and the exception, a traceback only for exceptions that are not OS errors (an
    OSError's traceback says nothing its message does not, and EMFILE repeats by the
    thousand)."""
    message = str(context.get("message") or "unhandled error in the event loop")
    exc = context.get("exception")
    fields: dict[str, Any] = {}
    exc_info = None
    if isinstance(exc, BaseException):
        fields["error"] = f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, OSError):
            exc_info = (type(exc), exc, exc.__traceback__)
    logging.getLogger("asyncio").error(message, exc_info=exc_info, extra={"fields": fields})


def setup(fmt: str = "human", level: str = "info") -> None:
    global _limiter
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else HumanFormatter())
    # On the handler, not a logger: it then sees every line, whichever logger made it.
    _limiter = RepeatLimiter()
    handler.addFilter(_limiter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # APScheduler narrates every job run at INFO: keep its warnings only.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
