"""Signal types and the hash value object.

A signal type is one kind of hash a list can hold (`pdq`, `phash`, `md5`, `sha256`). A
`Hash` is an immutable value: its hex form round-trips losslessly, and `a - b` is the
Hamming distance, so matching code reads like the maths it does.

Hex is the industry format: the bit vector packed most-significant-bit first
(`np.packbits(bits).tobytes().hex()`), which is what ThreatExchange, HMA and
`imagehash`'s `str()` produce. Parsing is strict (exact length, hex digits only) because
this is the boundary where list files and API bodies enter.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from hashsvc.errors import InvalidHash


class SignalType(StrEnum):
    """The kinds of hash a trusted list can hold."""

    PDQ = "pdq"
    PHASH = "phash"
    MD5 = "md5"
    SHA256 = "sha256"
    #: a video's vPDQ hash (frame PDQs, see vpdq.py); the entry's own value is the
    #: SHA-256 of its frame lines, the frames live beside it in the store
    VPDQ = "vpdq"

    @property
    def bits(self) -> int:
        return _BITS[self]

    @property
    def hex_length(self) -> int:
        return self.bits // 4

    @property
    def perceptual(self) -> bool:
        """Perceptual hashes match by Hamming distance; cryptographic ones only exactly."""
        return self in (SignalType.PDQ, SignalType.PHASH)

    @property
    def default_threshold(self) -> int:
        """Largest Hamming distance that still counts as a match, by default.

        PDQ 31 is Meta's recommended threshold. pHash 10 keeps unrelated photos out: on
        the benign benchmark photos unrelated pairs sit at 32 +/- 5 bits and none came
        closer than 18 (see bench/RESULTS.md), while re-encodes and resizes stay below 6.
        Cryptographic hashes match only when identical.
        """
        return _DEFAULT_THRESHOLD[self]

    @classmethod
    def parse(cls, text: str) -> SignalType:
        try:
            return cls(text.strip().lower())
        except ValueError:
            known = ", ".join(t.value for t in cls)
            raise InvalidHash(f"unknown signal type {text!r} (known: {known})") from None


_BITS = {SignalType.PDQ: 256, SignalType.PHASH: 64, SignalType.MD5: 128, SignalType.SHA256: 256,
         SignalType.VPDQ: 256}  # fmt: skip
# vPDQ: the largest distance between two frame PDQs that still counts (PDQ's own 31)
_DEFAULT_THRESHOLD = {SignalType.PDQ: 31, SignalType.PHASH: 6, SignalType.MD5: 0,
                      SignalType.SHA256: 0, SignalType.VPDQ: 31}  # fmt: skip
_HEX_DIGITS = frozenset(string.hexdigits)

# popcount of every byte value, for Hamming distance on small byte strings
_POPCOUNT8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


@dataclass(frozen=True, slots=True)
class Hash:
    """One hash of one signal type, held as raw bytes (MSB-first bit order)."""

    signal: SignalType
    value: bytes

    def __post_init__(self) -> None:
        if len(self.value) * 8 != self.signal.bits:
            raise InvalidHash(
                f"{self.signal} hash must be {self.signal.bits} bits, got {len(self.value) * 8}"
            )

    @classmethod
    def from_hex(cls, signal: SignalType | str, text: str) -> Hash:
        """Parse hex strictly: exact length for the type, hex digits only, any case."""
        sig = signal if isinstance(signal, SignalType) else SignalType.parse(signal)
        if not isinstance(text, str):
            raise InvalidHash(f"{sig} hash must be a hex string, got {type(text).__name__}")
        t = text.strip()
        if len(t) != sig.hex_length:
            raise InvalidHash(f"{sig} hash must be {sig.hex_length} hex characters, got {len(t)}")
        if not _HEX_DIGITS.issuperset(t):
            bad = next(c for c in t if c not in _HEX_DIGITS)
            raise InvalidHash(f"{sig} hash contains a non-hex character {bad!r}")
        return cls(sig, bytes.fromhex(t))

    @classmethod
    def from_bits(cls, signal: SignalType, bits: np.ndarray) -> Hash:
        """From a 0/1 vector in MSB-first order (what pdqhash and imagehash produce)."""
        arr = np.asarray(bits).astype(bool).ravel()
        if arr.size != signal.bits:
            raise InvalidHash(f"{signal} hash must be {signal.bits} bits, got {arr.size}")
        return cls(signal, np.packbits(arr).tobytes())

    @property
    def hex(self) -> str:
        return self.value.hex()

    def bits(self) -> np.ndarray:
        """The 0/1 vector, MSB first (inverse of `from_bits`)."""
        return np.unpackbits(np.frombuffer(self.value, dtype=np.uint8))

    def codes(self) -> np.ndarray:
        """The bytes as a uint8 array: the layout FAISS and the search index use."""
        return np.frombuffer(self.value, dtype=np.uint8)

    def __sub__(self, other: object) -> int:
        """Hamming distance; defined only between hashes of the same signal type."""
        if not isinstance(other, Hash):
            return NotImplemented
        if other.signal is not self.signal:
            raise TypeError(f"cannot compare a {self.signal} hash with a {other.signal} hash")
        x = np.bitwise_xor(self.codes(), other.codes())
        return int(_POPCOUNT8[x].sum())

    def __str__(self) -> str:
        return self.hex

    def __repr__(self) -> str:
        return f"Hash({self.signal.value}, {self.hex})"
