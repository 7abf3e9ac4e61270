"""A request's image and audio: read, checked by their bytes, sent as OpenAI content parts.

A payload's type is its magic bytes, never its file name or a client's word for it: a
payload that is not one of the types below, or is over MAX_MEDIA_BYTES, is refused before
anything is planned or sent. Images are the types OpenAI-compatible vision servers decode
(PNG, JPEG, WebP, GIF) and go as an ``image_url`` part with a data URI; each is decoded
once by Pillow, so a truncated or corrupt image is refused here and its pixel count
(which decides its prompt tokens) is known to the plan. Audio is what OpenAI's
``input_audio`` part takes (WAV, MP3). Every problem is one OffloadError.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import struct
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import PlainValidator, WithJsonSchema

from llmoffload.errors import OffloadError

# OpenAI's limit for one image, and the same bound for audio: a request's payload is bounded
MAX_MEDIA_BYTES = 20 * 1024 * 1024
MAX_BASE64_CHARS = 4 * math.ceil(MAX_MEDIA_BYTES / 3)

Kind = Literal["image", "audio"]
ACCEPTED = {"image": "a PNG, JPEG, WebP or GIF image", "audio": "WAV or MP3 audio"}
AUDIO_FORMATS = {"audio/wav": "wav", "audio/mpeg": "mp3"}  # input_audio's format names


@dataclass(frozen=True)
class Media:
    """One payload: its kind, its bytes, the MIME type its bytes showed, and (an image)
    its width times height."""

    kind: Kind
    data: bytes
    mime: str
    pixels: int = 0

    def part(self) -> dict[str, Any]:
        """The chat message content part that carries it."""
        encoded = base64.b64encode(self.data).decode("ascii")
        if self.kind == "image":
            return {"type": "image_url", "image_url": {"url": f"data:{self.mime};base64,{encoded}"}}
        return {
            "type": "input_audio",
            "input_audio": {"data": encoded, "format": AUDIO_FORMATS[self.mime]},
        }


def sniff(data: bytes) -> tuple[Kind, str] | None:
    """The kind and MIME type the bytes start like, or None if no accepted type."""
    riff = data[:4] == b"RIFF"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image", "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image", "image/jpeg"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image", "image/gif"
    if riff and data[8:12] == b"WEBP":
        return "image", "image/webp"
    if riff and data[8:12] == b"WAVE":
        return "audio", "audio/wav"
    # an ID3 tag, or an MPEG audio frame's sync bits with layer III
    if data.startswith(b"ID3") or (len(data) > 1 and data[0] == 0xFF and data[1] & 0xE6 == 0xE2):
        return "audio", "audio/mpeg"
    return None


def too_large(size: int) -> str:
    return f"{size} bytes, over the {MAX_MEDIA_BYTES}-byte limit"


def checked(kind: Kind, data: bytes) -> Media:
    """The payload as Media if it is an accepted type of ``kind`` within the limit."""
    if len(data) > MAX_MEDIA_BYTES:
        raise OffloadError(too_large(len(data)))
    found = sniff(data)
    if found is None:
        raise OffloadError(f"not {ACCEPTED[kind]} (unrecognised bytes)")
    if found[0] != kind:
        raise OffloadError(f"not {ACCEPTED[kind]} (its bytes are {found[1]})")
    return Media(kind, data, found[1], image_pixels(data) if kind == "image" else 0)


def image_pixels(data: bytes) -> int:
    """Width times height of an image that decodes whole."""
    from PIL import Image as Pil  # Pillow only for images

    try:
        with Pil.open(io.BytesIO(data)) as image:
            image.load()  # decodes every pixel: a truncated file fails here
            width, height = image.size
    except (OSError, SyntaxError, ValueError, Pil.DecompressionBombError) as exc:
        raise OffloadError(f"not a readable image ({exc})") from None
    return width * height


def read_media(kind: Kind, path: Path) -> Media:
    """A file's payload; its size is checked before a byte of it is read."""
    try:
        size = path.stat().st_size
        if size > MAX_MEDIA_BYTES:  # the file may be huge: do not read it
            raise OffloadError(too_large(size))
        return checked(kind, path.read_bytes())
    except OSError as exc:
        raise OffloadError(f"{path}: cannot read the {kind}: {exc.strerror or exc}") from None
    except OffloadError as exc:
        raise OffloadError(f"{path}: {exc}") from None


def decode_media(kind: Kind, text: str) -> Media:
    """A base64 payload from a request body; its length is checked before decoding."""
    if len(text) > MAX_BASE64_CHARS:
        raise OffloadError(f"over the {MAX_MEDIA_BYTES}-byte limit")
    try:
        data = base64.b64decode(text, validate=True)
    except binascii.Error:
        raise OffloadError("not valid base64") from None
    return checked(kind, data)


def payload(kind: Kind) -> Callable[[object], Media]:
    """The validator of a request's ``image`` or ``audio`` field: Media inside, base64 in
    JSON, the bytes of a form's file (a refused payload is a validation error with the
    reason, a 422 from the service, whichever way it came)."""

    def parse(value: object) -> Media:
        if isinstance(value, Media) and value.kind == kind:
            return value
        if not isinstance(value, str | bytes):
            raise ValueError(f"must be {ACCEPTED[kind]} as a base64 string")
        try:
            return checked(kind, value) if isinstance(value, bytes) else decode_media(kind, value)
        except OffloadError as exc:
            raise ValueError(str(exc)) from None

    return parse


def schema(kind: Kind) -> WithJsonSchema:
    """The field's JSON schema: a base64 string of an accepted type."""
    return WithJsonSchema(
        {"type": "string", "contentEncoding": "base64", "description": ACCEPTED[kind]}
    )


Image = Annotated[Media, PlainValidator(payload("image")), schema("image")]
Audio = Annotated[Media, PlainValidator(payload("audio")), schema("audio")]


def kinds(modality: str) -> list[str]:
    """The inputs a subtask modality takes: ``image+text`` takes an image and text."""
    return modality.split("+")


def takes(kind: str, modalities: Iterable[str]) -> bool:
    """Whether any of these modalities (a server's, a workflow's) takes a ``kind`` input."""
    return any(kind in kinds(m) for m in modalities)


def pattern_png(width: int, height: int) -> bytes:
    """An RGB PNG of a busy pattern (it does not compress away), for probes and tests:
    signature, IHDR, IDAT, IEND."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    pixels = bytes(7919 * i % 251 for i in range(3 * width))
    rows = b"".join(b"\x00" + pixels[y % 3 :] + pixels[: y % 3] for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )
