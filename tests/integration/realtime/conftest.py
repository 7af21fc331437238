"""Realtime fixtures: SDK-provisioned devices (harness.provision) on live daphne processes."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import pytest

from harness.provision import Population, population_create


@pytest.fixture
def populate() -> Iterator[Callable[..., Population]]:
    """Register users (devices vouched by the first), create conversations, open every device's keys."""
    made: list[Population] = []

    def _populate(
        server_url: str, *, usernames: Sequence[str], devices_per_user: int, conversations: Sequence[Sequence[str]]
    ) -> Population:
        population = population_create(
            server_url, usernames=usernames, devices_per_user=devices_per_user, conversations=conversations
        )
        made.append(population)
        return population

    yield _populate
    for population in made:
        population.close()
