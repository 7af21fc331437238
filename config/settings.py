"""Django settings, every deployment-specific value read from the environment.

| variable | default |
| --- | --- |
| DATABASE_URL | sqlite:///<BASE_DIR>/var/db.sqlite3 |
| REDIS_URL | unset: in-memory channel layer, local-memory cache, eager Celery |
| DJANGO_SECRET_KEY | an insecure development key |
| DJANGO_DEBUG | "0" |
| DJANGO_ALLOWED_HOSTS | localhost,127.0.0.1,[::1],testserver |
| E2EE_MAX_CIPHERTEXT_BYTES | 65536 |
| E2EE_MAX_GROUP_MEMBERS | 256 |
| E2EE_LINK_CODE_TTL_S | 600 (link codes expire after 10 minutes) |
| E2EE_LOG_LEVEL | INFO |
| E2EE_RATE_LIMITS, E2EE_RATE_LIMIT_ENABLED, E2EE_TRUSTED_PROXY_HOPS | see docs/operations.md |
| E2EE_METRICS_TOKEN, E2EE_METRICS_ALLOWED_NETWORKS | see docs/operations.md |
| E2EE_CELERY_BROKER_URL | REDIS_URL |
| E2EE_NOTIFY_*, E2EE_VAPID_* | see the push notification section below and README |
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"
# The default SQLite database and the SQLite test database live here; create it up front so a
# fresh clone runs without a setup step.
VAR_DIR.mkdir(exist_ok=True)


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, str(default)))


def _env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "django-insecure-dev-only-secret-key-change-me")
DEBUG = os.environ.get("DJANGO_DEBUG", "0") == "1"
ALLOWED_HOSTS = _env_list("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver")

INSTALLED_APPS = [
    # daphne first: its runserver replaces Django's, so `manage.py runserver` serves ASGI.
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI's files, served locally (no CDN)
    "accounts",
    "devices",
    "conversations",
    "messaging",
    "media",
    "notifications",
]

MIDDLEWARE = [
    # Outermost, so the logged duration and status cover everything below it.
    "common.logs.RequestLogMiddleware",
    "common.metrics.RequestMetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Static files (the admin's, Swagger UI's) straight from the apps: no collectstatic step.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
# The API's paths have no trailing slash (docs/protocol.md section 4); never redirect.
APPEND_SLASH = False

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

# --- Database ---------------------------------------------------------------------------------

_default_database_url = f"sqlite:///{VAR_DIR / 'db.sqlite3'}"
_database: dict[str, Any] = dict(dj_database_url.parse(os.environ.get("DATABASE_URL", _default_database_url)))
if _database["ENGINE"] == "django.db.backends.sqlite3":
    _database["OPTIONS"] = {
        # BEGIN IMMEDIATE takes the write lock when a transaction starts, so concurrent writers
        # queue on the busy timeout instead of failing with "database is locked" on upgrade.
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        # WAL lets readers proceed while one writer holds the lock.
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # A file, not the default shared-cache in-memory database: threads of the concurrency tests
    # each open their own connection, and shared-cache locking ignores the busy timeout. The pid
    # keeps simultaneous test runs in one checkout apart.
    _database["TEST"] = {"NAME": str(VAR_DIR / f"test-{os.getpid()}.sqlite3")}
elif _database["ENGINE"] == "django.db.backends.postgresql":
    # A psycopg connection pool per process. Under ASGI every request's sync code runs in a fresh
    # thread, so CONN_MAX_AGE never reuses a connection: each request paid for a new PostgreSQL
    # backend (bench/: ~10 ms of PostgreSQL CPU per send). The pool requires CONN_MAX_AGE = 0.
    _database["CONN_MAX_AGE"] = 0
    # With a pool, Django turns this into psycopg_pool's `check=ConnectionPool.check_connection`:
    # every check-out first proves the connection alive (an empty query, one round trip, ~0.1 ms
    # on loopback) and replaces a dead one. Without it a PostgreSQL restart left every idle
    # connection dead in the pool, and each failed the next request that took it, minutes later
    # (issue 13, F8: 8 x 500 and 11 x 503 of 40 requests).
    _database["CONN_HEALTH_CHECKS"] = True
    _database["OPTIONS"] = {
        "pool": {
            "min_size": _env_int("E2EE_DB_POOL_MIN", 2),
            "max_size": _env_int("E2EE_DB_POOL_MAX", 16),
            "timeout": 20,  # seconds a request waits for a free connection before failing
            # Connections are renewed now and then (psycopg_pool adds up to 5 % of jitter), so a
            # failover behind a proxy or DNS name is followed without a restart.
            "max_lifetime": float(_env_int("E2EE_DB_POOL_MAX_LIFETIME_S", 1800)),
        }
    }
DATABASES = {"default": _database}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: channel layer, cache, Celery -----------------------------------------------------

REDIS_URL = os.environ.get("REDIS_URL", "")
if REDIS_URL:
    # The pub/sub layer: one PUBLISH per event and no per-message bookkeeping in Redis, about twice
    # the throughput of the list-based core layer. It is at-most-once, which is all a doorbell
    # needs: the database and the delivery cursors make up for anything lost (protocol.md 6.4).
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL]},
        }
    }
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
        }
    }
else:
    # Capacity well above the delivery window: a full channel drops events, which the gateway
    # repairs from the database, but that costs queries.
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer", "CONFIG": {"capacity": 10000}}}
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# E2EE_CELERY_BROKER_URL puts the broker elsewhere than REDIS_URL (the test suite uses another
# Redis database for it). Without REDIS_URL tasks run eagerly, in the calling process.
CELERY_BROKER_URL = os.environ.get("E2EE_CELERY_BROKER_URL") or REDIS_URL or "memory://"
CELERY_TASK_ALWAYS_EAGER = not REDIS_URL
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_IGNORE_RESULT = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Tasks are acknowledged after they ran (a killed worker's task is run again; every task is
# idempotent) and a task whose worker process died is given back, not dropped.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# With Redis, a task fetched by a worker that then died (kill -9, lost host) is handed out again
# only after the visibility timeout: it must exceed the longest countdown (the retry backoff cap
# plus the coalescing delay), or a waiting retry would be handed out twice. Wake-ups do not wait
# for it: the notification sweep below hands out overdue ones within seconds.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": _env_int("E2EE_CELERY_VISIBILITY_TIMEOUT_S", 900),
    # A broker that went away is noticed by a ping within this many seconds, not by a TCP timeout.
    "health_check_interval": 10,
    "socket_keepalive": True,
    "socket_connect_timeout": 5,
}
# A worker survives broker restarts: it reconnects forever (Celery's default gives up after 100
# tries, about 17 minutes, and exits), on startup as well.
CELERY_BROKER_CONNECTION_RETRY = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
# Celery's consumer, except that one race of a broker restart no longer ends the worker (issue 13, F9).
CELERY_WORKER_CONSUMER = "config.celery:BrokerLossTolerantConsumer"
# A wake-up whose task was lost (its worker killed while it waited for a retry or the coalescing
# delay, a broker restart) is handed out again by the beat's sweep, which runs this often and takes
# what is this many seconds overdue (issue 13, F3: it took 362 s before).
E2EE_NOTIFY_SWEEP_S = float(os.environ.get("E2EE_NOTIFY_SWEEP_S", "5"))
E2EE_NOTIFY_STALL_GRACE_S = float(os.environ.get("E2EE_NOTIFY_STALL_GRACE_S", "5"))
# Periodic clean-ups, run by `celery -A config beat` (README, Production setup). Tasks are named by
# string so this file imports none of them.
CELERY_BEAT_SCHEDULE = {
    "notifications-prune": {"task": "notifications.prune", "schedule": 3600.0},
    "notifications-requeue-stalled": {"task": "notifications.requeue_stalled", "schedule": E2EE_NOTIFY_SWEEP_S},
    "media-prune-orphans": {"task": "media.tasks.prune_orphan_media", "schedule": 86400.0},
    "link-codes-expire": {"task": "devices.tasks.link_codes_expire", "schedule": 300.0},
}

# --- Auth ---------------------------------------------------------------------------------------

AUTH_USER_MODEL = "accounts.User"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# --- REST framework -----------------------------------------------------------------------------

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["devices.authentication.DeviceTokenAuthentication"],
    # Deny by default: views that a pending device or an anonymous client may use opt out.
    "DEFAULT_PERMISSION_CLASSES": ["devices.permissions.IsActiveDevice"],
    "DEFAULT_PARSER_CLASSES": ["common.parsers.StrictJSONParser"],
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "common.negotiation.JSONOnlyNegotiation",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # ASCII-only JSON (\uXXXX escapes): an error message that echoes input containing a lone
    # surrogate must still encode, instead of failing the response with a 500.
    "UNICODE_JSON": False,
    "EXCEPTION_HANDLER": "common.exception_handler.api_exception_handler",
    # No OPTIONS introspection: answer 405 like any other unsupported method.
    "DEFAULT_METADATA_CLASS": None,
    "DEFAULT_SCHEMA_CLASS": "common.schema.AutoSchema",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "e2ee-msg API",
    "DESCRIPTION": "The REST API of docs/protocol.md section 4. Every error is the `Error` object.",
    "VERSION": "1",
    "SCHEMA_PATH_PREFIX": "/api/v1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    "COMPONENT_SPLIT_REQUEST": True,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # The default hook, then ours: every request string refuses NUL characters, as DRF does.
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "common.schema.postprocess_request_strings",
    ],
}

# --- E2EE limits ------------------------------------------------------------------------------

E2EE_MAX_CIPHERTEXT_BYTES = _env_int("E2EE_MAX_CIPHERTEXT_BYTES", 65536)
# The largest body read at all: an epoch upload for a full group (256 members with several
# devices each) stays far below it; anything larger is refused with 413 request_too_large.
DATA_UPLOAD_MAX_MEMORY_SIZE = _env_int("E2EE_MAX_REQUEST_BYTES", 4 * 1024 * 1024)
E2EE_MAX_GROUP_MEMBERS = _env_int("E2EE_MAX_GROUP_MEMBERS", 256)
# How long a link request (the code a new device shows) stays usable (protocol.md 4.7).
E2EE_LINK_CODE_TTL_S = _env_int("E2EE_LINK_CODE_TTL_S", 600)

# --- Media: encrypted attachments (media/, protocol.md 4.5) ------------------ begin media block --
# Blobs are opaque ciphertext. "filesystem" (default) keeps them under E2EE_MEDIA_ROOT and the server
# streams uploads and downloads through signed, expiring URLs; "s3" keeps them in a private bucket
# and clients upload and download directly with presigned URLs.
E2EE_MEDIA_BACKEND = os.environ.get("E2EE_MEDIA_BACKEND", "filesystem")
if E2EE_MEDIA_BACKEND not in ("filesystem", "s3"):
    raise ValueError(f"E2EE_MEDIA_BACKEND must be 'filesystem' or 's3', not {E2EE_MEDIA_BACKEND!r}")
E2EE_MEDIA_ROOT = Path(os.environ.get("E2EE_MEDIA_ROOT", str(VAR_DIR / "media")))
E2EE_MEDIA_MAX_BYTES = _env_int("E2EE_MEDIA_MAX_BYTES", 100 * 1024 * 1024)  # one blob (ciphertext)
E2EE_MEDIA_QUOTA_BYTES = _env_int("E2EE_MEDIA_QUOTA_BYTES", 1024 * 1024 * 1024)  # all blobs of one user
E2EE_MEDIA_URL_EXPIRY_S = _env_int("E2EE_MEDIA_URL_EXPIRY_S", 300)  # upload and download URLs
E2EE_MEDIA_ORPHAN_AGE_S = _env_int("E2EE_MEDIA_ORPHAN_AGE_S", 86400)  # unreferenced blobs older are pruned
_media_storage: dict[str, Any]
if E2EE_MEDIA_BACKEND == "s3":
    if not os.environ.get("E2EE_S3_BUCKET"):
        raise ValueError("E2EE_MEDIA_BACKEND=s3 needs E2EE_S3_BUCKET")
    _media_storage = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": os.environ["E2EE_S3_BUCKET"],
            "endpoint_url": os.environ.get("E2EE_S3_ENDPOINT_URL") or None,
            "region_name": os.environ.get("E2EE_S3_REGION") or None,
            "access_key": os.environ.get("E2EE_S3_ACCESS_KEY_ID") or None,
            "secret_key": os.environ.get("E2EE_S3_SECRET_ACCESS_KEY") or None,
            "addressing_style": os.environ.get("E2EE_S3_ADDRESSING_STYLE") or None,
            "signature_version": "s3v4",
            "querystring_auth": True,
            "querystring_expire": E2EE_MEDIA_URL_EXPIRY_S,
            "file_overwrite": True,  # keys are server-chosen UUIDs: never renamed, never probed first
            "default_acl": None,  # a private bucket: every read is a presigned URL
        },
    }
else:
    _media_storage = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(E2EE_MEDIA_ROOT)},
    }
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    "media": _media_storage,
}
# --- end media block ------------------------------------------------------------------------------

# --- Realtime gateway (protocol.md section 6) -------------------------------------------------

E2EE_WS_HEARTBEAT_S = _env_int("E2EE_WS_HEARTBEAT_S", 30)
E2EE_WS_AUTH_TIMEOUT_S = _env_int("E2EE_WS_AUTH_TIMEOUT_S", 10)
# A send frame holds base64 of up to E2EE_MAX_CIPHERTEXT_BYTES plus about 300 bytes of fields.
E2EE_WS_MAX_FRAME_BYTES = _env_int("E2EE_WS_MAX_FRAME_BYTES", 131072)
E2EE_WS_MAX_IN_FLIGHT = _env_int("E2EE_WS_MAX_IN_FLIGHT", 1000)
E2EE_WS_WINDOW = _env_int("E2EE_WS_WINDOW", 512)
E2EE_WS_RETRY_S = float(os.environ.get("E2EE_WS_RETRY_S", "5"))
# Retries without any acknowledgement before the connection is closed (4420 ack_timeout).
E2EE_WS_MAX_RETRIES = _env_int("E2EE_WS_MAX_RETRIES", 3)
# Receipts are announced at most this often per conversation: at 250 ms the receipt frames cost the
# gateway about as much CPU as the messages they acknowledge (measured with py-spy under load).
E2EE_RECEIPT_FLUSH_MS = _env_int("E2EE_RECEIPT_FLUSH_MS", 1000)
# How often each process looks for messages whose push was lost (messaging/sweeper.py).
E2EE_WS_SWEEP_S = float(os.environ.get("E2EE_WS_SWEEP_S", "5"))
# The GIL switch interval of ASGI server processes (config/asgi.py). The event loop thread gives up
# the GIL at every socket call and, with Python's default of 5 ms, can wait that long to get it back
# from the database threads: at 200 msg/s that convoy alone took the send-to-decrypted p50 from
# about 35 ms to about 320 ms (bench/realtime_load.py). 0 keeps the interpreter's default.
E2EE_GIL_SWITCH_INTERVAL_MS = float(os.environ.get("E2EE_GIL_SWITCH_INTERVAL_MS", "0.5"))

# --- Push notifications (notifications/, protocol.md 4.6, README "Push notifications") ---------------

# A burst of messages for one offline device waits this long and then wakes it once.
E2EE_NOTIFY_COALESCE_S = float(os.environ.get("E2EE_NOTIFY_COALESCE_S", "2"))
# Attempts after the first failed one, spaced by full-jitter exponential backoff from the base
# delay (capped); then the notification becomes a dead letter (Django admin, replayable).
E2EE_NOTIFY_MAX_RETRIES = _env_int("E2EE_NOTIFY_MAX_RETRIES", 5)
E2EE_NOTIFY_RETRY_BASE_S = float(os.environ.get("E2EE_NOTIFY_RETRY_BASE_S", "2"))
E2EE_NOTIFY_RETRY_MAX_S = float(os.environ.get("E2EE_NOTIFY_RETRY_MAX_S", "300"))
# Timeout of one delivery request (webhook or push service).
E2EE_NOTIFY_HTTP_TIMEOUT_S = float(os.environ.get("E2EE_NOTIFY_HTTP_TIMEOUT_S", "5"))
# Push targets may point at loopback/private/link-local addresses only when this is on: on by
# default with DJANGO_DEBUG=1 (and in the test suite), off in production.
E2EE_NOTIFY_ALLOW_PRIVATE_URLS = os.environ.get("E2EE_NOTIFY_ALLOW_PRIVATE_URLS", "1" if DEBUG else "0") == "1"
# Each server process hands the send batches of this interval to one fan-out task (one broker
# round trip per interval, not per batch).
E2EE_NOTIFY_FLUSH_MS = _env_int("E2EE_NOTIFY_FLUSH_MS", 100)
# Sent and skipped notifications are deleted after this many days (dead letters stay).
E2EE_NOTIFY_KEEP_DAYS = _env_int("E2EE_NOTIFY_KEEP_DAYS", 7)
# Web Push (VAPID): the server's key pair, as printed by py-vapid (README), and the contact claim.
E2EE_VAPID_PRIVATE_KEY = os.environ.get("E2EE_VAPID_PRIVATE_KEY", "")
E2EE_VAPID_PUBLIC_KEY = os.environ.get("E2EE_VAPID_PUBLIC_KEY", "")
E2EE_VAPID_SUBJECT = os.environ.get("E2EE_VAPID_SUBJECT", "mailto:operator@example.invalid")

# --- Rate limits (common/ratelimit.py, docs/operations.md) -------------------------------------------
# "count/period_seconds" per key. E2EE_RATE_LIMITS overrides some of them from the environment:
# "login_ip=30/60,send_device=1200/60".
E2EE_RATE_LIMIT_DEFAULTS = {
    "login_ip": "30/60",  # log-ins from one address
    "login_account": "10/300",  # log-ins naming one account (brute force on its password)
    "register_ip": "10/3600",  # registrations from one address
    "send_device": "1200/60",  # message sends by one device (REST and WebSocket)
    "link_account": "30/3600",  # revocations asked by one account
    # Link-code approvals naming one pending device, and from one address: a wrong code changes
    # nothing, and these bound how often anyone may try (protocol.md 4.7).
    "link_code_device": "10/600",
    "link_code_ip": "60/600",
    "link_request_device": "20/600",  # link requests (new codes) opened by one pending device
    "upload_device": "120/60",  # conversation creations and epoch uploads by one device
    "key_request_device": "600/60",  # key requests filed or answered by one device (protocol.md 4.8)
    # Frames received on one WebSocket connection, counted in its process. Every pushed message is
    # acknowledged with a frame, so this also bounds how fast one device can receive.
    "ws_frame": "6000/60",
}


def _env_rate_limits(name: str, defaults: dict[str, str]) -> dict[str, str]:
    limits = dict(defaults)
    for item in _env_list(name, ""):
        key, _, value = item.partition("=")
        if key.strip() not in defaults:
            raise ValueError(f"{name}: unknown rate limit {key.strip()!r}")
        limits[key.strip()] = value.strip()
    return limits


E2EE_RATE_LIMITS = _env_rate_limits("E2EE_RATE_LIMITS", E2EE_RATE_LIMIT_DEFAULTS)
E2EE_RATE_LIMIT_ENABLED = os.environ.get("E2EE_RATE_LIMIT_ENABLED", "1") == "1"
# Key prefix of the counters in the cache (tests give each test its own).
E2EE_RATE_LIMIT_PREFIX = os.environ.get("E2EE_RATE_LIMIT_PREFIX", "rl")
# How many reverse proxies that append to X-Forwarded-For stand in front (0: use REMOTE_ADDR).
E2EE_TRUSTED_PROXY_HOPS = _env_int("E2EE_TRUSTED_PROXY_HOPS", 0)

# --- Metrics (common/metrics.py) -----------------------------------------------------------------------
# /metrics answers a request with `Authorization: Bearer <E2EE_METRICS_TOKEN>` (when set), or from
# an address in E2EE_METRICS_ALLOWED_NETWORKS (CIDRs, comma-separated; empty: none); else 404.
E2EE_METRICS_TOKEN = os.environ.get("E2EE_METRICS_TOKEN", "")
E2EE_METRICS_ALLOWED_NETWORKS = _env_list("E2EE_METRICS_ALLOWED_NETWORKS", "127.0.0.1/32,::1/128")

# --- I18N, time, static --------------------------------------------------------------------------

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# `collectstatic` target. Not needed to serve: whitenoise finds the apps' files itself (the
# admin's, Swagger UI's from drf-spectacular-sidecar), so a fresh clone serves them as is.
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)
WHITENOISE_USE_FINDERS = True

# --- Logging --------------------------------------------------------------------------------------

E2EE_LOG_LEVEL = os.environ.get("E2EE_LOG_LEVEL", "INFO").upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "common.logs.JsonLineFormatter"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json"}},
    "root": {"handlers": ["stderr"], "level": E2EE_LOG_LEVEL},
    "loggers": {
        # Our middleware writes one line per request; Django's own per-request warnings would
        # duplicate every 4xx.
        "django.request": {"level": "ERROR"},
        "django.server": {"level": "ERROR"},
    },
}
