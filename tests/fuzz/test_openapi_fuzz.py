"""Property-based fuzz of the whole REST API from its own OpenAPI schema (schemathesis).

Every operation of `/api/v1/schema` gets `MAX_EXAMPLES` generated requests (valid and invalid
bodies, parameters and headers), sent in process to the WSGI application on the test database,
authenticated as an active device whose account has a conversation, so that a good share of the
requests reach the services rather than stopping at a 404. Checks on every response: no 5xx, the
status code is one the schema documents, the content type and the body match the schema.

Examples per operation: `E2EE_FUZZ_EXAMPLES` (default 300, what CI runs: about 4,500 requests in
about 2 minutes on 2 cores, SQLite or PostgreSQL). Derandomized, so a run is reproducible;
`E2EE_FUZZ_RANDOM=1` draws new cases on each run, and a larger count explores more.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import positive_data_acceptance

from devices.models import Device
from tests.builders import Dev, make_conversation, make_dev

MAX_EXAMPLES = int(os.environ.get("E2EE_FUZZ_EXAMPLES", "300"))

pytestmark = [pytest.mark.slow, pytest.mark.django_db]


@dataclass
class World:
    """What the generated requests may point at, besides random ids."""

    alice: Dev
    bob: Dev
    conversation_id: uuid.UUID
    pending_device_ids: list[uuid.UUID]


@pytest.fixture(autouse=True)
def _keep_the_test_connection() -> Iterator[None]:
    """The WSGI handler closes the database connection after each request, which would end the
    test's transaction; Django's own test client unhooks the same signal handlers."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@pytest.fixture
def world(settings: Any) -> World:
    # The limits have their own tests; here they would turn most requests into 429s.
    settings.E2EE_RATE_LIMIT_ENABLED = False
    # Push target hosts are not resolved (no DNS from a test): the URL's form is what is checked.
    settings.E2EE_NOTIFY_ALLOW_PRIVATE_URLS = True
    alice = make_dev()
    bob = make_dev()
    conversation = make_conversation(alice, bob.user)
    pending = [make_dev(user=alice.user, status=Device.Status.PENDING).device.id for _ in range(3)]
    return World(alice=alice, bob=bob, conversation_id=conversation.pk, pending_device_ids=pending)


# Schemathesis' defaults, plus 413: a value above a limit the schema states (a blob's `length`, a
# ciphertext's size) is refused with 413 and its own code (protocol.md 3.1), as a body too large is.
CHECKS_CONFIG = {
    "negative_data_rejection": {
        "expected-statuses": ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429"]
    },
}

# Refusals of schema-valid requests that depend on state or on who asks, which no schema can say
# (each documented in protocol.md 3.1 and in the operation's description): anything else a
# schema-valid request gets refused with is a failure (ST202).
STATE_DEPENDENT_400 = {
    "epoch_required",  # removing another member needs the next epoch; leaving does not
    "sender_device_mismatch",  # the envelope names a device other than the authenticated one
    "direct_needs_one_peer",  # a direct conversation naming only its creator
    "password_invalid",  # a common password, or one too like the username
}


def _load_schema() -> Any:
    # At import: pytest-django has set Django up already, and serving the schema needs no database.
    # (Not `schemathesis.pytest.from_fixture`: its lazy loader does not run under pytest 9.)
    from config.wsgi import application

    config = schemathesis.Config.from_dict({"checks": CHECKS_CONFIG})
    return schemathesis.openapi.from_wsgi("/api/v1/schema", application, config=config)


schema = _load_schema()


@schema.parametrize()
@schema.given(data=st.data())
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=os.environ.get("E2EE_FUZZ_RANDOM") != "1",  # 1: explore new cases on each run
    database=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: a failure is reported as found
    suppress_health_check=list(HealthCheck),
)
def test_api_answers_every_generated_request_within_its_schema(case: Any, data: Any, world: World) -> None:
    # What a negative case made invalid must reach the server as generated: replacing it with
    # something valid would make the server's acceptance look like a failure to reject.
    negative = {
        location
        for location, component in (case.meta.components if case.meta else {}).items()
        if component.mode.is_negative
    }
    params = case.path_parameters or {}
    # Half the time, point at things that exist, so the deeper checks run too.
    if ParameterLocation.PATH not in negative:
        if "conversation_id" in params and data.draw(st.booleans(), label="known conversation"):
            params["conversation_id"] = str(world.conversation_id)
        if "device_id" in params and data.draw(st.booleans(), label="known device"):
            params["device_id"] = str(data.draw(st.sampled_from(world.pending_device_ids), label="device"))
        if "username" in params and data.draw(st.booleans(), label="known user"):
            params["username"] = world.bob.user.username
    body = case.body
    if case.path.endswith("/messages") and case.method == "POST" and isinstance(body, dict):
        if ParameterLocation.BODY not in negative and data.draw(st.booleans(), label="plausible envelope"):
            body.update(version=1, epoch=1, sender_device_id=str(world.alice.device.id))
    headers: dict[str, str] | None = {"Authorization": f"Bearer {world.alice.token}"}
    if data.draw(st.integers(0, 9), label="token choice") == 0:
        headers = {"Authorization": f"Bearer {world.bob.token}"}
    if ParameterLocation.HEADER in negative:
        headers = None  # the generated (missing or malformed) Authorization goes as is
    # Every check schemathesis has: no 5xx, statuses, content types, bodies and headers as
    # documented, schema-valid requests accepted (ST202) and schema-invalid ones refused (ST201),
    # and the rest.
    response = case.call(headers=headers)
    excluded = []
    if response.status_code == 400 and _code(response) in STATE_DEPENDENT_400:
        excluded = [positive_data_acceptance]
    case.validate_response(response, headers=headers, excluded_checks=excluded)


def _code(response: Any) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get("code") if isinstance(body, dict) else None
