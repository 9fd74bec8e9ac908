"""Which video container these bytes are, from their first bytes: the container sniff.

Its own module, importing nothing: every adapter asks it about every upload (videos go
to `hashsvc.video`, everything else to the image path), and `hashsvc.scan` imports it,
so the scan's main process does too, which only walks, stats and writes results. From
`hashsvc.video` it took numpy, Pillow and the hashing code along (~0.2 s of that
process's start-up). `hashsvc.video` re-exports both functions.
"""

from __future__ import annotations


def container_of(data: bytes | memoryview) -> str | None:
    """The FFmpeg demuxer for these bytes, or None when they are no video we accept.

    Cheap (looks at a few bytes, imports nothing): adapters call it on every upload to
    route videos to `hashsvc.video` and everything else to the image path.
    """
    head = bytes(data[:16])
    if len(head) < 12:
        return None
    box = head[4:8]
    if box == b"ftyp":
        brand = head[8:12]
        # HEIF/AVIF stills use ftyp too: those are images
        if brand in (b"avif", b"avis", b"heic", b"heix", b"mif1", b"msf1", b"heim", b"heis"):
            return None
        return "mov"
    if box in (b"moov", b"mdat", b"wide", b"free", b"skip") and head[:4] != b"RIFF":
        return "mov"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "matroska"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    if head[0] == 0x47 and len(data) >= 377 and data[188] == 0x47 and data[376] == 0x47:
        return "mpegts"
    return None


def is_video(data: bytes | memoryview) -> bool:
    return container_of(data) is not None
