"""Settings from the environment and `.env`, checked once at start-up."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.providers import Provider, ProviderSetting, choose_provider


class ConfigError(Exception):
    """A setting is missing or wrong; the message is one line naming the variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        # a copied .env.example leaves blanks: a blank means "not set"
        env_ignore_empty=True,
    )

    # the image API
    gemini_api_key: SecretStr | None = Field(None, validation_alias="GEMINI_API_KEY")
    gemini_base_url: str = Field(
        "https://generativelanguage.googleapis.com", validation_alias="GEMINI_BASE_URL"
    )
    gemini_provider: ProviderSetting = Field("auto", validation_alias="GEMINI_PROVIDER")
    gemini_model: str = Field("flash", validation_alias="GEMINI_MODEL")
    # a text model that reads images: Describe asks it for prompts (cheap, no image made)
    gemini_describe_model: str = Field(
        "gemini-3.5-flash-lite", min_length=1, validation_alias="GEMINI_DESCRIBE_MODEL"
    )
    # One attempt may take 180 s (a 4K image through a slow proxy takes up to ~130 s); a
    # whole generation, retries included, ends after 300 s, so a hung API is said out loud
    # within five minutes.
    gemini_timeout_seconds: float = Field(180.0, gt=0, validation_alias="GEMINI_TIMEOUT_SECONDS")
    gemini_max_attempts: int = Field(4, ge=1, le=10, validation_alias="GEMINI_MAX_ATTEMPTS")
    gemini_retry_deadline_seconds: float = Field(
        300.0, gt=0, validation_alias="GEMINI_RETRY_DEADLINE_SECONDS"
    )
    gemini_retry_backoff_seconds: float = Field(
        1.0, ge=0, validation_alias="GEMINI_RETRY_BACKOFF_SECONDS"
    )
    gemini_request_budget_mb: float = Field(20.0, gt=0, validation_alias="GEMINI_REQUEST_BUDGET_MB")
    models_file: Path | None = Field(None, validation_alias="IMAGEBOT_MODELS_FILE")

    # storage and jobs
    database_url: str = Field("sqlite:///data/imagebot.sqlite3", validation_alias="DATABASE_URL")
    # PostgreSQL only: connections each process keeps open, at least and at most
    database_pool_min: int = Field(1, ge=0, le=100, validation_alias="DATABASE_POOL_MIN")
    database_pool_max: int = Field(10, ge=1, le=100, validation_alias="DATABASE_POOL_MAX")
    # Generations at once per process, at most: each model's limit follows the API's answers
    # below it (core.throttle). A call waiting on the API costs a connection and a few KB,
    # so the default lets a team's burst reach the API at once; the API's 429s set the pace.
    max_concurrency: int = Field(
        256,
        ge=1,
        le=1024,
        validation_alias=AliasChoices("IMAGEBOT_MAX_CONCURRENCY", "IMAGEBOT_WORKERS"),
    )
    # Bytes of image API answers held at once (read, parsed and decoded, until delivered):
    # a 4K PNG answer is ~53 MB of base64, so 200 of them cannot exhaust the memory
    memory_budget_mb: float = Field(512.0, ge=16, validation_alias="IMAGEBOT_MEMORY_BUDGET_MB")
    max_jobs_per_user: int = Field(4, ge=1, validation_alias="IMAGEBOT_MAX_JOBS_PER_USER")
    lease_seconds: float = Field(30.0, gt=0, validation_alias="IMAGEBOT_LEASE_SECONDS")
    progress_interval_seconds: float = Field(
        10.0, gt=0, validation_alias="IMAGEBOT_PROGRESS_INTERVAL_SECONDS"
    )
    # On SIGTERM, generations under way get this long in all to finish and be delivered
    # (most 1K-2K images take 10-35 s); what is still queued goes to the next process at
    # once. 25 s keeps the whole stop inside the 30 s Heroku and Kubernetes allow.
    shutdown_grace_seconds: float = Field(
        25.0, ge=0, validation_alias="IMAGEBOT_SHUTDOWN_GRACE_SECONDS"
    )

    # quotas (0 means no limit)
    daily_images_per_user: int = Field(0, ge=0, validation_alias="IMAGEBOT_DAILY_IMAGES_PER_USER")
    daily_images_per_workspace: int = Field(
        0, ge=0, validation_alias="IMAGEBOT_DAILY_IMAGES_PER_WORKSPACE"
    )
    monthly_budget_usd: float = Field(0.0, ge=0, validation_alias="IMAGEBOT_MONTHLY_BUDGET_USD")
    max_jobs_in_flight: int = Field(200, ge=0, validation_alias="IMAGEBOT_MAX_JOBS_IN_FLIGHT")

    # input limits
    max_prompt_chars: int = Field(4000, ge=1, validation_alias="IMAGEBOT_MAX_PROMPT_CHARS")
    max_attachment_mb: float = Field(20.0, gt=0, validation_alias="IMAGEBOT_MAX_ATTACHMENT_MB")
    max_image_megapixels: float = Field(
        50.0, gt=0, validation_alias="IMAGEBOT_MAX_IMAGE_MEGAPIXELS"
    )

    # Retention (0 keeps forever). Images are most of the database (about 1.5 MB at 1K,
    # 10 MB at 4K); a conversation's text is small, and a month's jobs must stay for usage
    # and budgets, hence at least 32 days.
    keep_images_days: int = Field(30, ge=0, validation_alias="IMAGEBOT_KEEP_IMAGES_DAYS")
    keep_conversations_days: int = Field(
        90, ge=0, validation_alias="IMAGEBOT_KEEP_CONVERSATIONS_DAYS"
    )

    output_dir: Path = Field(Path("out"), validation_alias="IMAGEBOT_OUTPUT_DIR")
    log_level: str = Field("INFO", validation_alias="IMAGEBOT_LOG_LEVEL")
    log_format: Literal["text", "json"] = Field("text", validation_alias="IMAGEBOT_LOG_FORMAT")
    metrics_port: int | None = Field(None, ge=0, le=65535, validation_alias="IMAGEBOT_METRICS_PORT")

    # Slack
    slack_bot_token: SecretStr | None = Field(None, validation_alias="SLACK_BOT_TOKEN")
    slack_app_token: SecretStr | None = Field(None, validation_alias="SLACK_APP_TOKEN")
    slack_signing_secret: SecretStr | None = Field(None, validation_alias="SLACK_SIGNING_SECRET")
    # Many workspaces: Slack's OAuth v2 installs the app (/slack/install) and each workspace's
    # token is kept in the database; SLACK_BOT_TOKEN is then not used
    slack_client_id: str | None = Field(None, validation_alias="SLACK_CLIENT_ID")
    slack_client_secret: SecretStr | None = Field(None, validation_alias="SLACK_CLIENT_SECRET")
    # an uninstalled workspace's conversations, jobs, usage and settings are deleted this
    # long after the uninstall (a reinstall before then keeps them; 0 keeps them always)
    slack_uninstall_retention_days: int = Field(
        30, ge=0, validation_alias="SLACK_UNINSTALL_RETENTION_DAYS"
    )
    slack_api_url: str = Field("https://slack.com/api/", validation_alias="SLACK_API_URL")
    port: int = Field(3000, ge=0, le=65535, validation_alias="PORT")
    slack_thread_replies: bool = Field(False, validation_alias="SLACK_THREAD_REPLIES")
    # Slack's file hosts: commercial (and where Enterprise Grid redirects its downloads),
    # education, GovSlack, and Enterprise org hosts
    slack_file_hosts: str = Field(
        "files.slack.com,files-origin.slack.com,files-edu.slack.com,files.slack-gov.com,"
        ".enterprise.slack.com",
        validation_alias="SLACK_FILE_HOSTS",
    )

    # Discord
    discord_bot_token: SecretStr | None = Field(None, validation_alias="DISCORD_BOT_TOKEN")
    discord_api_url: str = Field("https://discord.com/api/v10", validation_alias="DISCORD_API_URL")
    discord_gateway_url: str = Field(
        "wss://gateway.discord.gg/", validation_alias="DISCORD_GATEWAY_URL"
    )

    # The application's public key (General Information in the developer portal): set, the
    # interactions Discord POSTs to PORT's /discord/interactions are verified with it and
    # answered there. DISCORD_GATEWAY=false leaves the gateway out (HTTP interactions only:
    # no mentions, replies or DMs), for workers that scale without a gateway session.
    discord_public_key: str | None = Field(None, validation_alias="DISCORD_PUBLIC_KEY")
    discord_gateway: bool = Field(True, validation_alias="DISCORD_GATEWAY")
    discord_file_hosts: str = Field(
        "cdn.discordapp.com,media.discordapp.net", validation_alias="DISCORD_FILE_HOSTS"
    )
    discord_thread_messages: bool = Field(False, validation_alias="DISCORD_THREAD_MESSAGES")
    discord_dms: bool = Field(True, validation_alias="DISCORD_DMS")
    discord_allowed_guilds: str = Field("", validation_alias="DISCORD_ALLOWED_GUILDS")
    discord_allowed_channels: str = Field("", validation_alias="DISCORD_ALLOWED_CHANNELS")
    discord_allowed_roles: str = Field("", validation_alias="DISCORD_ALLOWED_ROLES")
    discord_allowed_users: str = Field("", validation_alias="DISCORD_ALLOWED_USERS")
    discord_denied_users: str = Field("", validation_alias="DISCORD_DENIED_USERS")
    discord_denied_roles: str = Field("", validation_alias="DISCORD_DENIED_ROLES")
    # Unset, one connection carries every server. Set, this process runs DISCORD_SHARD_IDS
    # (default: all) of DISCORD_SHARD_COUNT shards; Discord sends a server's events only to
    # shard (server id >> 22) % count, and DMs only to shard 0.
    discord_shard_count: int | None = Field(None, ge=1, validation_alias="DISCORD_SHARD_COUNT")
    discord_shard_ids: str = Field("", validation_alias="DISCORD_SHARD_IDS")

    @field_validator("discord_shard_ids")
    @classmethod
    def _shard_numbers(cls, value: str) -> str:
        items = [item.strip() for item in value.split(",")] if value.strip() else []
        if not all(item.isascii() and item.isdigit() for item in items):
            raise ValueError("must be comma-separated shard numbers, such as 0,1")
        return ",".join(str(int(item)) for item in items)

    @field_validator("discord_public_key")
    @classmethod
    def _public_key(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip().lower()
        if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
            raise ValueError(
                "must be the application's public key, 64 hexadecimal characters (developer "
                "portal → your application → General Information → Public Key)"
            )
        return value

    @model_validator(mode="after")
    def _pool_sizes_in_order(self) -> Settings:
        if self.database_pool_min > self.database_pool_max:
            raise ValueError(
                f"DATABASE_POOL_MIN={self.database_pool_min} is above DATABASE_POOL_MAX="
                f"{self.database_pool_max}: keep the minimum at or below the maximum"
            )
        return self

    @model_validator(mode="after")
    def _shards_within_the_count(self) -> Settings:
        ids = [int(item) for item in self.split(self.discord_shard_ids)]
        count = self.discord_shard_count
        if ids and count is None:
            raise ValueError(
                "DISCORD_SHARD_IDS needs DISCORD_SHARD_COUNT, the number of shards across all "
                "processes: set it as well"
            )
        outside = [shard for shard in ids if count is not None and shard >= count]
        if outside and count is not None:
            raise ValueError(
                f"DISCORD_SHARD_IDS has shard {outside[0]}, but DISCORD_SHARD_COUNT={count} "
                f"numbers the shards 0 to {count - 1}: list only shards below the count"
            )
        twice = [shard for shard in ids if ids.count(shard) > 1]
        if twice:
            raise ValueError(
                f"DISCORD_SHARD_IDS lists shard {twice[0]} more than once: list each shard once"
            )
        return self

    @property
    def discord_shards(self) -> list[int] | None:
        """The shards this process runs, or None for one connection without sharding."""
        if self.discord_shard_count is None:
            return None
        ids = [int(item) for item in self.split(self.discord_shard_ids)]
        return ids or list(range(self.discord_shard_count))

    @field_validator("gemini_base_url", "slack_api_url", "discord_api_url", "discord_gateway_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://", "ws://", "wss://")):
            raise ValueError("must be an http(s):// or ws(s):// URL")
        return value

    @field_validator("gemini_base_url")
    @classmethod
    def _api_root(cls, value: str) -> str:
        # a root copied with its version ("…/v1beta") still means the root
        root = value.rstrip("/")
        for suffix in ("/v1beta/models", "/v1beta"):
            root = root.removesuffix(suffix)
        return root

    @field_validator("slack_api_url")
    @classmethod
    def _trailing_slash(cls, value: str) -> str:
        # slack_sdk joins method names onto the root with urljoin
        return value if value.endswith("/") else value + "/"

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        if not (value.startswith("sqlite:///") or is_postgres(value)):
            raise ValueError(
                "must be a sqlite:/// URL (sqlite:///relative/path or sqlite:////abs) or a "
                "postgresql:// (or postgres://) URL"
            )
        return value

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        value = value.upper()
        if value not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
        return value

    @field_validator(
        "slack_file_hosts",
        "discord_file_hosts",
        "discord_allowed_guilds",
        "discord_allowed_channels",
        "discord_allowed_roles",
        "discord_allowed_users",
        "discord_denied_users",
        "discord_denied_roles",
    )
    @classmethod
    def _comma_list(cls, value: str) -> str:
        items = [item.strip() for item in value.split(",")]
        if any(not item for item in items) and value.strip():
            raise ValueError("must be a comma-separated list without empty entries")
        return ",".join(items) if value.strip() else ""

    @staticmethod
    def split(value: str) -> list[str]:
        """A comma-separated setting as a list ("" is an empty list)."""
        return [item for item in value.split(",") if item]

    @model_validator(mode="after")
    def _one_try_fits_the_deadline(self) -> Settings:
        if self.gemini_timeout_seconds > self.gemini_retry_deadline_seconds:
            raise ValueError(
                f"GEMINI_TIMEOUT_SECONDS ({self.gemini_timeout_seconds:g}) is longer than "
                f"GEMINI_RETRY_DEADLINE_SECONDS ({self.gemini_retry_deadline_seconds:g}), "
                "which ends a whole generation: raise the deadline or lower the timeout"
            )
        return self

    @field_validator("keep_conversations_days")
    @classmethod
    def _a_month_at_least(cls, value: int) -> int:
        if 0 < value < 32:
            raise ValueError(
                "must be 0 (keep forever) or at least 32: usage and budgets count the month's jobs"
            )
        return value

    @property
    def provider(self) -> Provider:
        return choose_provider(self.gemini_provider, self.gemini_base_url)

    @property
    def sqlite_path(self) -> Path:
        return Path(self.database_url.removeprefix("sqlite:///"))

    @property
    def uses_postgres(self) -> bool:
        return is_postgres(self.database_url)

    @property
    def request_budget_bytes(self) -> int:
        return int(self.gemini_request_budget_mb * 1_000_000)

    @property
    def max_attachment_bytes(self) -> int:
        return int(self.max_attachment_mb * 1_000_000)

    @property
    def max_image_pixels(self) -> int:
        return int(self.max_image_megapixels * 1_000_000)

    def require(self, *names: str) -> None:
        """Fail with one line for the first of `names` (environment names) that is unset."""
        for name in names:
            field = next(
                f for f, info in type(self).model_fields.items() if info.validation_alias == name
            )
            value = getattr(self, field)
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            if value in (None, ""):
                raise ConfigError(f"{name} is not set: {_WANTS.get(name, 'set it in .env')}")


_WANTS = {
    "GEMINI_API_KEY": (
        "set it to the image API key (a Google AI Studio key, or a proxy's sk- key); no key "
        "yet? run `.venv/bin/imagebot fake-gemini &` and set GEMINI_BASE_URL="
        "http://127.0.0.1:8765 with any key to try everything offline"
    ),
    "SLACK_BOT_TOKEN": "set it to the app's xoxb- bot token",
    "DISCORD_PUBLIC_KEY": (
        "set it to the application's public key (developer portal → General Information)"
    ),
    "SLACK_SIGNING_SECRET": "set it to the app's signing secret (Basic Information page)",
    "SLACK_CLIENT_SECRET": (
        "set it to the app's client secret (Basic Information → App Credentials), beside "
        "SLACK_CLIENT_ID"
    ),
    "DISCORD_BOT_TOKEN": "set it to the bot token from the Discord developer portal",
}


def is_postgres(url: str) -> bool:
    """A PostgreSQL URL, in libpq's spelling or Heroku's."""
    return url.startswith(("postgresql://", "postgres://"))


def server_of(url: str) -> str:
    """host:port/database of a PostgreSQL URL, without its user and password."""
    parts = urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path}"


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment and `.env`; a bad value raises ConfigError in one line.

    `overrides` are field values (tests pass `_env_file=None` to ignore a developer's .env).
    """
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        message = first["msg"].removeprefix("Value error, ")
        if not first["loc"]:  # a check across settings names them itself
            raise ConfigError(message) from None
        name = str(first["loc"][0])
        given = first.get("input")
        shown = "" if "SECRET" in name or "TOKEN" in name or "KEY" in name else f" (got {given!r})"
        raise ConfigError(f"{name} {message}{shown}") from None
