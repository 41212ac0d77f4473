"""Reference checks, conversions and fitting, on real images made with Pillow."""

from __future__ import annotations

import io
import os
import re
import struct
import zlib
from collections.abc import Callable

import pytest
from PIL import Image, ImageFile, features

from core.errors import UserFacingError
from core.images import (
    ACCEPTED_MIME_TYPES,
    ATTACH_HINT,
    MB,
    CheckedImage,
    check_reference,
    check_reference_sync,
    extension_for,
    fit_under,
    fit_under_sync,
    format_megabytes,
    image_dimensions,
    printable_name,
    sniff_mime,
)

MAX_BYTES = 20 * MB
MAX_PIXELS = 50_000_000
HINT = ATTACH_HINT


# --- making images ------------------------------------------------------------------------


def encode(im: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    im.save(buffer, fmt, **options)
    return buffer.getvalue()


def noise(width: int, height: int, mode: str = "RGB") -> Image.Image:
    """Random pixels, which no encoder can compress much."""
    return Image.frombytes(mode, (width, height), os.urandom(width * height * len(mode)))


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_header(width: int, height: int, bit_depth: int = 8, colour: int = 2) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)


def png_bomb(side: int) -> bytes:
    """A valid 1-bit black PNG of side x side pixels that compresses to a few kilobytes."""
    compressor = zlib.compressobj(9)
    row = b"\x00" * (1 + (side + 7) // 8)
    idat = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    return (
        png_header(side, side, bit_depth=1, colour=0) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def jpeg_claiming(width: int, height: int) -> bytes:
    """A small real JPEG whose frame header claims another size."""
    data = bytearray(encode(Image.new("RGB", (16, 16), "grey"), "JPEG"))
    at = data.index(b"\xff\xc0")
    data[at + 5 : at + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def good_png() -> bytes:
    return encode(noise(64, 48), "PNG")


def good_jpeg() -> bytes:
    return encode(noise(64, 48), "JPEG", quality=90)


def with_orientation(im: Image.Image, fmt: str, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(im, fmt, exif=exif.tobytes())


def check(data: bytes, name: str = "x.png", **limits: int) -> CheckedImage:
    return check_reference_sync(
        data,
        name=name,
        max_bytes=limits.get("max_bytes", MAX_BYTES),
        max_pixels=limits.get("max_pixels", MAX_PIXELS),
    )


def decode(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


# --- hostile input ------------------------------------------------------------------------

HOSTILE: list[tuple[str, Callable[[], bytes], str, str]] = [
    (
        "pdf",
        lambda: b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n",
        "report.pdf",
        f"`report.pdf` is a PDF, not an image: {HINT}",
    ),
    ("empty file", lambda: b"", "x.png", f"`x.png` is an empty file, not an image: {HINT}"),
    (
        "text file",
        lambda: "Grocery list:\n- milk\n- café\n".encode(),
        "notes.txt",
        f"`notes.txt` is a text file, not an image: {HINT}",
    ),
    (
        "text starting like a BMP",
        lambda: b"BMW service history, 2019 to 2024\n",
        "car.bmp",
        f"`car.bmp` is a text file, not an image: {HINT}",
    ),
    (
        "login page instead of a download",
        lambda: b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head></html>",
        "image.png",
        f"`image.png` is a web page, not an image: {HINT}",
    ),
    (
        "svg",
        lambda: b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"></svg>',
        "logo.svg",
        f"`logo.svg` is an SVG drawing, not an image: {HINT}",
    ),
    (
        "zip",
        lambda: b"PK\x03\x04\x14\x00\x00\x00\x08\x00" + bytes(40),
        "photos.zip",
        f"`photos.zip` is a ZIP archive or office document, not an image: {HINT}",
    ),
    (
        "mp4",
        lambda: b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41" + bytes(32),
        "clip.mp4",
        f"`clip.mp4` is a video, not an image: {HINT}",
    ),
    (
        "random binary",
        lambda: b"\x00\x01\x02\xfe\xff" + bytes(200),
        "blob.dat",
        f"`blob.dat` is not an image I can read: {HINT}",
    ),
    (
        "heic header and nothing else",
        lambda: b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64),
        "IMG_0001.HEIC",
        "`IMG_0001.HEIC` is damaged or truncated: it could not be read as a HEIC image, "
        "so send the original file again.",
    ),
    (
        "heic cut in half",
        lambda: encode(noise(64, 48), "HEIF")[:300],
        "IMG_0002.HEIC",
        "`IMG_0002.HEIC` is damaged or truncated: it could not be read as a HEIC image, "
        "so send the original file again.",
    ),
    (
        "oversized bytes, refused before decoding",
        lambda: b"\x89PNG\r\n\x1a\n" + bytes(52_400_000 - 8),
        "photo.png",
        "`photo.png` is 52.4 MB; the limit is 20 MB: send a smaller image.",
    ),
    (
        "just over the byte limit",
        lambda: b"\x89PNG\r\n\x1a\n" + bytes(MAX_BYTES - 7),
        "photo.png",
        "`photo.png` is 20.1 MB; the limit is 20 MB: send a smaller image.",
    ),
    (
        "30000x30000 png header",
        lambda: png_header(30000, 30000) + chunk(b"IEND", b""),
        "huge.png",
        "`huge.png` is 30000x30000 pixels; the limit is 50 megapixels.",
    ),
    (
        "64 megapixel png header",
        lambda: png_header(8000, 8000) + chunk(b"IEND", b""),
        "big.png",
        "`big.png` is 8000x8000 pixels; the limit is 50 megapixels.",
    ),
    (
        "png decompression bomb",
        lambda: png_bomb(16000),
        "bomb.png",
        "`bomb.png` is 16000x16000 pixels; the limit is 50 megapixels.",
    ),
    (
        "jpeg claiming 100 megapixels",
        lambda: jpeg_claiming(10000, 10000),
        "wide.jpg",
        "`wide.jpg` is 10000x10000 pixels; the limit is 50 megapixels.",
    ),
    (
        "jpeg bomb past pillow's own limit",
        lambda: jpeg_claiming(30000, 30000),
        "bomb.jpg",
        "`bomb.jpg` has 900 million pixels; the limit is 50 megapixels.",
    ),
    (
        "zero-size png",
        lambda: png_header(0, 10) + chunk(b"IEND", b""),
        "empty.png",
        f"`empty.png` has no pixels (0x10): {HINT}",
    ),
    (
        "zero-size gif",
        lambda: b"GIF89a" + struct.pack("<HH", 0, 0) + b"\x00\x00\x00;",
        "empty.gif",
        f"`empty.gif` has no pixels (0x0): {HINT}",
    ),
    (
        "truncated png",
        lambda: good_png()[:-200],
        "x.png",
        "`x.png` is damaged or truncated: it could not be read as a PNG image, "
        "so send the original file again.",
    ),
    (
        "png that stops before IEND",
        lambda: good_png()[:-12],
        "x.png",
        "`x.png` is damaged or truncated: it could not be read as a PNG image, "
        "so send the original file again.",
    ),
    (
        "png with zeroed pixel data",
        lambda: (lambda d: d[:100] + bytes(200) + d[300:])(good_png()),
        "x.png",
        "`x.png` is damaged or truncated: it could not be read as a PNG image, "
        "so send the original file again.",
    ),
    (
        "png with a text chunk that inflates to 50 MB",
        lambda: (
            lambda d: (
                d[:33]
                + chunk(b"zTXt", b"Comment\x00\x00" + zlib.compress(bytes(50_000_000), 9))
                + d[33:]
            )
        )(good_png()),
        "x.png",
        "`x.png` is damaged or truncated: it could not be read as a PNG image, "
        "so send the original file again.",
    ),
    (
        "truncated jpeg",
        lambda: good_jpeg()[: len(good_jpeg()) // 2],
        "x.jpg",
        "`x.jpg` is damaged or truncated: it could not be read as a JPEG image, "
        "so send the original file again.",
    ),
    (
        "gif header and nothing else",
        lambda: b"GIF89a" + struct.pack("<HH", 10, 10) + b"\x80\x00\x00",
        "x.gif",
        "`x.gif` is damaged or truncated: it could not be read as a GIF image, "
        "so send the original file again.",
    ),
    (
        "webp header and nothing else",
        lambda: b"RIFF\x24\x00\x00\x00WEBPVP8 " + bytes(8),
        "x.webp",
        "`x.webp` is damaged or truncated: it could not be read as a WebP image, "
        "so send the original file again.",
    ),
    (
        "name that was not UTF-8",
        lambda: b"%PDF-1.4\n",
        b"caf\xe9 menu.pdf".decode("utf-8", "surrogateescape"),
        f"`caf\ufffd menu.pdf` is a PDF, not an image: {HINT}",
    ),
    (
        "name with controls, backticks and a bidi override",
        lambda: b"%PDF-1.4\n",
        "a`b\x00\x1b[31m\n\u202efdp.exe",
        f"`a'b[31m fdp.exe` is a PDF, not an image: {HINT}",
    ),
    (
        "very long name",
        lambda: b"%PDF-1.4\n",
        "q" * 500 + ".pdf",
        f"`{'q' * 55}….pdf` is a PDF, not an image: {HINT}",
    ),
]


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize(
    ("data", "name", "message"),
    [pytest.param(make, name, message, id=label) for label, make, name, message in HOSTILE],
)
def test_hostile_input_is_refused_with_one_clear_sentence(
    data: Callable[[], bytes], name: str, message: str
) -> None:
    with pytest.raises(UserFacingError) as caught:
        check(data(), name)
    assert caught.value.message == message
    assert caught.value.detail  # the log line says what exactly went wrong


def test_hostile_table_covers_at_least_twenty_cases() -> None:
    assert len(HOSTILE) >= 20


def test_the_byte_limit_is_checked_before_anything_is_decoded() -> None:
    # a valid image, but one byte over: refused on size, not decoded
    data = good_png()
    with pytest.raises(UserFacingError, match="; the limit is"):
        check(data, "x.png", max_bytes=len(data) - 1)


def test_the_pixel_limit_is_the_callers() -> None:
    with pytest.raises(UserFacingError) as caught:
        check(good_png(), "x.png", max_pixels=64 * 48 - 1)
    assert caught.value.message == "`x.png` is 64x48 pixels; the limit is 0.003071 megapixels."


def test_truncated_images_are_not_loaded_half_grey() -> None:
    # the damaged-file checks above rely on Pillow's default staying off
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


# --- pass-through and conversions ---------------------------------------------------------


def test_good_png_passes_through_byte_for_byte() -> None:
    data = good_png()
    checked = check(data, "x.png")
    assert checked == CheckedImage(data, "image/png", 64, 48, None)


def test_good_jpeg_passes_through_byte_for_byte() -> None:
    data = good_jpeg()
    checked = check(data, "x.jpg")
    assert checked == CheckedImage(data, "image/jpeg", 64, 48, None)


def test_palette_and_16_bit_pngs_pass_through_unchanged() -> None:
    palette = encode(Image.new("P", (10, 10), 3), "PNG")
    deep = encode(Image.new("I;16", (10, 10), 40000), "PNG")
    assert check(palette).data == palette
    assert check(deep).data == deep


def test_opaque_webp_becomes_jpeg() -> None:
    checked = check(encode(noise(40, 30), "WEBP", quality=90), "x.webp")
    assert (checked.mime_type, checked.converted_from) == ("image/jpeg", "WebP")
    assert decode(checked.data).format == "JPEG"
    assert (checked.width, checked.height) == (40, 30) == decode(checked.data).size


def test_webp_with_transparency_becomes_png_keeping_the_alpha() -> None:
    im = Image.new("RGBA", (40, 30), (255, 0, 0, 255))
    im.paste((0, 0, 255, 0), (0, 0, 20, 30))
    checked = check(encode(im, "WEBP", lossless=True), "x.webp")
    assert (checked.mime_type, checked.converted_from) == ("image/png", "WebP")
    out = decode(checked.data)
    assert out.mode == "RGBA"
    assert out.getpixel((5, 5))[3] == 0
    assert out.getpixel((35, 5)) == (255, 0, 0, 255)


def test_rgba_webp_whose_alpha_is_all_opaque_becomes_jpeg() -> None:
    checked = check(encode(Image.new("RGBA", (20, 20), (9, 9, 9, 255)), "WEBP"), "x.webp")
    assert checked.mime_type == "image/jpeg"


def test_animated_gif_becomes_its_first_frame() -> None:
    frames = [Image.new("RGB", (24, 24), colour) for colour in ("red", "blue", "green")]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100)
    checked = check(buffer.getvalue(), "party.gif")
    assert (checked.mime_type, checked.converted_from) == ("image/jpeg", "GIF (first frame)")
    red, green, blue = decode(checked.data).getpixel((12, 12))
    assert red > 240 and green < 16 and blue < 16


def test_gif_with_a_transparent_colour_becomes_png() -> None:
    im = Image.new("P", (16, 16), 1)
    im.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    im.paste(0, (0, 0, 8, 16))
    checked = check(encode(im, "GIF", transparency=0), "x.gif")
    assert (checked.mime_type, checked.converted_from) == ("image/png", "GIF")
    out = decode(checked.data).convert("RGBA")
    assert out.getpixel((2, 2))[3] == 0
    assert out.getpixel((12, 2)) == (255, 0, 0, 255)


def test_bmp_becomes_jpeg() -> None:
    checked = check(encode(noise(30, 20), "BMP"), "scan.bmp")
    assert (checked.mime_type, checked.converted_from) == ("image/jpeg", "BMP")
    assert decode(checked.data).size == (30, 20)


def test_16_bit_grey_tiff_is_scaled_to_8_bits_not_clipped_white() -> None:
    checked = check(encode(Image.new("I;16", (10, 10), 40000), "TIFF"), "scan.tif")
    assert (checked.mime_type, checked.converted_from) == ("image/jpeg", "TIFF")
    assert abs(decode(checked.data).getpixel((5, 5)) - 40000 / 257) <= 2


def test_multi_page_tiff_becomes_its_first_page() -> None:
    pages = [Image.new("RGB", (10, 10), colour) for colour in ("white", "black")]
    buffer = io.BytesIO()
    pages[0].save(buffer, "TIFF", save_all=True, append_images=pages[1:])
    checked = check(buffer.getvalue(), "doc.tiff")
    assert checked.converted_from == "TIFF (first page)"
    assert decode(checked.data).getpixel((5, 5))[0] > 240


def test_cmyk_jpeg_is_converted_to_rgb_jpeg() -> None:
    # Adobe CMYK JPEGs are drawn wrongly by many decoders; the API gets plain RGB.
    checked = check(encode(Image.new("CMYK", (10, 10), (0, 255, 255, 0)), "JPEG"), "print.jpg")
    assert (checked.mime_type, checked.converted_from) == ("image/jpeg", "CMYK JPEG")
    out = decode(checked.data)
    assert out.mode == "RGB"
    red, green, blue = out.getpixel((5, 5))
    assert red > 230 and green < 30 and blue < 30


def test_animated_png_becomes_its_first_frame() -> None:
    frames = [Image.new("RGB", (10, 10), colour) for colour in ("blue", "red")]
    buffer = io.BytesIO()
    frames[0].save(buffer, "PNG", save_all=True, append_images=frames[1:])
    checked = check(buffer.getvalue(), "x.png")
    assert checked.converted_from == "animated PNG (first frame)"
    assert decode(checked.data).getpixel((5, 5))[2] > 240


def test_exif_orientation_is_applied_when_converting() -> None:
    # orientation 6: stored 40 wide and 20 high, shown rotated to 20 wide and 40 high
    checked = check(with_orientation(noise(40, 20), "WEBP", 6), "phone.webp")
    assert (checked.width, checked.height) == (20, 40) == decode(checked.data).size


@pytest.mark.skipif(not features.check("avif"), reason="Pillow built without AVIF")
def test_avif_is_converted() -> None:
    checked = check(encode(noise(16, 16), "AVIF"), "x.avif")
    assert (checked.mime_type, checked.converted_from) == ("image/jpeg", "AVIF")


def test_an_iphone_heic_photo_becomes_jpeg_with_its_orientation_applied() -> None:
    # orientation 6 (a phone held upright): 40 wide and 20 high stored, shown 20x40
    checked = check(with_orientation(noise(40, 20), "HEIF", 6), "IMG_0003.HEIC")
    assert (checked.mime_type, checked.converted_from) == ("image/jpeg", "HEIC")
    assert decode(checked.data).format == "JPEG"
    assert (checked.width, checked.height) == (20, 40) == decode(checked.data).size


def test_a_heic_photo_over_the_pixel_limit_is_refused_from_its_header() -> None:
    with pytest.raises(UserFacingError) as caught:
        check(encode(noise(64, 48), "HEIF"), "IMG_0004.HEIC", max_pixels=64 * 48 - 1)
    assert caught.value.message.startswith("`IMG_0004.HEIC` is 64x48 pixels; the limit is")


async def test_check_reference_runs_the_same_checks_off_the_loop() -> None:
    data = good_png()
    checked = await check_reference(data, name="x.png", max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)
    assert checked.data == data
    with pytest.raises(UserFacingError, match="is a PDF"):
        await check_reference(b"%PDF-", name="r.pdf", max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)


def test_every_checked_image_is_a_type_the_api_accepts() -> None:
    samples = [good_png(), good_jpeg(), encode(noise(8, 8), "WEBP"), encode(noise(8, 8), "GIF")]
    assert {check(s).mime_type for s in samples} <= set(ACCEPTED_MIME_TYPES)


# --- small helpers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "mime"),
    [
        (b"\x89PNG\r\n\x1a\n....", "image/png"),
        (b"\xff\xd8\xff\xe0....", "image/jpeg"),
        (b"GIF87a....", "image/gif"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image/webp"),
        (b"II*\x00....", "image/tiff"),
        (b"MM\x00*....", "image/tiff"),
        (b"BM" + bytes(12) + struct.pack("<I", 40) + bytes(8), "image/bmp"),
        (b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf", "image/avif"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic", "image/heic"),
        (b"\x00\x00\x00\x18ftypmif1\x00\x00\x00\x00mif1heic", "image/heic"),
        (b"%PDF-1.7", None),
        (b"BMW", None),
        (b"", None),
    ],
)
def test_sniff_mime_reads_magic_bytes(data: bytes, mime: str | None) -> None:
    assert sniff_mime(data) == mime


def test_image_dimensions_reads_the_header_only() -> None:
    assert image_dimensions(good_jpeg()) == (64, 48)
    assert image_dimensions(png_header(30000, 20000)) == (30000, 20000)
    with pytest.raises(UserFacingError):
        image_dimensions(b"%PDF-")


@pytest.mark.parametrize(
    ("mime", "extension"),
    [
        ("image/png", ".png"),
        ("image/jpeg", ".jpg"),
        ("image/webp", ".webp"),
        ("image/gif", ".gif"),
        ("application/pdf", ".bin"),
    ],
)
def test_extension_for(mime: str, extension: str) -> None:
    assert extension_for(mime) == extension


def test_printable_name_never_returns_an_empty_name() -> None:
    assert printable_name("\x00\u200b\n") == "the image"


def test_format_megabytes() -> None:
    assert [format_megabytes(n) for n in (20 * MB, 52_400_000, 12_345)] == [
        "20 MB",
        "52.4 MB",
        "12 KB",
    ]


# --- fitting under a byte limit -----------------------------------------------------------


@pytest.fixture(scope="module")
def noisy_4k_png() -> bytes:
    return encode(noise(4096, 4096), "PNG", compress_level=1)


def test_fit_under_shrinks_a_noisy_4096_png_below_10_mb(noisy_4k_png: bytes) -> None:
    assert len(noisy_4k_png) > 40 * MB
    fitted = fit_under_sync(noisy_4k_png, "image/png", 10 * MB)
    assert len(fitted.data) <= 10 * MB
    assert fitted.mime_type == "image/jpeg"
    assert fitted.note is not None
    assert re.fullmatch(
        r"downscaled to (\d+)x\1 and re-encoded as JPEG to fit the 10 MB upload limit",
        fitted.note,
    )
    out = decode(fitted.data)
    assert out.size == (fitted.width, fitted.height)
    assert 2048 <= fitted.width < 4096


def test_fit_under_returns_the_same_bytes_when_they_already_fit() -> None:
    data = good_png()
    fitted = fit_under_sync(data, "image/png", len(data))
    assert fitted.data is data
    assert (fitted.mime_type, fitted.width, fitted.height, fitted.note) == (
        "image/png",
        64,
        48,
        None,
    )


def test_fit_under_re_encodes_as_jpeg_before_downscaling() -> None:
    data = encode(noise(512, 512), "PNG", compress_level=1)
    fitted = fit_under_sync(data, "image/png", 700_000)
    assert fitted.note == "re-encoded as JPEG to fit the 0.7 MB upload limit"
    assert (fitted.mime_type, fitted.width, fitted.height) == ("image/jpeg", 512, 512)
    assert len(fitted.data) <= 700_000


def test_fit_under_keeps_transparency_as_png_and_downscales() -> None:
    data = encode(noise(1024, 1024, "RGBA"), "PNG", compress_level=1)
    fitted = fit_under_sync(data, "image/png", 1 * MB)
    assert fitted.mime_type == "image/png"
    assert (
        fitted.note == f"downscaled to {fitted.width}x{fitted.height} to fit the 1 MB upload limit"
    )
    assert len(fitted.data) <= 1 * MB
    assert decode(fitted.data).mode == "RGBA"


def test_fit_under_applies_exif_orientation_when_it_re_encodes() -> None:
    data = with_orientation(noise(200, 100), "JPEG", 6)
    fitted = fit_under_sync(data, "image/jpeg", len(data) - 1)
    assert (fitted.width, fitted.height) == (100, 200) == decode(fitted.data).size


def test_fit_under_gives_up_instead_of_shrinking_forever() -> None:
    data = encode(noise(600, 600), "PNG", compress_level=1)
    with pytest.raises(UserFacingError) as caught:
        fit_under_sync(data, "image/png", 2_000)
    assert caught.value.message == "The image could not be made smaller than the 2 KB upload limit."


async def test_fit_under_async_matches_the_sync_version() -> None:
    data = encode(noise(256, 256), "PNG", compress_level=1)
    fitted = await fit_under(data, "image/png", 150_000)
    assert len(fitted.data) <= 150_000 and fitted.note


def test_the_attach_hint_names_every_format_that_is_read() -> None:
    for label in ("PNG", "JPEG", "GIF", "WebP", "BMP", "TIFF", "AVIF", "HEIC"):
        assert label in ATTACH_HINT
