"""Structured logging for every Skiff daemon: JSON lines on stderr, one field names the component.

Daemons call :func:`configure` once at start and then ``get_logger()`` wherever they
log. Libraries that use the standard ``logging`` module (pysyncobj, grpc) are routed
through the same JSON renderer, so a daemon's output is uniformly machine-readable.
"""

from __future__ import annotations

import logging
import sys

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}


class _LineWriter:
    """structlog's final logger: writes one rendered JSON line to ``handler``'s stream.

    Under the handler's own lock, so a line from a library logging through the
    standard ``logging`` module (pysyncobj's thread, grpc) never interleaves with ours.
    structlog calls the method named after the level; every one writes the line.
    """

    __slots__ = ("_handler",)

    def __init__(self, handler: logging.StreamHandler) -> None:  # type: ignore[type-arg]
        self._handler = handler

    def msg(self, line: str) -> None:
        handler = self._handler
        handler.acquire()
        try:
            handler.stream.write(line + "\n")
            handler.stream.flush()
        finally:
            handler.release()

    debug = info = warning = warn = error = critical = exception = fatal = log = msg


def configure(component: str, level: str = "info", **bound: object) -> structlog.stdlib.BoundLogger:
    """Send structlog and stdlib logging to stderr as JSON, bound to ``component``.

    Returns the daemon's root logger; ``bound`` adds fields to every line (a node or
    member name, say).

    Skiff's own lines take structlog's native path (a level-filtering logger that
    renders and writes; about a quarter of the cost of going through ``logging``, which
    counts on hot paths such as the apiserver's access log); libraries' lines go
    through ``logging`` and the same renderer.
    """
    numeric = _LEVELS.get(level.lower())
    if numeric is None:
        raise ValueError(f"unknown log level {level!r}: use one of {', '.join(_LEVELS)}")
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.JSONRenderer()],
    ))
    writer = _LineWriter(handler)
    structlog.configure(
        processors=[*shared, structlog.processors.JSONRenderer()],
        logger_factory=lambda *_: writer,
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        cache_logger_on_first_use=True,
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(component=component, **bound)
    return structlog.get_logger(component)  # type: ignore[no-any-return]


def get_logger(name: str | None = None) -> structlog.stdlib.BoundLogger:
    """A logger carrying the daemon's bound fields."""
    return structlog.get_logger(name)
