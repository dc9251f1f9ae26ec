"""JSON logs (structlog) that carry the order id, event id and W3C trace id of whatever is being handled."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    from handshake_shared.envelope import CloudEvent


def configure_logging(service: str, level: str = "INFO") -> None:
    logging.basicConfig(format="%(message)s", stream=sys.stdout, level=level.upper(), force=True)
    for noisy in (
        "aiokafka",
        "kafka",
        "uvicorn.access",
        "sqlalchemy.engine",
        "faststream",
        "httpx",
        "httpcore",
        "stripe",
    ):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # group membership changes (joins, assignments) are what an operator needs after a broker incident
    logging.getLogger("aiokafka.consumer.group_coordinator").setLevel(logging.INFO)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(service=service)


def trace_id_of(traceparent: str | None) -> str | None:
    # traceparent = version-traceid-parentid-flags
    if traceparent and traceparent.count("-") == 3:
        return traceparent.split("-")[1]
    return None


@contextmanager
def event_context(event: CloudEvent) -> Iterator[None]:
    with structlog.contextvars.bound_contextvars(
        order_id=event.subject, event_id=str(event.id), event_type=event.type, trace_id=trace_id_of(event.traceparent)
    ):
        yield
