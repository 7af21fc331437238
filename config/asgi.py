"""ASGI entry point: HTTP now, WebSocket routing later.

`get_asgi_application()` must run before anything imports models (consumers will), because it
sets Django up; keep it first.
"""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter  # noqa: E402  (after Django setup, see above)

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        # "websocket": the realtime issue adds its authenticated URLRouter of consumers here
        # (devices join the `device.<uuid hex>` group that common.realtime publishes to).
    }
)
