"""What the shared admin routes (outbox, dead letters) have in common: the staff check, decided as a
dependency before the body is validated (anyone else gets 401/403, not 422), and the audited reason."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Header
from pydantic import BaseModel, ConfigDict, StringConstraints

from handshake_shared.auth import Principal, require_roles
from handshake_shared.settings import ServiceSettings

Authorization = Annotated[str | None, Header()]

# written to an audit row: printable, no control characters, long enough to say something
Reason = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=3, max_length=500, pattern=r"^[^\x00-\x1f\x7f]+$")
]


class ReasonRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Reason


def staff_with(settings: ServiceSettings, *roles: str) -> Callable[..., Principal]:
    def dependency(authorization: Authorization = None) -> Principal:
        return require_roles(settings, authorization, *roles)

    return dependency
