"""A minimal signal: receivers called with ``signal=`` and ``sender=``; errors logged."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("tidings.signals")


class Signal:
    def __init__(self, name: str, providing_args: set[str] | None = None) -> None:
        self.name = name
        self.providing_args = providing_args or set()
        self.receivers: list[Callable[..., Any]] = []

    def connect(self, receiver: Callable[..., Any]) -> Callable[..., Any]:
        if receiver not in self.receivers:
            self.receivers.append(receiver)
        return receiver

    def disconnect(self, receiver: Callable[..., Any]) -> None:
        if receiver in self.receivers:
            self.receivers.remove(receiver)

    def send(self, sender: Any, **named: Any) -> list[tuple[Callable[..., Any], Any]]:
        responses = []
        for receiver in list(self.receivers):
            try:
                response = receiver(signal=self, sender=sender, **named)
            except Exception as exc:
                logger.exception("Signal receiver %r of %s raised", receiver, self.name)
                response = exc
            responses.append((receiver, response))
        return responses

    def __repr__(self) -> str:
        return f"<Signal: {self.name}>"
