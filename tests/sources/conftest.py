"""Fixtures: the local venue server and recorded sleeps (no test really waits 5–60 s)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.sources.servers import VenueServer


@pytest.fixture()
def venues() -> Iterator[VenueServer]:
    server = VenueServer().start()
    yield server
    server.stop()


class Sleeps(list):
    """A fake ``sleep`` that records the waits asked for."""

    def __call__(self, secs: float) -> None:
        self.append(secs)


@pytest.fixture()
def sleeps() -> Sleeps:
    return Sleeps()
