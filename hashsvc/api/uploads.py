"""Reading an upload into memory, and only into memory.

Starlette's `request.form()` spools file parts above 1 MB to a temporary file, which
would put abusive media on disk. So the multipart body is parsed here with
python-multipart's low-level streaming `MultipartParser`, whose callbacks receive the
bytes of each part: the `file` part is appended to a bytearray, nothing else is kept,
and no file object of any kind is created. The body-size cap (limits.py) applies to the
stream underneath, so neither path can grow past it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import Request
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect

from hashsvc.api.errors import ApiError
from hashsvc.api.limits import ClientGone

RAW_TYPES = ("application/octet-stream",)
FILE_FIELD = "file"


async def read_upload(request: Request) -> bytes:
    """The upload's bytes from a raw body (image/*, video/*, application/octet-stream) or
    from the multipart field `file`. 415 for any other Content-Type, 422 for a bad multipart."""
    content_type = request.headers.get("content-type", "")
    mime = content_type.split(";", 1)[0].strip().lower()
    if mime.startswith(("image/", "video/")) or mime in RAW_TYPES:
        chunks = bytearray()
        async for chunk in _body(request):
            chunks += chunk
        return bytes(chunks)
    if mime == "multipart/form-data":
        return await _multipart_file(request, content_type)
    raise ApiError(
        415,
        "unsupported_media_type",
        "send the media as image/*, video/*, application/octet-stream, or multipart/form-data "
        f"with a '{FILE_FIELD}' field",
    )


async def _body(request: Request) -> AsyncIterator[bytes]:
    """The body's chunks. A caller that hangs up mid-upload is `ClientGone` (499: logged
    and counted as the client's doing), not an unhandled error: Starlette's
    ClientDisconnect reached the error layer as a 500 with a traceback."""
    try:
        async for chunk in request.stream():
            yield chunk
    except ClientDisconnect:
        raise ClientGone() from None


async def _multipart_file(request: Request, content_type: str) -> bytes:
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise ApiError(422, "invalid_multipart", "multipart/form-data without a boundary")

    state = _Parts()
    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": state.part_begin,
            "on_header_field": state.header_field,
            "on_header_value": state.header_value,
            "on_header_end": state.header_end,
            "on_headers_finished": state.headers_finished,
            "on_part_data": state.part_data,
            "on_end": state.end,
        },
    )
    try:
        async for chunk in _body(request):
            parser.write(chunk)
        parser.finalize()
    except MultipartParseError as e:
        raise ApiError(422, "invalid_multipart", f"malformed multipart body: {e}") from None
    if state.files > 1:
        raise ApiError(422, "invalid_multipart", f"more than one '{FILE_FIELD}' part")
    if state.file is None or not state.ended:
        raise ApiError(422, "invalid_multipart", f"multipart body has no '{FILE_FIELD}' part")
    return bytes(state.file)


class _Parts:
    """Callback state: which part we are in, and the bytes of the `file` part."""

    def __init__(self) -> None:
        self.field = bytearray()
        self.value = bytearray()
        self.disposition = b""
        self.in_file = False
        self.file: bytearray | None = None
        self.files = 0
        self.ended = False

    def part_begin(self) -> None:
        self.disposition = b""
        self.in_file = False

    def header_field(self, data: bytes, start: int, end: int) -> None:
        self.field += data[start:end]

    def header_value(self, data: bytes, start: int, end: int) -> None:
        self.value += data[start:end]

    def header_end(self) -> None:
        if bytes(self.field).lower() == b"content-disposition":
            self.disposition = bytes(self.value)
        self.field.clear()
        self.value.clear()

    def headers_finished(self) -> None:
        _, params = parse_options_header(self.disposition)
        if params.get(b"name") == FILE_FIELD.encode():
            self.in_file = True
            self.files += 1
            self.file = bytearray()

    def part_data(self, data: bytes, start: int, end: int) -> None:
        if self.in_file and self.file is not None:
            self.file += data[start:end]

    def end(self) -> None:
        self.ended = True
