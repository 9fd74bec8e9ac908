from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hashsvc.errors import InvalidHash
from hashsvc.signals import Hash, SignalType


@pytest.mark.parametrize("signal", list(SignalType))
@given(data=st.data())
def test_hex_round_trip_is_lossless(signal: SignalType, data: st.DataObject) -> None:
    raw = data.draw(st.binary(min_size=signal.bits // 8, max_size=signal.bits // 8))
    h = Hash(signal, raw)
    assert Hash.from_hex(signal, h.hex) == h
    assert Hash.from_hex(signal, h.hex.upper()) == h
    assert len(h.hex) == signal.hex_length
    assert Hash.from_bits(signal, h.bits()) == h


@given(a=st.binary(min_size=32, max_size=32), b=st.binary(min_size=32, max_size=32))
def test_subtraction_is_hamming_distance(a: bytes, b: bytes) -> None:
    ha, hb = Hash(SignalType.PDQ, a), Hash(SignalType.PDQ, b)
    expected = sum(bin(x ^ y).count("1") for x, y in zip(a, b, strict=True))
    assert ha - hb == expected == hb - ha
    assert ha - ha == 0


def test_pdq_hex_is_packbits_of_the_bit_vector() -> None:
    bits = np.zeros(256, dtype=np.uint8)
    bits[0] = 1  # MSB of the first byte
    bits[255] = 1
    h = Hash.from_bits(SignalType.PDQ, bits)
    assert h.hex == np.packbits(bits).tobytes().hex()
    assert h.hex.startswith("80") and h.hex.endswith("01")


@pytest.mark.parametrize(
    ("signal", "text", "message"),
    [
        ("pdq", "ab" * 31, "64 hex characters, got 62"),
        ("pdq", "ab" * 33, "64 hex characters, got 66"),
        ("phash", "zz" + "0" * 14, "non-hex character 'z'"),
        ("md5", "", "32 hex characters, got 0"),
        ("sha256", "0x" + "0" * 62, "non-hex character 'x'"),
        ("whash", "00", "unknown signal type 'whash'"),
    ],
)
def test_malformed_hex_raises_a_clear_error(signal: str, text: str, message: str) -> None:
    with pytest.raises(InvalidHash, match=message):
        Hash.from_hex(signal, text)


def test_distance_between_signal_types_is_refused() -> None:
    with pytest.raises(TypeError):
        _ = Hash(SignalType.PDQ, bytes(32)) - Hash(SignalType.SHA256, bytes(32))


def test_wrong_byte_length_is_refused() -> None:
    with pytest.raises(InvalidHash):
        Hash(SignalType.PHASH, bytes(9))
