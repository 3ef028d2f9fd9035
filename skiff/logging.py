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


def configure(component: str, level: str = "info", **bound: object) -> structlog.stdlib.BoundLogger:
    """Send structlog and stdlib logging to stderr as JSON, bound to ``component``.

    Returns the daemon's root logger; ``bound`` adds fields to every line (a node or
    member name, say).
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
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.JSONRenderer()],
    ))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(component=component, **bound)
    return structlog.get_logger(component)


def get_logger(name: str | None = None) -> structlog.stdlib.BoundLogger:
    """A logger carrying the daemon's bound fields."""
    return structlog.get_logger(name)
