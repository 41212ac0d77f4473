"""Who serves the image API (Google's Gemini API or a reseller proxy) and how each is spoken to."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

ProviderName = Literal["google", "proxy"]
ProviderSetting = Literal["auto", "google", "proxy"]


@dataclass(frozen=True)
class Retirement:
    """A model id the provider no longer serves, and what to name instead."""

    since: str  # ISO date
    successor: str  # the id that replaced it


@dataclass(frozen=True)
class Provider:
    """The wire differences of one kind of server, as data.

    `auth_header` carries the key, after `auth_prefix`; `size_spellings` maps a size a user
    names to how this server spells it (sizes not listed are sent as named); `retired` lists
    model ids the server has shut down.
    """

    name: ProviderName
    title: str
    auth_header: str
    auth_prefix: str = ""
    size_spellings: Mapping[str, str] = field(default_factory=dict)
    retired: Mapping[str, Retirement] = field(default_factory=dict)

    def auth_headers(self, api_key: str) -> dict[str, str]:
        return {self.auth_header: f"{self.auth_prefix}{api_key}"}

    @property
    def auth_kind(self) -> str:
        """How the key travels, for logs and messages (never the key itself)."""
        scheme = self.auth_prefix.strip()
        return f"{self.auth_header}: {scheme}" if scheme else self.auth_header

    def wire_size(self, size: str) -> str:
        return self.size_spellings.get(size, size)


# Google's deprecations page: the preview ids shut down on 2026-06-25, the first
# Flash Image model on 2026-10-02.
_GOOGLE_RETIRED = {
    "gemini-3.1-flash-image-preview": Retirement("2026-06-25", "gemini-3.1-flash-image"),
    "gemini-3-pro-image-preview": Retirement("2026-06-25", "gemini-3-pro-image"),
    "gemini-2.5-flash-image": Retirement("2026-10-02", "gemini-3.1-flash-image"),
}

PROVIDERS: dict[ProviderName, Provider] = {
    "google": Provider(
        name="google",
        title="Google's Gemini API",
        auth_header="x-goog-api-key",
        size_spellings={"0.5K": "512"},
        retired=_GOOGLE_RETIRED,
    ),
    "proxy": Provider(
        name="proxy",
        title="a Bearer-key proxy",
        auth_header="Authorization",
        auth_prefix="Bearer ",
    ),
}


def is_google_host(base_url: str) -> bool:
    host = (urlsplit(base_url).hostname or "").lower()
    return host == "googleapis.com" or host.endswith(".googleapis.com")


def choose_provider(setting: ProviderSetting, base_url: str) -> Provider:
    """The provider GEMINI_PROVIDER names; `auto` picks Google for a googleapis.com host."""
    if setting == "auto":
        return PROVIDERS["google" if is_google_host(base_url) else "proxy"]
    return PROVIDERS[setting]
