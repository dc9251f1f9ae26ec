"""A lifecycle is a declared table of allowed transitions plus one check."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Generic, TypeVar

S = TypeVar("S", bound=StrEnum)


class InvalidTransition(Exception):
    def __init__(self, machine: str, current: str, target: str) -> None:
        super().__init__(f"{machine}: {current} -> {target} is not an allowed transition")
        self.machine = machine
        self.current = current
        self.target = target


class TransitionTable(Generic[S]):
    def __init__(self, name: str, table: Mapping[S, Iterable[S]]) -> None:
        self.name = name
        self._table: dict[S, frozenset[S]] = {k: frozenset(v) for k, v in table.items()}

    def allowed(self, current: S) -> frozenset[S]:
        return self._table.get(current, frozenset())

    def can(self, current: S, target: S) -> bool:
        return target in self.allowed(current)

    def check(self, current: S, target: S) -> None:
        if not self.can(current, target):
            raise InvalidTransition(self.name, current, target)

    def is_terminal(self, state: S) -> bool:
        return not self.allowed(state)

    def states(self) -> set[S]:
        out: set[S] = set(self._table)
        for targets in self._table.values():
            out |= targets
        return out
