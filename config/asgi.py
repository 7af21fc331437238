"""ASGI entry point: HTTP, and the realtime WebSocket gateway at /ws/v1/.

`get_asgi_application()` must run before anything imports models (consumers will), because it
sets Django up; keep it first.
"""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

django_asgi_app = get_asgi_application()

from common.gil import switch_interval_apply  # noqa: E402  (after Django setup, see above)

switch_interval_apply()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402  (after Django setup, see above)
from django.urls import path  # noqa: E402

from config.daphne_protocol import daphne_protocol_install  # noqa: E402
from messaging.consumers import RealtimeConsumer  # noqa: E402

# Frames over the size limit refused as they arrive, with the protocol's close code (6.2).
daphne_protocol_install()

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        # No session or origin middleware: the socket authenticates with the device token in its
        # first frame (protocol.md 6.1), never with a cookie, so a foreign page gains nothing.
        "websocket": URLRouter([path("ws/v1/", RealtimeConsumer.as_asgi())]),
    }
)
