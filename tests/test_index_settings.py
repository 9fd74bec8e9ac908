"""HASHSVC_INDEX_INLINE_MAX_MB: validated, and carried to every index the service builds or
loads (the search core's own tests cover what the bound selects)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from hashsvc.config import Settings
from hashsvc.errors import ConfigError
from hashsvc.hashlist import ListEntry
from hashsvc.index_sync import IndexSet
from hashsvc.search.index import INLINE_MAX_BYTES
from hashsvc.signals import Hash, SignalType
from hashsvc.store import Store


def test_setting_is_read_from_the_environment_and_validated() -> None:
    assert Settings.from_env({}).index_inline_max_mb << 20 == INLINE_MAX_BYTES
    assert Settings.from_env({"HASHSVC_INDEX_INLINE_MAX_MB": "0"}).index_inline_max_mb == 0
    with pytest.raises(ConfigError, match="INDEX_INLINE_MAX_MB"):
        Settings.from_env({"HASHSVC_INDEX_INLINE_MAX_MB": "-1"})


@pytest.mark.parametrize("bound", [0, 64 << 20])
def test_index_set_builds_and_loads_with_the_bound(tmp_path: Path, bound: int) -> None:
    rng = random.Random(3)
    with Store.open(tmp_path / "hashsvc.db") as store:
        store.create_list("a", "block")
        entries = [
            ListEntry(Hash(sig, rng.randbytes(sig.bits // 8)), external_id=f"x{i}", line=i + 1)
            for i, sig in enumerate([SignalType.PDQ, SignalType.PHASH] * 20)
        ]
        store.import_entries("a", entries, source_name="a.csv", file_sha256="")
        built = IndexSet.open(store, tmp_path, inline_max_bytes=bound)
        assert {ix.inline_max_bytes for ix in built.indexes.values()} == {bound}
        built.save()
        loaded = IndexSet.open(store, tmp_path, inline_max_bytes=bound)
        assert {ix.inline_max_bytes for ix in loaded.indexes.values()} == {bound}
        probe = entries[0].hash
        found = loaded.search(probe, 0)[0]
        assert np.asarray(found).size == 1  # the loaded index still answers
