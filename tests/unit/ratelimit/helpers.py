"""Test helpers shared by the limiter tests."""

from __future__ import annotations


class FakeClock:
    """An injected limiter clock (epoch seconds); ``sleep`` advances it instead of waiting."""

    def __init__(self, start: float) -> None:
        self.t = start
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.t += seconds

    def advance(self, seconds: float) -> None:
        self.t += seconds
