from __future__ import annotations

from pathlib import Path

import pytest

from core.config import Settings

REPO = Path(__file__).resolve().parents[1]
NAMES = sorted(
    info.validation_alias
    for info in Settings.model_fields.values()
    if isinstance(info.validation_alias, str)
)


@pytest.mark.parametrize("name", NAMES)
def test_every_setting_is_in_the_readme_table_and_in_env_example(name: str) -> None:
    readme = (REPO / "README.md").read_text("utf-8")
    example = (REPO / ".env.example").read_text("utf-8")
    assert f"`{name}`" in readme
    assert f"\n{name}=" in example


def test_the_procfile_runs_one_adapter_per_process() -> None:
    assert (REPO / "Procfile").read_text("utf-8").splitlines() == [
        "slack: python -m bots.slack",
        "discord: python -m bots.discord",
    ]
