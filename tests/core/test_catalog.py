from __future__ import annotations

from pathlib import Path

import pytest

from core.catalog import load_catalog


def test_the_three_shipped_models_and_their_limits() -> None:
    catalog = load_catalog()
    flash, pro, old = (catalog.get(n) for n in ("flash", "pro", "2.5-flash"))
    assert (flash.id, pro.id) == ("gemini-3.1-flash-image", "gemini-3-pro-image")
    assert flash.wire_id("proxy") == "gemini-3.1-flash-image-preview"
    assert pro.wire_id("google") == "gemini-3-pro-image"
    assert flash.size_names == ["0.5K", "1K", "2K", "4K"]
    assert "8:1" in flash.aspect_ratios and "8:1" not in pro.aspect_ratios
    assert (pro.max_reference_images, pro.max_object_images, pro.max_people_images) == (14, 6, 5)
    assert old.size_names == ["1K"] and old.max_reference_images == 3
    assert old.thought_signatures is False and pro.thought_signatures is True
    assert pro.price("4K") == 0.24 and flash.output_tokens["0.5K"] == 747


def test_an_operator_file_adds_a_model_and_overrides_a_field(tmp_path: Path) -> None:
    extra = tmp_path / "models.toml"
    extra.write_text(
        """
[[models]]
id = "gemini-3-pro-image-preview"
aspect_ratios = ["1:1", "4:5", "5:4"]

[[models]]
id = "gemini-4-image"
name = "Gemini 4 Image"
aliases = ["four"]
sizes = { "0.5K" = "512", "1K" = "1K" }
aspect_ratios = ["1:1"]
max_reference_images = 14
""",
        "utf-8",
    )
    catalog = load_catalog(extra, default="four")
    assert catalog.default.id == "gemini-4-image"
    assert catalog.get("four").size_names == ["0.5K", "1K"]
    pro = catalog.get("pro")
    assert pro.id == "gemini-3-pro-image", "the preview id names the shipped model"
    assert pro.aspect_ratios == ("1:1", "4:5", "5:4") and pro.max_reference_images == 14
    assert len(catalog.models) == 4


@pytest.mark.parametrize(
    "name",
    ["flash", "gemini-3.1-flash-image", "gemini-3.1-flash-image-preview", "NANO-BANANA-2"],
)
def test_current_and_preview_ids_name_the_same_model(name: str) -> None:
    assert load_catalog().get(name).id == "gemini-3.1-flash-image"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[[models]]\nid = 'x'\nname = 'X'\nsizes = {'3K' = '3K'}\naspect_ratios = ['1:1']\n"
            "max_reference_images = 1\n",
            "unknown size '3K'",
        ),
        ("[[models]]\nname = 'X'\n", "every [[models]] entry needs an id"),
        ("[[models]\n", "is not valid TOML"),
        ("[[models]]\nid = 'x'\nname = 'X'\n", "model 'x': sizes: Field required"),
    ],
)
def test_a_bad_operator_file_is_refused_with_a_readable_reason(
    tmp_path: Path, text: str, message: str
) -> None:
    extra = tmp_path / "models.toml"
    extra.write_text(text, "utf-8")
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        load_catalog(extra)
