import sys
from collections.abc import Iterator

import pytest
from django.test import override_settings

from common.gil import switch_interval_apply


@pytest.fixture(autouse=True)
def _restore_interval() -> Iterator[None]:
    before = sys.getswitchinterval()
    yield
    sys.setswitchinterval(before)


def test_the_setting_sets_the_interpreters_switch_interval() -> None:
    with override_settings(E2EE_GIL_SWITCH_INTERVAL_MS=0.5):
        assert switch_interval_apply() == pytest.approx(0.0005)
    assert sys.getswitchinterval() == pytest.approx(0.0005)


def test_zero_keeps_the_interpreters_interval() -> None:
    sys.setswitchinterval(0.005)
    with override_settings(E2EE_GIL_SWITCH_INTERVAL_MS=0):
        assert switch_interval_apply() == pytest.approx(0.005)


def test_the_asgi_application_applies_it_at_import() -> None:
    import importlib

    sys.setswitchinterval(0.005)
    previous = sys.modules.pop("config.asgi", None)
    try:
        importlib.import_module("config.asgi")
        assert sys.getswitchinterval() == pytest.approx(0.0005)
    finally:
        if previous is not None:
            sys.modules["config.asgi"] = previous
