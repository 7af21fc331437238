"""The worker's broker consumer outlives the kombu race that ended a worker on a Redis restart
(issue 13, F9). The race itself (a broker gone for the first pass of closing the lost
connection and back for the second) takes dozens of Redis restarts under load to hit, see
tests/integration/test_notifications_worker_faults.py; here the lost connection raises what kombu
raised then, so the outcome is checked every time.
"""

from __future__ import annotations

from typing import Any

import pytest
from celery.utils.imports import symbol_by_name

from config.celery import app as celery_app


class LostRedisConnection:
    """What kombu's connection does when its Redis channel closes on a released transport."""

    connection_errors: tuple[type[Exception], ...] = (ConnectionError,)
    channel_errors: tuple[type[Exception], ...] = ()

    def __init__(self) -> None:
        self.closed = False

    def collect(self, socket_timeout: float | None = None) -> None:
        raise ConnectionError("Connection closed by server.")  # the first pass: the broker is down

    def close(self) -> None:
        self.closed = True
        raise AttributeError("'NoneType' object has no attribute 'hostname'")  # kombu's _connparams


def _consumer(connection: Any) -> Any:
    consumer_class = symbol_by_name(celery_app.conf.worker_consumer)
    consumer = consumer_class.__new__(consumer_class)  # its start-up needs a whole worker
    consumer.app = celery_app
    consumer.connection = connection
    return consumer


@pytest.mark.filterwarnings("ignore::celery.exceptions.CPendingDeprecationWarning")
def test_worker_carries_on_when_closing_a_lost_broker_connection_fails_inside_kombu() -> None:
    connection = LostRedisConnection()
    consumer = _consumer(connection)

    consumer.on_connection_error_after_connected(ConnectionError("Connection closed by server."))

    # The worker goes on to reconnect (Celery's blueprint restart) instead of exiting.
    assert connection.closed and consumer.connection is None


def test_other_attribute_errors_still_surface() -> None:
    consumer = _consumer(None)  # no connection was lost: an AttributeError here is a bug

    class Broken:
        def __getattr__(self, name: str) -> Any:
            raise AttributeError(name)

    consumer.app = Broken()
    with pytest.raises(AttributeError):
        consumer.on_connection_error_after_connected(ConnectionError("lost"))
