"""AlignLab settings: one file, every value from the environment, defaults for `make run`.

The environment variables are listed, with their defaults, in README.md ("Configuration").
"""

import os
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured
from kombu import Queue

BASE_DIR = Path(__file__).resolve().parent.parent


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    if value.lower() in {"1", "true", "yes", "on"}:
        return True
    if value.lower() in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name}={value!r} is not a boolean (use 1/0, true/false)")


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not an integer") from None


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


def database_from_url(url: str) -> dict:
    """Turn `postgres://user:pw@host:port/name?opt=v` or `sqlite:///path` into a DATABASES dict."""
    parts = urlsplit(url)
    options = dict(parse_qsl(parts.query))
    if parts.scheme == "sqlite":
        path = unquote(parts.path)
        # sqlite:///relative/path and sqlite:////absolute/path, as in SQLAlchemy.
        name = path[1:] if path.startswith("/") else path
        return sqlite_database(Path(name) if name.startswith("/") else BASE_DIR / name)
    if parts.scheme in {"postgres", "postgresql", "pgsql"}:
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": unquote(parts.path.lstrip("/")) or "alignlab",
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            "HOST": parts.hostname or "",
            "PORT": str(parts.port or ""),
            "CONN_MAX_AGE": env_int("DATABASE_CONN_MAX_AGE", 60),
            "CONN_HEALTH_CHECKS": True,
            "OPTIONS": {**_prepared_statements(), **options},
        }
    raise ImproperlyConfigured(f"DATABASE_URL scheme {parts.scheme!r} is not supported")


def _prepared_statements() -> dict:
    """Server-side parameters, and statements prepared once a connection has run them
    `DATABASE_PREPARE_THRESHOLD` times (psycopg's automatic preparing; 0 turns both off, as a
    connection pooler in transaction mode before PgBouncer 1.21 needs).

    Measured on the review queue (bench/web_load.py): PostgreSQL spent more time planning its
    joins (1.4-4 ms each on a slow 2-core box) than running them (0.3 ms); a prepared statement
    is planned once per connection, not on every request."""
    threshold = env_int("DATABASE_PREPARE_THRESHOLD", 2)
    if threshold <= 0:
        return {}
    return {"server_side_binding": True, "prepare_threshold": threshold}


def sqlite_database(path: Path) -> dict:
    # The web server and the workers share this file: WAL lets readers run beside the writer,
    # IMMEDIATE transactions take the write lock up front instead of failing half way.
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": path,
        "OPTIONS": {
            "timeout": 30,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        },
        # A file, not :memory:, so a Celery worker started by a test sees the test database.
        "TEST": {"NAME": str(path.with_name("test-" + path.name))},
    }


# --- Paths -----------------------------------------------------------------------------------

VAR_DIR = Path(env_str("ALIGNLAB_VAR_DIR", str(BASE_DIR / "var"))).resolve()
MODELS_DIR = Path(env_str("ALIGNLAB_MODELS_DIR", str(VAR_DIR / "models"))).resolve()
# Where the default LM is converted to once (its folder is `smollm2-135m-instruct` inside):
# MODELS_DIR unless set, e.g. to share one conversion between checkouts or parallel test workers.
DEFAULT_MODEL_DIR = Path(env_str("ALIGNLAB_DEFAULT_MODEL_DIR", str(MODELS_DIR))).resolve()
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(VAR_DIR / "media"))).resolve()
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(BASE_DIR / "staticfiles"))).resolve()
for _directory in (VAR_DIR, MODELS_DIR, MEDIA_ROOT, STATIC_ROOT):
    _directory.mkdir(parents=True, exist_ok=True)

# --- Core ------------------------------------------------------------------------------------

DEBUG = env_bool("DEBUG", True)
SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off")
    SECRET_KEY = "insecure-development-key-only-for-debug-mode"  # noqa: S105

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "axes",
    "config",
    "assistant",
    "collection",
    "training",
    "evals",
    "experiments",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "config.auth_backends.upgrade_session_backend",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "axes.middleware.AxesMiddleware",  # last, as django-axes asks: it answers a locked-out sign-in
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "config.roles.roles_context",
            ],
        },
    },
]

DATABASE_URL = env_str("DATABASE_URL")
DATABASES = {
    "default": database_from_url(DATABASE_URL)
    if DATABASE_URL
    else sqlite_database(VAR_DIR / "alignlab.sqlite3")
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# django-axes' backend first: it refuses a locked-out username or address before any password
# is checked; it authenticates no one itself. RolesBackend is Django's model backend reading the
# user's roles in the query that loads the user (config/auth_backends.py).
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "config.auth_backends.RolesBackend",
]
# Django's database sessions, read by SQL written once (config/sessions.py): same table and rows.
SESSION_ENGINE = "config.sessions"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"  # files live in each app's static/ folder
MEDIA_URL = "media/"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

# --- Security (production: DEBUG=0 passes `manage.py check --deploy` with no warnings) ---------

SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
# With DEBUG=0 the site is served over HTTPS only. ALIGNLAB_HTTPS=0 serves it over plain HTTP
# (DEBUG=0 on localhost, no TLS anywhere): no redirect, no HSTS, cookies not marked Secure, so
# a browser keeps the session and CSRF cookies. `check --deploy` then warns, rightly.
HTTPS_ONLY = not DEBUG and env_bool("ALIGNLAB_HTTPS", True)
# Behind a TLS-terminating proxy that sets X-Forwarded-Proto and appends X-Forwarded-For.
BEHIND_TLS_PROXY = env_bool("SECURE_PROXY_SSL_HEADER", False)
if HTTPS_ONLY:
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
if BEHIND_TLS_PROXY and not DEBUG:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# Content-Security-Policy (django-csp): every script and stylesheet comes from our own origin,
# none inline (no 'unsafe-inline'), so an injected <script> or on*= attribute does not run.
# htmx is served from our static files; the Swagger UI view relaxes styles only (config/api_urls).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    },
}

# Sign-in throttling (django-axes): after LOGIN_FAILURE_LIMIT failed sign-ins for one username,
# or from one address, that username (from anywhere) and that address (for anyone) are refused
# with a 429 page until LOGIN_COOLOFF_MINUTES pass without another failure.
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("LOGIN_COOLOFF_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]  # each on its own, not the pair
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_CLIENT_IP_CALLABLE = "config.throttling.client_ip"

# --- Models --------------------------------------------------------------------------------

# Sent to OpenAI-compatible model servers that want a key (vLLM --api-key, hosted APIs).
OPENAI_API_KEY = env_str("OPENAI_API_KEY")
MODEL_SERVER_TIMEOUT_S = env_int("MODEL_SERVER_TIMEOUT_S", 120)

# Every bf16 choice left "auto" (training autocast, PM scoring, evals, the LM's dtype) takes
# bf16 only where the device computes it natively (assistant.hardware). "off": float32 for all
# of them, as on a CPU without AVX-512/AMX (CI stands in for one); "on": bf16 even there.
ALIGNLAB_BF16 = (env_str("ALIGNLAB_BF16") or "auto").lower()
if ALIGNLAB_BF16 not in {"auto", "off", "on"}:
    raise ImproperlyConfigured(f"ALIGNLAB_BF16={ALIGNLAB_BF16!r} is not auto, off or on")

# --- Paths and hosts a web request may name ------------------------------------------------

# Model folders the API and admin may register: MODELS_DIR and these (comma-separated), after
# symlinks and ".." are resolved. `manage.py register_model` (an operator) may name any path.
ALIGNLAB_MODEL_ROOTS = [Path(p).resolve() for p in env_list("ALIGNLAB_MODEL_ROOTS", [])]
# Model servers on loopback or a private network (a local vLLM, a GPU box on the LAN) are the
# usual case, so they are allowed; 0 refuses private and loopback addresses written in the URL.
# Link-local and cloud-metadata addresses are refused either way.
ALIGNLAB_ALLOW_PRIVATE_MODEL_HOSTS = env_bool("ALIGNLAB_ALLOW_PRIVATE_MODEL_HOSTS", True)
# Folders the files of a preference-model pre-training run (pmp_sources) and the preference file
# an eval names (evals/preference_files.py) must lie in.
ALIGNLAB_DATA_ROOTS = [
    Path(p).resolve() for p in env_list("ALIGNLAB_DATA_ROOTS", [str(VAR_DIR / "data")])
]

# --- Collection -----------------------------------------------------------------------------

COLLECTION_MAX_MESSAGE_CHARS = env_int("COLLECTION_MAX_MESSAGE_CHARS", 2000)
COLLECTION_MESSAGES_PER_MINUTE = env_int("COLLECTION_MESSAGES_PER_MINUTE", 12)
# How often a streaming generation saves the text so far for the contractor's page (seconds).
COLLECTION_STREAM_SAVE_S = 0.5
# Import files uploaded from the datasets page: the web process writes each one to a folder and
# a name it makes itself under this folder (never a path from the request); a worker imports it
# and deletes it. Uploads larger than the limit are refused before they are stored.
COLLECTION_UPLOADS_DIR = Path(env_str("ALIGNLAB_UPLOADS_DIR", str(VAR_DIR / "uploads"))).resolve()
COLLECTION_UPLOAD_MAX_MB = env_int("ALIGNLAB_UPLOAD_MAX_MB", 512)
# Exports are written by a worker (an ExportJob) to a name it makes under this folder and
# downloaded from there; the web process and the workers must share it.
COLLECTION_EXPORTS_DIR = Path(env_str("ALIGNLAB_EXPORTS_DIR", str(VAR_DIR / "exports"))).resolve()
# A snapshot export of at most this many rows may also be streamed by the request that asks for
# it (seconds at most); a bigger one only as an export job, so no request holds a connection for
# minutes.
COLLECTION_EXPORT_STREAM_MAX_ROWS = env_int("ALIGNLAB_EXPORT_STREAM_MAX_ROWS", 50_000)
# PostgreSQL connections that render a pair export side by side (collection/export_sql.py).
COLLECTION_EXPORT_SQL_WORKERS = env_int("ALIGNLAB_EXPORT_SQL_WORKERS", 2)
# A snapshot of at most this many judgements is made by the request that asks for it; a bigger
# one by a worker (a SnapshotJob, collection/snapshot_jobs.py), whose page shows its progress.
COLLECTION_SNAPSHOT_INLINE_MAX = env_int("ALIGNLAB_SNAPSHOT_INLINE_MAX", 20_000)
# The quality page computes its numbers live while there are at most this many judgements;
# beyond, it reads the summaries `collection.refresh_quality` stores (beat, every 5 minutes:
# an ordinary django-celery-beat entry that admins can edit).
COLLECTION_QUALITY_LIVE_MAX_JUDGEMENTS = env_int("ALIGNLAB_QUALITY_LIVE_MAX", 20_000)
# How long the review queue holds an open turn for the reviewer it showed it to; meanwhile
# other reviewers are handed other turns. Showing it again renews the hold, a submit ends it.
COLLECTION_REVIEW_CLAIM_S = env_int("ALIGNLAB_REVIEW_CLAIM_S", 600)
# How long a process keeps the list of campaigns reviewing by PM uncertainty (selectors).
COLLECTION_QUEUE_CAMPAIGNS_S = env_int("ALIGNLAB_QUEUE_CAMPAIGNS_S", 5)
# The same for the Elo page and API: beyond this many judgements they add up the game counts
# `evals.refresh_elo` stores (beat, every 5 minutes) instead of reading every judgement.
EVALS_ELO_LIVE_MAX_JUDGEMENTS = env_int("ALIGNLAB_ELO_LIVE_MAX", 20_000)

# --- Evals ----------------------------------------------------------------------------------

# Eval data ships inside the package (evals/data, each set with its licence and SOURCE.txt);
# point these elsewhere to evaluate on another copy.
ALIGNLAB_HHH_DIR = Path(
    env_str("ALIGNLAB_HHH_DIR", str(BASE_DIR / "evals" / "data" / "hhh_alignment"))
)
ALIGNLAB_TRUTHFULQA_FILE = Path(
    env_str(
        "ALIGNLAB_TRUTHFULQA_FILE",
        str(BASE_DIR / "evals" / "data" / "truthfulqa" / "mc_task.json"),
    )
)

# 0 = every HHH item (221); N = only the first N of each category, for quick evals on a slow
# machine (each result still reports its n).
ALIGNLAB_HHH_PER_CATEGORY = env_int("ALIGNLAB_HHH_PER_CATEGORY", 0)

# --- Training -------------------------------------------------------------------------------

# PM promotion: a paired test on the new run's held-out pairs (training/promotion.py).
# A PM whose held-out set has fewer comparisons (ordered pairs) than this is registered but never
# promoted: with 200, the 95% interval of an accuracy near 0.7 is about ±0.065, and an exact
# McNemar test finds a 6-point gain when 15% of the pairs are discordant (21 vs 9: p = 0.043);
# fewer pairs only decide between PMs far apart, and on a handful "accuracy 1.000" means nothing.
TRAINING_PROMOTION_MIN_HELD_OUT = env_int("ALIGNLAB_PROMOTION_MIN_HELD_OUT", 200)
# The test's level: significantly better (exact McNemar p < alpha) is promoted, significantly
# worse kept; the interval of the accuracy difference is at 1 - alpha.
TRAINING_PROMOTION_ALPHA = 0.05
# Non-inferiority margin (absolute accuracy) for a tie: a PM not significantly different from
# the active one is promoted only when the interval's lower end is at least -tolerance.
TRAINING_PROMOTION_TOLERANCE = float(env_str("TRAINING_PROMOTION_TOLERANCE", "0.01"))
# Reported with each decision (it does not decide): the new PM's agreement with at most this
# many of the latest human judgements made after its snapshot (collection.pm_loop).
TRAINING_PROMOTION_RECENT_JUDGEMENTS = 200

# --- REST API --------------------------------------------------------------------------------

REST_FRAMEWORK = {
    # Token first, so a request that isn't signed in gets a 401 with `WWW-Authenticate: Token`.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["config.roles.ResearcherReadAdminWrite"],
    "DEFAULT_PAGINATION_CLASS": "config.pagination.PageNumbers",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # JSON bodies only: a form body cannot say null, and the API's objects (filters, configs)
    # do not fit in one. Tests send JSON by default too.
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "AlignLab API",
    "DESCRIPTION": "Collected preference data, dataset snapshots, model versions, runs.",
    "VERSION": "0.1.0",
    # Swagger UI from the sidecar package: no CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Training and eval runs share the job statuses (assistant/jobs.py): one enum, named.
    "ENUM_NAME_OVERRIDES": {"JobStatusEnum": "assistant.jobs.JobStatus"},
    # The schema describes the API, not the view serving the schema.
    "SERVE_INCLUDE_SCHEMA": False,
    # The error statuses too (400/401/403/404), so a client and schemathesis know to expect them.
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "config.schema.document_error_responses",
    ],
}

# --- Celery ----------------------------------------------------------------------------------

BROKER_DIR = VAR_DIR / "broker"
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL") or "filesystem://"
if CELERY_BROKER_URL.startswith("filesystem://"):
    # The embedded broker: messages are files under var/broker, no server needed. It supports
    # fanout, so `celery inspect ping` and revoking a task work too.
    for _sub in ("queue", "processed", "control"):
        (BROKER_DIR / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR / "queue"),
        "data_folder_out": str(BROKER_DIR / "queue"),
        "processed_folder": str(BROKER_DIR / "processed"),
        "control_folder": str(BROKER_DIR / "control"),
        "store_processed": False,
    }


def _default_result_backend(broker_url: str) -> str:
    if broker_url.startswith(("redis://", "rediss://")):
        return broker_url
    if broker_url.startswith(("amqp://", "pyamqp://")):
        return "rpc://"
    return f"db+sqlite:///{VAR_DIR / 'celery-results.sqlite3'}"


CELERY_RESULT_BACKEND = env_str("CELERY_RESULT_BACKEND") or _default_result_backend(
    CELERY_BROKER_URL
)
CELERY_RESULT_EXPIRES = 24 * 3600
CELERY_TASK_QUEUES = [Queue("default"), Queue("generation"), Queue("training")]
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {
    # Sampling responses for contractors: workers that keep the language model loaded.
    "collection.generate_responses": {"queue": "generation"},
    # Every task of the training app runs on training workers (GPU machines in production).
    "training.*": {"queue": "training"},
}
CELERY_TASK_ACKS_LATE = True  # a task whose worker dies is delivered again...
CELERY_TASK_REJECT_ON_WORKER_LOST = True  # ...so every task must be idempotent.
CELERY_WORKER_PREFETCH_MULTIPLIER = 1  # long tasks: take one at a time
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 10 * 60)
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 11 * 60)
# Training tasks set their own, longer limits from these two.
CELERY_TRAINING_SOFT_TIME_LIMIT = env_int("CELERY_TRAINING_SOFT_TIME_LIMIT", 24 * 3600)
CELERY_TRAINING_TIME_LIMIT = env_int("CELERY_TRAINING_TIME_LIMIT", 24 * 3600 + 600)
CELERY_TASK_MAX_RETRIES = env_int("CELERY_TASK_MAX_RETRIES", 3)
CELERY_TASK_RETRY_BACKOFF_MAX = 600
CELERY_TASK_ANNOTATIONS = {"*": {"max_retries": CELERY_TASK_MAX_RETRIES}}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_TRACK_STARTED = True
CELERY_TIMEZONE = TIME_ZONE
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
if CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    # Redis hands an unacknowledged task to another worker after the visibility timeout (an
    # hour by default): it must outlast the longest task, or a long training run would start
    # again on a second worker while the first still runs it. A dead worker's job is found
    # sooner by the sweeper (its lease expires), below.
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": CELERY_TRAINING_TIME_LIMIT + 3600,
        "socket_connect_timeout": 5,
    }
# Sending a task while the broker is down fails in a second or two, not after ~20 s of
# retries: the caller keeps the work (queued without a task) and the sweeper sends it later.
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": 2,
    "interval_start": 0,
    "interval_step": 0.5,
    "interval_max": 0.5,
}
CELERY_BROKER_CONNECTION_TIMEOUT = 5

# --- Reliability -----------------------------------------------------------------------------

# The sweeper (config.sweep_stranded_work, every minute from beat) recovers work no task
# carries. A queued job or turn is sent again once it is this old and has no live task.
JOBS_ENQUEUE_GRACE_S = env_int("JOBS_ENQUEUE_GRACE_S", 60)
# A training worker renews its run's lease every step; a run whose lease expired is taken over
# (it resumes from its checkpoint). Longer than the slowest gap between two steps: loading the
# model, an evaluation pass, a checkpoint.
TRAINING_LEASE_S = env_int("TRAINING_LEASE_S", 10 * 60)
# Eval suites renew nothing: the lease outlasts the eval task's hard time limit.
EVALS_LEASE_S = env_int("EVALS_LEASE_S", CELERY_TASK_TIME_LIMIT + 60)
# A turn `generating` whose worker was last heard of this long ago is failed (retryable): past
# the generation task's hard time limit, no worker can still be writing it.
COLLECTION_GENERATION_TIMEOUT_S = env_int(
    "COLLECTION_GENERATION_TIMEOUT_S", CELERY_TASK_TIME_LIMIT + 60
)
# An uploaded import runs at a few hundred lines a second: a big file takes longer than an
# ordinary task may, so the import task has its own time limits. Its job renews the lease while
# it checks the file, but not while it writes it (one transaction): the lease outlasts them.
COLLECTION_IMPORT_SOFT_TIME_LIMIT = 2 * 3600
COLLECTION_IMPORT_TIME_LIMIT = COLLECTION_IMPORT_SOFT_TIME_LIMIT + 300
COLLECTION_IMPORT_LEASE_S = COLLECTION_IMPORT_TIME_LIMIT + 60
# An export job renews its lease every second as it writes, so a short lease finds a dead
# worker soon; its time limits are the import's (a million pairs take well under a minute).
COLLECTION_EXPORT_LEASE_S = env_int("COLLECTION_EXPORT_LEASE_S", 5 * 60)
# A snapshot job renews its lease as it selects and hashes (every second); the same lease.
COLLECTION_SNAPSHOT_LEASE_S = env_int("COLLECTION_SNAPSHOT_LEASE_S", 5 * 60)

# --- Logging ---------------------------------------------------------------------------------

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    # A 403 (PermissionDenied) is one warning line, not a traceback (config/logging_filters.py).
    "filters": {
        "permission_denied": {"()": "config.logging_filters.PermissionDeniedWithoutTraceback"}
    },
    "loggers": {"django.request": {"filters": ["permission_denied"]}},
}
