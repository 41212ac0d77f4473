from __future__ import annotations

import pytest

from core.catalog import load_catalog
from core.errors import UserFacingError
from core.options import Options, check_prompt, parse, resolve

CATALOG = load_catalog()


def test_flags_anywhere_are_cut_from_the_prompt() -> None:
    prompt, options = parse(
        "a red fox --ar 16:9 in the snow --size 2k --model flash --temp 0.4 --text"
    )
    assert prompt == "a red fox in the snow"
    assert options == Options(
        model="flash", aspect_ratio="16:9", size="2K", temperature=0.4, text=True
    )


@pytest.mark.parametrize("typed", ["—ar 16x9", "–ar 16:9", "--aspect 16X9", "--ar=16:9"])
def test_em_dashes_x_separators_and_equals_all_spell_a_ratio(typed: str) -> None:
    assert parse(f"a fox {typed}")[1].aspect_ratio == "16:9"


def test_a_lone_dash_or_dashed_word_stays_in_the_prompt() -> None:
    prompt, options = parse("a fox — running, —quietly -- fast")
    assert prompt == "a fox — running, —quietly -- fast"
    assert options == Options()


def test_line_breaks_in_the_prompt_survive() -> None:
    assert parse("line one\nline two --ar 1:1")[0] == "line one\nline two"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("x --foo", "`--foo` is not an option: use --ar, --size, --model, --temp, --n or --text."),
        ("x --ar", "`--ar` needs a value, for example `--ar 16:9`."),
        ("x --ar wide", "`--ar` wants a ratio like 16:9, and `wide` is not one."),
        ("x --size 3K", "`--size` must be one of 0.5K, 1K, 2K, 4K, and `3K` is not."),
        (
            "x --temp 1.5",
            "`--temp` must be a number from 0 to 1 (for example `--temp 0.4`), not `1.5`.",
        ),
        (
            "x --temp hot",
            "`--temp` must be a number from 0 to 1 (for example `--temp 0.4`), not `hot`.",
        ),
        ("x --ar 1:1 --ar 2:3", "`--ar` is given twice: keep one."),
        ("x --text=yes", "`--text` takes no value: write just `--text`."),
    ],
)
def test_bad_flags_explain_the_fix(text: str, message: str) -> None:
    with pytest.raises(UserFacingError) as caught:
        parse(text)
    assert caught.value.message == message


def test_4k_on_flash_25_names_the_models_that_make_4k() -> None:
    with pytest.raises(UserFacingError) as caught:
        resolve(Options(size="4K", model="2.5-flash"), CATALOG)
    assert caught.value.message == (
        "4K is not available on Gemini 2.5 Flash Image, which makes 1K only: "
        "try `--model flash` or `--model pro`."
    )


def test_a_ratio_the_model_lacks_lists_the_ones_it_has() -> None:
    with pytest.raises(UserFacingError) as caught:
        resolve(Options(aspect_ratio="8:1", model="pro"), CATALOG)
    assert "which makes 1:1, 2:3, 3:2, 3:4, 4:3, 9:16, 16:9, 21:9: try `--model flash`" in (
        caught.value.message
    )


def test_a_ratio_no_model_makes_lists_every_ratio() -> None:
    with pytest.raises(UserFacingError, match="5:7 is not an aspect ratio any model makes"):
        resolve(Options(aspect_ratio="5:7"), CATALOG)


def test_unknown_model_lists_the_choices() -> None:
    with pytest.raises(UserFacingError, match="There is no model called 'dalle'"):
        resolve(Options(model="dalle"), CATALOG)


def test_model_ids_and_aliases_both_resolve_case_insensitively() -> None:
    assert resolve(Options(model="PRO"), CATALOG).model.id == "gemini-3-pro-image"
    assert resolve(Options(model="gemini-2.5-flash-image"), CATALOG).model.name == (
        "Gemini 2.5 Flash Image"
    )


def test_too_many_reference_images_names_a_roomier_model() -> None:
    with pytest.raises(UserFacingError) as caught:
        resolve(Options(model="2.5-flash"), CATALOG, reference_images=4)
    assert caught.value.message == (
        "Gemini 2.5 Flash Image takes at most 3 reference images and this request has 4: "
        "attach fewer or try `--model flash` or `--model pro` (up to 14)."
    )


def test_15_reference_images_are_too_many_for_every_model() -> None:
    with pytest.raises(
        UserFacingError, match="at most 14 reference images and this request has 15"
    ):
        resolve(Options(), CATALOG, reference_images=15)


def test_saved_defaults_the_model_cannot_do_give_way_quietly() -> None:
    resolved = resolve(
        Options(model="2.5-flash"),
        CATALOG,
        defaults=Options(size="4K", aspect_ratio="8:1", temperature=0.2),
    )
    assert (resolved.size, resolved.aspect_ratio, resolved.temperature) == ("1K", None, 0.2)


def test_typed_options_win_over_defaults() -> None:
    resolved = resolve(Options(size="2K"), CATALOG, defaults=Options(size="4K", model="pro"))
    assert (resolved.model.id, resolved.size) == ("gemini-3-pro-image", "2K")


def test_default_model_is_flash_at_1k() -> None:
    resolved = resolve(Options(), CATALOG)
    assert (resolved.model.id, resolved.size, resolved.aspect_ratio) == (
        "gemini-3.1-flash-image",
        "1K",
        None,
    )


def test_empty_and_overlong_prompts_are_refused() -> None:
    with pytest.raises(UserFacingError, match="Tell me what to draw"):
        check_prompt("   ", 100)
    with pytest.raises(
        UserFacingError, match="The prompt is 20,000 characters long; the limit is 4,000"
    ):
        check_prompt("x" * 20_000, 4000)
