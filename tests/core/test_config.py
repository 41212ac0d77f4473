from __future__ import annotations

import pytest

from core.config import ConfigError, load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    names = ("GEMINI_API_KEY", "PORT", "DATABASE_URL", "SLACK_API_URL")
    for name in (*names, "IMAGEBOT_MAX_CONCURRENCY", "IMAGEBOT_WORKERS"):
        monkeypatch.delenv(name, raising=False)


def test_defaults_match_the_documented_ones() -> None:
    settings = load_settings(_env_file=None)
    assert settings.database_url == "sqlite:///data/imagebot.sqlite3"
    assert settings.sqlite_path.as_posix() == "data/imagebot.sqlite3"
    assert settings.gemini_timeout_seconds == 180
    assert settings.gemini_retry_deadline_seconds == 300
    assert settings.gemini_provider == "auto" and settings.provider.name == "google"
    assert settings.request_budget_bytes == 20_000_000
    assert settings.slack_api_url == "https://slack.com/api/"


def test_a_bad_value_names_the_variable_and_what_it_wants(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PORT", "eighty")
    with pytest.raises(ConfigError) as caught:
        load_settings(_env_file=None)
    assert str(caught.value).startswith("PORT Input should be a valid integer")
    assert "\n" not in str(caught.value)


def test_a_missing_required_secret_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(_env_file=None)
    with pytest.raises(ConfigError, match=r"^GEMINI_API_KEY is not set"):
        settings.require("GEMINI_API_KEY")


def test_secrets_never_show_in_repr_or_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", "sk-very-secret")
    monkeypatch.setenv("SLACK_SIGNING_SECRET", "")
    settings = load_settings(_env_file=None)
    assert "sk-very-secret" not in repr(settings) and "sk-very-secret" not in str(settings)
    assert settings.gemini_api_key is not None
    assert settings.gemini_api_key.get_secret_value() == "sk-very-secret"


def test_a_database_url_other_than_sqlite_or_postgresql_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL", "mysql://db/imagebot")
    with pytest.raises(ConfigError, match=r"^DATABASE_URL must be a sqlite:/// URL .* or a post"):
        load_settings(_env_file=None)


@pytest.mark.parametrize("url", ["postgres://u:p@db:5432/imagebot", "postgresql://db/imagebot"])
def test_heroku_and_libpq_postgresql_urls_select_postgresql(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.setenv("DATABASE_URL", url)
    assert load_settings(_env_file=None).uses_postgres


def test_slack_api_url_gains_its_trailing_slash(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_API_URL", "http://127.0.0.1:9/api")
    assert load_settings(_env_file=None).slack_api_url == "http://127.0.0.1:9/api/"


def test_the_old_name_of_the_concurrency_maximum_still_works(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", "k")
    monkeypatch.setenv("IMAGEBOT_WORKERS", "12")
    assert load_settings(_env_file=None).max_concurrency == 12
