"""Checking, converting and fitting images (Pillow), with CPU work kept off the event loop."""

from __future__ import annotations

import asyncio
import io
import math
import re
import struct
import unicodedata
from dataclasses import dataclass

import pillow_heif
from PIL import Image, ImageOps, features

from core.errors import UserFacingError

pillow_heif.register_heif_opener()

# What the image API takes as inlineData.
ACCEPTED_MIME_TYPES = ("image/png", "image/jpeg")

# Byte sizes in messages and limits are decimal megabytes, as the chat platforms show them.
MB = 1_000_000

CONVERTED_JPEG_QUALITY = 90
FIT_JPEG_QUALITIES = (92, 85, 75)
FIT_DOWNSCALE_QUALITY = 85
FIT_MIN_SIDE = 256
NAME_MAX_CHARS = 60

# Only these decoders ever see untrusted bytes. Pillow can open many more formats (EPS even
# runs Ghostscript); sniffing first and naming the one plugin keeps that surface small.
_PILLOW_FORMAT = {
    "image/png": "PNG",
    "image/jpeg": "JPEG",
    "image/gif": "GIF",
    "image/webp": "WEBP",
    "image/bmp": "BMP",
    "image/tiff": "TIFF",
    "image/avif": "AVIF",
    "image/heic": "HEIF",  # pillow-heif's plugin, for the photos iPhones take
    "image/heif": "HEIF",
}
_LABEL = {
    "image/png": "PNG",
    "image/jpeg": "JPEG",
    "image/gif": "GIF",
    "image/webp": "WebP",
    "image/bmp": "BMP",
    "image/tiff": "TIFF",
    "image/avif": "AVIF",
    "image/heic": "HEIC",
    "image/heif": "HEIF",
}


def _formats() -> str:
    labels = list(dict.fromkeys(_LABEL.values()))
    return ", ".join(labels[:-1]) + f" or {labels[-1]}"


# every format read is named, so the hint never turns away what would have worked
ATTACH_HINT = f"attach a {_formats()} image."

_EXTENSION = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/webp": ".webp",
    "image/gif": ".gif",
}
_HEIC_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs"}
_AVIF_BRANDS = {b"avif", b"avis"}
_VIDEO_BRANDS = {b"isom", b"iso2", b"mp41", b"mp42", b"avc1", b"M4V ", b"qt  ", b"3gp4", b"3gp5"}
_BMP_HEADER_SIZES = {12, 40, 52, 56, 64, 108, 124}


@dataclass(frozen=True)
class CheckedImage:
    data: bytes
    mime_type: str
    # as stored: a JPEG passed through unchanged may still carry an EXIF rotation
    width: int
    height: int
    converted_from: str | None  # e.g. "WebP", "GIF (first frame)"; None when passed through


@dataclass(frozen=True)
class FittedImage:
    data: bytes
    mime_type: str
    width: int
    height: int
    note: str | None  # None when nothing changed


# --- small pure helpers -------------------------------------------------------------------


def sniff_mime(data: bytes) -> str | None:
    """The image type the magic bytes announce, without decoding; None when not an image."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data.startswith((b"II*\x00", b"MM\x00*")):
        return "image/tiff"
    # "BM" alone is too weak (a text file can start with it); the DIB header size must fit.
    if data[:2] == b"BM" and len(data) >= 18:
        if struct.unpack_from("<I", data, 14)[0] in _BMP_HEADER_SIZES:
            return "image/bmp"
    if data[4:8] == b"ftyp":
        brands = _ftyp_brands(data)
        if brands & _AVIF_BRANDS and data[8:12] not in _HEIC_BRANDS:
            return "image/avif"
        if brands & _HEIC_BRANDS:
            return "image/heic"
        if brands & {b"mif1", b"msf1"}:
            return "image/heif"
    return None


def extension_for(mime_type: str) -> str:
    return _EXTENSION.get(mime_type, ".bin")


def format_megabytes(n_bytes: int | float, *, up: bool = False) -> str:
    """`20 MB`, `52.4 MB`, `12 KB`: one decimal at most, none when it would be `.0`.

    With `up`, rounded up, so a size just over a limit never reads as equal to it.
    """
    if n_bytes < 100_000:
        kilobytes = math.ceil(n_bytes / 1000) if up else round(n_bytes / 1000)
        return f"{max(1, kilobytes)} KB"
    value = (math.ceil(n_bytes / 100_000) if up else round(n_bytes / 100_000)) / 10
    return f"{int(value)} MB" if value.is_integer() else f"{value:.1f} MB"


def printable_name(name: str) -> str:
    """A file name safe to show in chat: printable, one line, no backticks, not too long."""
    chars: list[str] = []
    for char in name:
        if 0xD800 <= ord(char) <= 0xDFFF:
            # a byte that was not UTF-8, carried as a surrogate escape
            chars.append("\ufffd")
            continue
        category = unicodedata.category(char)
        if category in ("Zl", "Zp") or char in "\t\n\r":
            chars.append(" ")
        elif category.startswith("C"):
            # control, format (bidi overrides), private use and unassigned characters
            continue
        else:
            chars.append("'" if char == "`" else char)
    clean = " ".join("".join(chars).split())
    if not clean:
        return "the image"
    if len(clean) > NAME_MAX_CHARS:
        stem, dot, suffix = clean.rpartition(".")
        if dot and stem and 0 < len(suffix) <= 8:
            keep = NAME_MAX_CHARS - len(suffix) - 2
            clean = f"{clean[:keep]}….{suffix}"
        else:
            clean = clean[: NAME_MAX_CHARS - 1] + "…"
    return clean


def image_dimensions(data: bytes) -> tuple[int, int]:
    """Width and height from the header, without decoding the pixels."""
    mime = sniff_mime(data)
    declared = _declared_size(data, mime)
    if declared is not None:
        return declared
    if mime not in _PILLOW_FORMAT:
        raise UserFacingError("That file is not an image I can read.", detail=f"mime={mime}")
    try:
        with Image.open(io.BytesIO(data), formats=[_PILLOW_FORMAT[mime]]) as im:
            return im.size
    except Exception as exc:
        raise UserFacingError(
            "That image is damaged or too large to read.", detail=f"{type(exc).__name__}: {exc}"
        ) from exc


# --- checking references ------------------------------------------------------------------


async def check_reference(
    data: bytes, *, name: str, max_bytes: int, max_pixels: int
) -> CheckedImage:
    return await asyncio.to_thread(
        check_reference_sync, data, name=name, max_bytes=max_bytes, max_pixels=max_pixels
    )


def check_reference_sync(
    data: bytes, *, name: str, max_bytes: int, max_pixels: int
) -> CheckedImage:
    """Accept an uploaded image as a reference: PNG and JPEG as they are, others converted.

    Raises UserFacingError naming the file for anything too big, not an image, damaged or
    with too many pixels. Pixel counts are checked from the header before any decoding.
    """
    shown = f"`{printable_name(name)}`"
    log_name = repr(name)[:200]
    if len(data) > max_bytes:
        raise UserFacingError(
            f"{shown} is {format_megabytes(len(data), up=True)}; the limit is "
            f"{format_megabytes(max_bytes)}: send a smaller image.",
            detail=f"reference {log_name}: {len(data)} bytes > {max_bytes}",
        )
    if not data:
        raise UserFacingError(
            f"{shown} is an empty file, not an image: {ATTACH_HINT}",
            detail=f"reference {log_name}: 0 bytes",
        )
    mime = sniff_mime(data)
    if mime == "image/avif" and not features.check("avif"):
        raise UserFacingError(
            f"{shown} is a {_LABEL.get(mime or '', 'photo')} photo, which I cannot read: "
            "send it as a JPEG or PNG instead.",
            detail=f"reference {log_name}: {mime} not supported",
        )
    if mime is None:
        kind = _describe_non_image(data)
        message = (
            f"{shown} is {kind}, not an image: {ATTACH_HINT}"
            if kind
            else f"{shown} is not an image I can read: {ATTACH_HINT}"
        )
        raise UserFacingError(
            message, detail=f"reference {log_name}: no image signature, starts {data[:16]!r}"
        )

    declared = _declared_size(data, mime)
    if declared is not None:
        _check_pixels(declared, shown, log_name, max_pixels)
    try:
        return _decode_reference(data, mime, shown, log_name, max_pixels)
    except UserFacingError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's own guard fired on the header, before our check could see the size (the
        # warning only arrives as an exception when warnings are turned into errors).
        found = re.search(r"\((\d+) pixels\)", str(exc))
        count = f"{int(found.group(1)) / 1_000_000:,.0f} million" if found else "too many"
        raise UserFacingError(
            f"{shown} has {count} pixels; the limit is {_megapixels(max_pixels)}.",
            detail=f"reference {log_name}: {exc}",
        ) from exc
    except Exception as exc:
        # A hostile file can make any decoder raise almost anything (OSError, SyntaxError,
        # ValueError, struct.error, EOFError...): all of it means the file is not usable.
        raise UserFacingError(
            f"{shown} is damaged or truncated: it could not be read as a "
            f"{_LABEL[mime]} image, so send the original file again.",
            detail=f"reference {log_name}: {type(exc).__name__}: {exc}",
        ) from exc


def _decode_reference(
    data: bytes, mime: str, shown: str, log_name: str, max_pixels: int
) -> CheckedImage:
    # load() is what finds truncated and corrupt data; this relies on Pillow's default
    # ImageFile.LOAD_TRUNCATED_IMAGES = False, which nothing in imagebot changes.
    with Image.open(io.BytesIO(data), formats=[_PILLOW_FORMAT[mime]]) as im:
        _check_pixels(im.size, shown, log_name, max_pixels)
        width, height = im.size
        several = bool(getattr(im, "is_animated", False))
        if im.format in ("JPEG", "MPO"):
            if im.mode != "CMYK":
                # Decoding at 1/8 scale still reads every entropy-coded byte, so truncation
                # is found, with 1/64 of the memory.
                im.draft(im.mode, (max(1, width // 8), max(1, height // 8)))
                im.load()
                return CheckedImage(data, "image/jpeg", width, height, None)
            label = "CMYK JPEG"
        elif im.format == "PNG":
            if not several:
                im.load()
                if not _png_complete(data):
                    raise OSError("PNG ends before its IEND chunk")
                return CheckedImage(data, "image/png", width, height, None)
            label = "animated PNG"
        else:
            label = _LABEL[mime]
        if several:
            label += " (first page)" if mime == "image/tiff" else " (first frame)"
        im.seek(0)
        im.load()
        # CMYK JPEGs are converted too: Adobe's inverted CMYK is mis-drawn by many decoders,
        # and the model works in RGB anyway.
        flat = _flatten(im)
        out, out_mime = _encode_flat(flat, CONVERTED_JPEG_QUALITY, icc=_rgb_icc(im))
        return CheckedImage(out, out_mime, flat.width, flat.height, label)


def _check_pixels(size: tuple[int, int], shown: str, log_name: str, max_pixels: int) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise UserFacingError(
            f"{shown} has no pixels ({width}x{height}): {ATTACH_HINT}",
            detail=f"reference {log_name}: size {width}x{height}",
        )
    if width * height > max_pixels:
        raise UserFacingError(
            f"{shown} is {width}x{height} pixels; the limit is {_megapixels(max_pixels)}.",
            detail=f"reference {log_name}: {width * height} pixels > {max_pixels}",
        )


# --- fitting under a byte limit -----------------------------------------------------------


async def fit_under(data: bytes, mime_type: str, max_bytes: int) -> FittedImage:
    return await asyncio.to_thread(fit_under_sync, data, mime_type, max_bytes)


def fit_under_sync(data: bytes, mime_type: str, max_bytes: int) -> FittedImage:
    """The image unchanged when it fits in `max_bytes`, else re-encoded and/or downscaled.

    Order, cheapest first: re-encoding at full size keeps every pixel and costs one encode
    per quality step, so opaque images try JPEG at falling quality before anything is
    resized. Images with real transparency must stay PNG, and re-saving a PNG as PNG rarely
    gains much but costs seconds on a big image, so they go straight to downscaling. Each
    downscale step is sized from the last result (bytes grow roughly with the pixel count)
    so one or two encodes usually suffice, and it never shrinks the longest side below
    FIT_MIN_SIDE pixels.
    """
    if len(data) <= max_bytes:
        width, height = image_dimensions(data)
        return FittedImage(data, mime_type, width, height, None)
    limit = format_megabytes(max_bytes)
    sniffed = sniff_mime(data) or mime_type
    try:
        with Image.open(io.BytesIO(data), formats=[_PILLOW_FORMAT[sniffed]]) as im:
            im.seek(0)
            im.load()
            flat = _flatten(im)
            icc = _rgb_icc(im)
    except Exception as exc:
        raise UserFacingError(
            "The image could not be read to make it smaller.",
            detail=f"fit_under: {type(exc).__name__}: {exc}",
        ) from exc

    opaque = flat.mode in ("RGB", "L")
    last_size = len(data)
    if opaque:
        for quality in FIT_JPEG_QUALITIES:
            out, out_mime = _encode_flat(flat, quality, icc=icc)
            if len(out) <= max_bytes:
                how = (
                    "re-encoded at a lower JPEG quality"
                    if mime_type == "image/jpeg"
                    else "re-encoded as JPEG"
                )
                note = f"{how} to fit the {limit} upload limit"
                return FittedImage(out, out_mime, flat.width, flat.height, note)
            last_size = len(out)
            # Lower quality rarely saves more than a third; far over, go to downscaling.
            if last_size > 1.6 * max_bytes:
                break

    current = flat
    while True:
        factor = min(0.75, 0.85 * math.sqrt(max_bytes / last_size))
        width = round(current.width * factor)
        height = round(current.height * factor)
        if max(width, height) < FIT_MIN_SIDE or min(width, height) < 1:
            raise UserFacingError(
                f"The image could not be made smaller than the {limit} upload limit.",
                detail=f"fit_under: still {last_size} bytes at {current.size}, limit {max_bytes}",
            )
        current = flat.resize((width, height), Image.Resampling.LANCZOS, reducing_gap=2.0)
        out, out_mime = _encode_flat(current, FIT_DOWNSCALE_QUALITY, icc=icc)
        if len(out) <= max_bytes:
            changed = " and re-encoded as JPEG" if out_mime != mime_type else ""
            note = f"downscaled to {width}x{height}{changed} to fit the {limit} upload limit"
            return FittedImage(out, out_mime, width, height, note)
        last_size = len(out)


# --- decoding internals -------------------------------------------------------------------


def _flatten(im: Image.Image) -> Image.Image:
    """The loaded frame upright, as 8-bit RGB, RGBA, L or LA; alpha only if it is used."""
    try:
        ImageOps.exif_transpose(im, in_place=True)
    except Exception:
        pass  # unreadable EXIF: keep the pixels as stored rather than refuse the image
    mode = im.mode
    has_tr = "transparency" in im.info
    if mode in ("RGB", "RGBA", "L", "LA"):
        out = im
        if has_tr and mode in ("RGB", "L"):
            out = im.convert("RGBA" if mode == "RGB" else "LA")
    elif mode == "1":
        out = im.convert("L")
    elif mode in ("P", "PA"):
        out = im.convert("RGBA" if has_tr or mode == "PA" else "RGB")
    elif mode.startswith("I") or mode == "F":
        out = _to_8bit_gray(im)
    elif mode in ("La",):
        out = im.convert("LA")
    elif "A" in mode or "a" in mode:
        out = im.convert("RGBA")
    else:  # CMYK, YCbCr, LAB, HSV, RGBX, ...
        out = im.convert("RGB")
    if out.mode in ("RGBA", "LA") and out.getchannel("A").getextrema()[0] == 255:
        out = out.convert("RGB" if out.mode == "RGBA" else "L")
    return out


def _to_8bit_gray(im: Image.Image) -> Image.Image:
    # A plain convert("L") clips 16-bit values at 255, turning most pictures white.
    low, high = im.getextrema()
    if high <= 255:
        scale = 1.0
    elif high <= 65535:
        scale = 1 / 257
    else:
        scale = 255 / high
    floats = im.convert("F")
    if low < 0:
        floats = floats.point(lambda v: v - low)
    return floats.point(lambda v: v * scale).convert("L")


def _rgb_icc(im: Image.Image) -> bytes | None:
    # A colour profile only still applies when the colour space did not change.
    if im.mode in ("RGB", "RGBA", "P", "PA"):
        profile = im.info.get("icc_profile")
        return profile if isinstance(profile, bytes) else None
    return None


def _encode_flat(im: Image.Image, quality: int, *, icc: bytes | None) -> tuple[bytes, str]:
    buffer = io.BytesIO()
    extra = {"icc_profile": icc} if icc and im.mode in ("RGB", "RGBA") else {}
    if im.mode in ("RGBA", "LA"):
        im.save(buffer, "PNG", **extra)
        return buffer.getvalue(), "image/png"
    im.save(buffer, "JPEG", quality=quality, **extra)
    return buffer.getvalue(), "image/jpeg"


def _png_complete(data: bytes) -> bool:
    """True when the chunk chain reaches IEND (Pillow loads a PNG that stops after IDAT)."""
    offset = 8
    while offset + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, offset)
        if kind == b"IEND":
            return True
        offset += 12 + length
    return False


def _declared_size(data: bytes, mime: str | None) -> tuple[int, int] | None:
    """Width and height straight from a PNG, GIF or BMP header, before Pillow sees the file.

    Pillow refuses zero sizes without saying so and warns on big ones; reading these common
    headers first gives the clear message instead.
    """
    if mime == "image/png" and len(data) >= 24 and data[12:16] == b"IHDR":
        width, height = struct.unpack_from(">II", data, 16)
        return width, height
    if mime == "image/gif" and len(data) >= 10:
        width, height = struct.unpack_from("<HH", data, 6)
        return width, height
    if mime == "image/bmp" and len(data) >= 26:
        if struct.unpack_from("<I", data, 14)[0] == 12:
            width, height = struct.unpack_from("<HH", data, 18)
        else:
            width, height = struct.unpack_from("<ii", data, 18)
        return abs(width), abs(height)
    return None


def _ftyp_brands(data: bytes) -> set[bytes]:
    box_size = struct.unpack_from(">I", data, 0)[0] if len(data) >= 4 else 0
    end = min(len(data), box_size if 16 <= box_size <= 4096 else 64)
    brands = {data[8:12]}
    brands.update(data[i : i + 4] for i in range(16, end - 3, 4))
    return brands


def _describe_non_image(data: bytes) -> str | None:
    head = data[:512]
    if head.startswith(b"%PDF"):
        return "a PDF"
    if head.startswith(b"PK\x03\x04"):
        return "a ZIP archive or office document"
    if head[4:8] == b"ftyp" and _ftyp_brands(data) & _VIDEO_BRANDS:
        return "a video"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "a video"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        return "a web page"
    if text.startswith(b"<svg") or (text.startswith(b"<?xml") and b"<svg" in text):
        return "an SVG drawing"
    try:
        decoded = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # the sample may stop in the middle of a multi-byte character
        if exc.start < len(head) - 3:
            return None
        decoded = head[: exc.start].decode("utf-8")
    if decoded and all(c.isprintable() or c in "\t\r\n" for c in decoded):
        return "a text file"
    return None


def _megapixels(max_pixels: int) -> str:
    return f"{max_pixels / 1_000_000:g} megapixels"
