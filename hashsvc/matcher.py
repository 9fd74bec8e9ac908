"""The core service object: hashes -> search -> per-list thresholds -> verdict.

Every adapter (CLI, API, scan) asks this one object, so the verdict rule and the privacy
rule about what a match reveals are applied in one place. It owns no I/O beyond the
store and the indexes it is given.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import numpy as np

from hashsvc import hashing, video, vpdq
from hashsvc.config import Settings
from hashsvc.hashing import DIHEDRAL_NAMES, HashPath, MediaHashes
from hashsvc.index_sync import IndexSet
from hashsvc.policy import Verdict, verdict
from hashsvc.signals import Hash, SignalType
from hashsvc.store import Action, EntryMeta, Store
from hashsvc.video import VideoHashes
from hashsvc.vpdq import unique_hashes

#: The pixel transform each dihedral variant stands for: the variant's hash approximates
#: the PDQ of the image transformed this way (checked against pdqhash, `confirm_dihedral`)
_TRANSFORMS: dict[str, Any] = {
    "rotate90": lambda a: np.rot90(a, 1),
    "rotate180": lambda a: np.rot90(a, 2),
    "rotate270": lambda a: np.rot90(a, -1),
    "flipx": lambda a: a[::-1],
    "flipy": lambda a: a[:, ::-1],
    "flip_plus1": lambda a: np.swapaxes(a, 0, 1),
    "flip_minus1": lambda a: np.swapaxes(np.rot90(a, 2), 0, 1),
}

#: Labels of a match that did not come from the query's own hash and the entry's own hash
TRIMMED = "trimmed"  # the query's content inside added borders / caption bars
CROP = "crop"  # one of the entry's enrollment crops
#: a PDQ beyond the list's threshold, accepted because the same item's pHash also
#: matches (Settings.corroborate_*)
CORROBORATED = "corroborated"

Hit = tuple[SignalType, int, str | None]  # (signal, distance, variant label or None)
Found = tuple[np.ndarray, np.ndarray, np.ndarray]  # entry ids, distances, slots


class _Plan(NamedTuple):
    queries: list[tuple[Hash, str | None]]
    notes: tuple[str, ...]


@dataclass(frozen=True)
class Match:
    """One matched list entry. `distance` and the list's own metadata are shown only to
    callers allowed to see them (see `to_json`)."""

    list_name: str
    entry_id: int
    signal: SignalType
    distance: int
    action: Action
    category: str
    external_id: str
    #: how the hit was made when not hash-to-hash: a dihedral name ("flipy"), "trimmed"
    #: (content inside added borders), "crop" (an enrollment crop), or "<a>+crop"
    variant: str | None = None
    #: vPDQ matches: percent of the upload's unique frames that matched this video, and
    #: of this video's unique frames that were hit
    query_percent: float | None = None
    compared_percent: float | None = None

    def to_json(self, *, distances: bool = True, metadata: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "list": self.list_name,
            "entry_id": self.entry_id,
            "signal_type": self.signal.value,
        }
        if distances:
            out["distance"] = self.distance
            if self.variant:
                out["variant"] = self.variant
            if self.query_percent is not None:
                out["query_percent"] = round(self.query_percent, 1)
                out["compared_percent"] = round(self.compared_percent or 0.0, 1)
        # list metadata beyond name and entry id is admin-only (DESIGN.md privacy rules)
        if metadata and self.category:
            out["category"] = self.category
        if metadata and self.external_id:
            out["external_id"] = self.external_id
        return out


#: What an upload hashes to: an image's hashes or a video's
Hashes = MediaHashes | VideoHashes


@dataclass(frozen=True)
class MatchResult:
    verdict: Verdict
    matches: tuple[Match, ...]
    hashes: Hashes
    notes: tuple[str, ...] = field(default=())

    @property
    def matched(self) -> bool:
        return bool(self.matches)


class Matcher:
    """Matches hashes against every enabled entry of every list (or of `lists`)."""

    def __init__(self, store: Store, indexes: IndexSet, settings: Settings) -> None:
        self.store = store
        self.indexes = indexes
        self.settings = settings
        # (index version, radii, corroborable): lists change only through the change log,
        # which moves the version, so the lists are read once per refresh, not per match
        self._lists_cache: tuple[int, dict[SignalType, int], bool] | None = None

    @classmethod
    def open(cls, settings: Settings) -> Matcher:
        store = Store.open(settings.db_path)
        return cls(
            store,
            IndexSet.open(store, settings.data_dir, settings.index_inline_max_bytes),
            settings,
        )

    def close(self) -> None:
        self.store.close()

    def hash_upload(
        self, data: bytes, *, path: HashPath | None = None, engine: hashing.PdqEngine = "numba"
    ) -> Hashes:
        """Hash media for matching: fast decode path + dihedral variants by default for
        images; vPDQ frames for videos (recognised by content). engine="pdqhash" (a CLI
        call on a few files: no numba kernels to load) hashes the reference decode with
        Meta's C++ PDQ."""
        if video.is_video(data):
            return self.hash_video(
                data, fast=self.settings.video_fast_decode, trim=self.settings.trim_borders
            )
        if path is None:
            fast = self.settings.fast_decode and engine == "numba"
            path = HashPath.FAST if fast else HashPath.REFERENCE
        return hashing.hash_media(
            data,
            path=path,
            dihedral=self.settings.dihedral,
            trim=self.settings.trim_borders,
            max_pixels=self.settings.max_pixels,
            engine=engine,
        )

    def hash_video(self, data: bytes, *, fast: bool = False, trim: bool = False) -> VideoHashes:
        """vPDQ frames (+ MD5, SHA-256) with the configured sampling and caps. fast=False
        (every frame decoded) for hashes that leave the service."""
        return video.hash_video(
            data,
            seconds_per_hash=self.settings.vpdq_seconds_per_hash,
            limits=self.settings.video_limits,
            fast=fast,
            trim=trim,
        )

    def match_media(
        self,
        data: bytes,
        *,
        lists: Collection[str] | None = None,
        engine: hashing.PdqEngine = "numba",
    ) -> MatchResult:
        hashes = self.hash_upload(data, engine=engine)
        return self.match_upload(hashes, data, lists=lists, engine=engine)

    def match_upload(
        self,
        hashes: Hashes,
        data: bytes,
        *,
        lists: Collection[str] | None = None,
        engine: hashing.PdqEngine = "numba",
    ) -> MatchResult:
        """What matching media (not precomputed hashes) adds: corroboration, and rotation
        or flip matches confirmed on the media's own pixels. For adapters that hash
        separately (the API times hashing on its own)."""
        result = self.match(hashes, lists=lists, corroborate=True)
        return self.confirm_dihedral(result, data, engine=engine)

    def confirm_dihedral(
        self, result: MatchResult, data: bytes, *, engine: hashing.PdqEngine = "numba"
    ) -> MatchResult:
        """Re-check each match made by a rotation/flip variant against the PDQ of the
        truly rotated or flipped pixels, and keep it only if that is within the list's
        threshold (with the exact distance).

        Why: the 8 variants come from transforming PDQ's 64x64 buffer, 6-12 bits from the
        hash of the transformed image, so a variant's distance is approximate. One extra
        PDQ per variant match, only when one happened, so it costs nothing on `allow`.
        (The benchmark's 2 `flipy` false matches survive it: those tiles really are near
        mirror images of each other.)

        The pixels are decoded the way the upload's own hashes were: the matching (FAST)
        path's luma for FAST hashes, so a rotated copy's distance is computed like an
        upright copy's (same decode, same PDQ kernel); full-resolution RGB for REFERENCE
        hashes. A full decode here made a matched 1024x768 JPEG cost twice an unmatched one
        on the FAST path.
        """
        suspects = [
            m for m in result.matches
            if m.signal is SignalType.PDQ and m.variant in _TRANSFORMS
        ]  # fmt: skip
        if not suspects or not isinstance(result.hashes, MediaHashes):
            return result
        decoded, engine = hashing.decode_for(
            data, result.hashes.path, engine, max_pixels=self.settings.max_pixels
        )
        pixels = decoded.array()
        meta = self.store.entry_meta(m.entry_id for m in suspects)
        kept: list[Match] = []
        for m in result.matches:
            if m in suspects:
                assert m.variant is not None
                turned = np.ascontiguousarray(_TRANSFORMS[m.variant](pixels))
                exact, _ = hashing.pdq(turned, engine)
                d = exact - self.store.entry(m.entry_id).hash
                if m.entry_id not in meta or d > meta[m.entry_id].threshold(SignalType.PDQ):
                    continue
                m = replace(m, distance=d)
            kept.append(m)
        notes = result.notes
        if len(kept) < len(result.matches):
            notes += ("a rotation/flip match was not confirmed on the transformed pixels",)
        return MatchResult(verdict(kept), tuple(kept), result.hashes, notes)

    def match(
        self,
        hashes: Hashes,
        *,
        lists: Collection[str] | None = None,
        corroborate: bool = False,
    ) -> MatchResult:
        """Search every signal present in `hashes`; keep matches within each list's
        threshold; decide the verdict. `corroborate=True` (media: `match_media`, the
        API's uploads) also applies Settings.corroborate; precomputed hashes follow
        Settings.corroborate_lookups."""
        return self.match_many([hashes], lists=lists, corroborate=corroborate)[0]

    def match_many(
        self,
        items: Sequence[Hashes],
        *,
        lists: Collection[str] | None = None,
        corroborate: bool = False,
    ) -> list[MatchResult]:
        """`match` for many items at once: the lists are read once and each signal's
        distinct queries go to the index in one batch search (one query: a plain search).
        Videos are matched one by one by the vPDQ rule (`match_video`)."""
        s = self.settings
        wide = s.corroborate if corroborate else s.corroborate_lookups
        images = [h for h in items if isinstance(h, MediaHashes)]
        done = iter(self._match_images(images, lists, wide))
        return [
            next(done) if isinstance(h, MediaHashes) else self.match_video(h, lists=lists)
            for h in items
        ]

    def match_pdq_codes(
        self,
        codes: np.ndarray,
        qualities: Sequence[int | None],
        *,
        lists: Collection[str] | None = None,
    ) -> list[MatchResult | None]:
        """`match_many` for items that are one PDQ hash each and nothing else (`codes`:
        uint8, one 32-byte hash per row; `qualities`: each one's PDQ quality or None),
        answered column-wise. None stands for an item `match_many` would answer `allow`
        with no matches and no notes; every other item gets its full `MatchResult`.

        Why: a 1,000-hash batch of precomputed PDQ lookups is nearly all unknown hashes,
        and building each one's `Hash` and `MediaHashes` and planning its queries cost
        more than its search (~20 us of Python per item against ~30 us of search at 1M).
        Here the column is searched in one batch pass at the PDQ radius; only an item with
        a code within that radius, or with a quality too low to decide, is built and
        matched the ordinary way (searched again: such items are rare, and the ordinary
        path then applies every rule, thresholds, disabled entries and `lists`, itself).
        """
        n = len(codes)
        if len(qualities) != n:
            raise ValueError("one quality (or None) per code")
        out: list[MatchResult | None] = [None] * n
        if n == 0:
            return out
        floor = self.settings.pdq_min_quality
        low = np.fromiter((q is not None and q < floor for q in qualities), dtype=np.bool_, count=n)
        rows = np.flatnonzero(~low)
        special = np.flatnonzero(low)
        if len(rows):
            radius = self._radii()[SignalType.PDQ]
            near = self.indexes.any_within(SignalType.PDQ, codes[rows], radius)
            special = np.union1d(special, rows[near])
        if not len(special):
            return out
        picked = special.tolist()
        items = [
            MediaHashes(
                pdq=Hash(SignalType.PDQ, codes[i].tobytes()),
                pdq_quality=qualities[i],
                path=HashPath.REFERENCE,
            )
            for i in picked
        ]
        for i, result in zip(picked, self.match_many(items, lists=lists), strict=True):
            out[i] = result
        return out

    def match_video(
        self, hashes: VideoHashes, *, lists: Collection[str] | None = None
    ) -> MatchResult:
        """vPDQ: a list video matches when at least `vpdq_query_percent` of the upload's
        unique frame hashes (quality >= pdq_min_quality) lie within the list's PDQ
        threshold of one of its frames, and at least `vpdq_compared_percent` of its own
        unique frames are hit. Frames are also searched against image PDQ entries (a
        known image inside a video), and MD5/SHA-256 of the bytes against exact lists."""
        radius = self._radii()[SignalType.PDQ]
        notes: list[str] = []
        exact: dict[int, list[Hit]] = {}
        self._exact_hits((hashes.md5, hashes.sha256), exact)
        matches = self._within_thresholds(exact, lists)
        queries = hashes.unique_frames(self.settings.pdq_min_quality)
        if not queries:
            notes.append(
                f"no frame has PDQ quality >= {self.settings.pdq_min_quality}: "
                "vPDQ not used to decide"
            )
            return MatchResult(verdict(matches), tuple(matches), hashes, tuple(notes))
        first_seen: dict[bytes, float] = {}
        for f in hashes.frames:
            first_seen.setdefault(f.pdq.value, f.timestamp)
        # a known image as a frame of the upload
        image_hits: dict[int, list[Hit]] = {}
        for q, (ids, dists, slots) in zip(
            queries, self.indexes.search_batch(queries, radius), strict=True
        ):
            label = f"frame@{first_seen[q.value]:.1f}s"
            for entry_id, d, slot in zip(ids.tolist(), dists.tolist(), slots.tolist(),
                                         strict=True):  # fmt: skip
                image_hits.setdefault(entry_id, []).append(
                    (SignalType.PDQ, int(d), f"{label}+{CROP}" if slot else label)
                )
        matches += self._within_thresholds(image_hits, lists)
        videos = {m.entry_id: m for m in self._video_matches(queries, radius, lists)}
        trimmed = unique_hashes(hashes.trimmed, self.settings.pdq_min_quality)
        if trimmed:
            # the content inside bars, scored by the same rule; the better score counts
            for m in self._video_matches(trimmed, radius, lists, variant=TRIMMED):
                best = videos.get(m.entry_id)
                if best is None or (m.query_percent or 0) > (best.query_percent or 0):
                    videos[m.entry_id] = m
        matches += [videos[k] for k in sorted(videos)]
        return MatchResult(verdict(matches), tuple(matches), hashes, tuple(notes))

    def _video_matches(
        self,
        queries: list[Hash],
        radius: int,
        lists: Collection[str] | None,
        variant: str | None = None,
    ) -> list[Match]:
        """Score each list video the upload's frames reach (vPDQ's rule, via the index);
        `variant` labels the matches and must be allowed by the entry's list."""
        found = self.indexes.search_batch(queries, radius, signal=SignalType.VPDQ)
        reached: dict[int, list[tuple[int, int, int]]] = {}  # entry -> (query, slot, dist)
        for qi, (ids, dists, slots) in enumerate(found):
            for entry_id, d, slot in zip(ids.tolist(), dists.tolist(), slots.tolist(),
                                         strict=True):  # fmt: skip
                reached.setdefault(entry_id, []).append((qi, slot, int(d)))
        if not reached:
            return []
        meta = self.store.entry_meta(reached)
        frame_counts = self.store.video_frame_counts(reached)
        out = []
        for entry_id, triples in sorted(reached.items()):
            m = meta.get(entry_id)
            if m is None or not m.live or (lists is not None and m.list_name not in lists):
                continue
            if variant is not None and not self._variant_allowed(variant, m):
                continue
            threshold = m.threshold(SignalType.VPDQ)
            within = [t for t in triples if t[2] <= threshold]
            if not within:
                continue
            result = vpdq.score(
                query_hit=len({t[0] for t in within}),
                query_unique=len(queries),
                compared_hit=len({t[1] for t in within}),
                compared_unique=frame_counts.get(entry_id, 0),
                min_distance=min(t[2] for t in within),
            )
            if result.matches(self.settings.vpdq_query_percent,
                              self.settings.vpdq_compared_percent):  # fmt: skip
                out.append(
                    Match(
                        list_name=m.list_name,
                        entry_id=entry_id,
                        signal=SignalType.VPDQ,
                        distance=result.min_distance,
                        action=m.action,
                        category=m.category,
                        external_id=m.external_id,
                        query_percent=result.query_percent,
                        compared_percent=result.compared_percent,
                        variant=variant,
                    )
                )
        return out

    def _match_images(
        self, items: Sequence[MediaHashes], lists: Collection[str] | None, corroborate: bool
    ) -> list[MatchResult]:
        if not items:
            return []
        radii = accept = self._radii()  # accept: no list takes a hit beyond this
        # corroboration needs a pHash entry with a PDQ sibling: where no list holds one,
        # its wide pHash search (a scan of every pHash code) would find nothing to use
        corroborate = corroborate and self._corroborable()
        if corroborate:  # pHash hits up to the corroboration bound, for `_corroborated`
            wide = max(radii[SignalType.PHASH], self.settings.corroborate_phash)
            radii = {**radii, SignalType.PHASH: wide}
        plans = [self._plan(h) for h in items]
        # each signal's distinct queries, searched once (one query: a plain search)
        distinct: dict[SignalType, dict[bytes, Hash]] = {}
        for plan in plans:
            for q, _ in plan.queries:
                if q.signal in radii:
                    distinct.setdefault(q.signal, {})[q.value] = q
        found: dict[tuple[SignalType, bytes], Found] = {}
        for signal, by_value in distinct.items():
            if len(by_value) == 1:
                ((value, q),) = by_value.items()
                found[(signal, value)] = self.indexes.search(q, radii[signal])
            else:
                queries = list(by_value.values())
                for q, result in zip(
                    queries, self.indexes.search_batch(queries, radii[signal]), strict=True
                ):
                    found[(signal, q.value)] = result
        out = []
        for item, plan in zip(items, plans, strict=True):
            hits: dict[int, list[Hit]] = {}  # entry id -> every hit that reached it
            for q, variant in plan.queries:
                ids, dists, slots = found[(q.signal, q.value)]
                if len(ids) and radii[q.signal] > accept[q.signal]:
                    # the wide corroboration search: hits past every list's threshold
                    # are for `_corroborated` only (~39 per query at 1M random pHashes
                    # within 16 bits: their list metadata would be read for nothing)
                    near = dists <= accept[q.signal]
                    ids, dists, slots = ids[near], dists[near], slots[near]
                if not len(ids):
                    continue
                for entry_id, d, slot in zip(ids.tolist(), dists.tolist(), slots.tolist(),
                                             strict=True):  # fmt: skip
                    label = variant
                    if slot:  # the hit is one of the entry's enrollment crops
                        label = f"{variant}+{CROP}" if variant else CROP
                    hits.setdefault(entry_id, []).append((q.signal, int(d), label))
            if item.md5 is not None or item.sha256 is not None:
                self._exact_hits((item.md5, item.sha256), hits)
            if corroborate:
                for entry_id, extra in self._corroborated(item, found).items():
                    hits.setdefault(entry_id, []).extend(extra)
            if hits:
                matches = self._within_thresholds(hits, lists)
                out.append(MatchResult(verdict(matches), tuple(matches), item, plan.notes))
            else:  # the common case: nothing near, no exact hit
                out.append(MatchResult(Verdict.ALLOW, (), item, plan.notes))
        return out

    def _exact_hits(self, hashes: Sequence[Hash | None], hits: dict[int, list[Hit]]) -> None:
        """Add the entries whose MD5/SHA-256 equals one of `hashes` (None: not given)."""
        for h in hashes:
            if h is not None:
                for entry_id in self.store.exact_lookup(h.signal, h.value):
                    hits.setdefault(entry_id, []).append((h.signal, 0, None))

    def _corroborated(self, item: MediaHashes, found: dict[tuple[SignalType, bytes], Found]
                      ) -> dict[int, list[Hit]]:  # fmt: skip
        """PDQ hits beyond the threshold that the same item's pHash backs up.

        Why: brightness changes, text overlays and watermarks move PDQ 32-54 bits while
        pHash stays within 8-16; unrelated photos are never near in both at once
        (bench/robustness.py: of 9.1M unrelated edited-copy pairs none with pHash <= 16
        came closer than PDQ 58; 56 in the held-out tiling). The pHash hit names an
        entry; its PDQ sibling is the entry of the same list with the same external id
        (one media item).
        """
        s = self.settings
        if item.pdq is None or item.phash is None:
            return {}
        if item.pdq_quality is not None and item.pdq_quality < s.corroborate_min_quality:
            return {}
        ids, dists, slots = found[(SignalType.PHASH, item.phash.value)]
        near = [
            e
            for e, d, slot in zip(ids.tolist(), dists.tolist(), slots.tolist(), strict=True)
            if d <= s.corroborate_phash and not slot
        ]
        if not near:
            return {}
        pairs = [pair for siblings in self.store.pdq_siblings(near).values() for pair in siblings]
        if not pairs:
            return {}
        # every sibling's distance in one numpy pass: a random upload's pHash is within
        # 16 bits of ~50 entries at 1M, and a Hash per sibling cost ~7 us each
        codes = np.frombuffer(b"".join(value for _, value in pairs), np.uint8).reshape(
            len(pairs), -1
        )
        dists = np.bitwise_count(codes ^ item.pdq.codes()).sum(axis=1, dtype=np.int64)
        out: dict[int, list[Hit]] = {}
        for (pdq_id, _), d in zip(pairs, dists.tolist(), strict=True):
            if d <= s.corroborate_pdq:
                out.setdefault(pdq_id, []).append((SignalType.PDQ, d, CORROBORATED))
        return out

    def _plan(self, hashes: MediaHashes) -> _Plan:
        """The perceptual queries one item makes (with their labels), and its notes."""
        queries: list[tuple[Hash, str | None]] = []
        notes: list[str] = []
        use_pdq = hashes.pdq is not None
        quality = hashes.pdq_quality
        if use_pdq and quality is not None and quality < self.settings.pdq_min_quality:
            use_pdq = False
            notes.append(
                f"pdq quality {quality} is below "
                f"{self.settings.pdq_min_quality}: PDQ alone does not decide"
            )
        if use_pdq and hashes.pdq is not None:
            variants = hashes.pdq_dihedral or (hashes.pdq,)
            for name, q in zip(DIHEDRAL_NAMES, variants, strict=False):
                queries.append((q, None if name == "original" else name))
        if hashes.phash is not None:
            queries.append((hashes.phash, None))
        for trimmed in hashes.trimmed:
            if trimmed.signal is SignalType.PHASH or use_pdq:
                queries.append((trimmed, TRIMMED))
        return _Plan(queries, tuple(notes))

    def _variant_allowed(self, variant: str, meta: EntryMeta) -> bool:
        """Per-list switches (list options, defaulting to the service settings)."""
        parts = variant.split("+")
        if CROP in parts and not meta.options.get("crops", True):
            return False
        if CORROBORATED in parts and not meta.options.get("corroborate", True):
            return False
        if TRIMMED in parts and not meta.options.get("trim_borders", self.settings.trim_borders):
            return False
        rotated = [p for p in parts if p in DIHEDRAL_NAMES]
        return not (rotated and not meta.options.get("dihedral", self.settings.dihedral))

    def _limit(self, signal: SignalType, variant: str | None, meta: EntryMeta) -> int:
        """The largest distance a hit may have: the list's threshold, or the
        corroboration bound for a PDQ that the item's pHash backs up."""
        if variant == CORROBORATED:
            return max(meta.threshold(signal), self.settings.corroborate_pdq)
        return meta.threshold(signal)

    def _radii(self) -> dict[SignalType, int]:
        """Search radius per perceptual signal: the largest threshold of any list (each
        hit is then held to its own list's threshold)."""
        return self._lists_state()[1]

    def _corroborable(self) -> bool:
        """Whether some list holds items with both a PDQ and a pHash entry
        (`Store.corroborable_lists`): without one, corroboration cannot add a match."""
        return self._lists_state()[2]

    def _lists_state(self) -> tuple[int, dict[SignalType, int], bool]:
        version = self.indexes.version
        cached = self._lists_cache
        if cached is not None and cached[0] == version:
            return cached
        lists = self.store.lists()
        radii = {
            s: max((lst.threshold(s) for lst in lists), default=0)
            for s in (SignalType.PDQ, SignalType.PHASH)
        }
        # read after the version: a pair added since then only keeps the search on
        self._lists_cache = (version, radii, bool(self.store.corroborable_lists()))
        return self._lists_cache

    def _within_thresholds(
        self, hits: dict[int, list[Hit]], lists: Collection[str] | None
    ) -> list[Match]:
        """Per entry, the closest hit its list accepts (threshold, per-list switches)."""
        if not hits:
            return []
        meta: dict[int, EntryMeta] = self.store.entry_meta(hits)
        out = []
        for entry_id, entry_hits in sorted(hits.items()):
            m = meta.get(entry_id)
            if m is None or not m.live:  # removed or disabled since the last refresh
                continue
            if lists is not None and m.list_name not in lists:
                continue
            accepted = [
                (distance, signal, variant)
                for signal, distance, variant in entry_hits
                if distance <= self._limit(signal, variant, m)
                and (variant is None or self._variant_allowed(variant, m))
            ]
            if not accepted:
                continue
            # closest first; on a tie the query's own hash beats a variant
            distance, signal, variant = min(accepted, key=lambda a: (a[0], a[2] is not None))
            out.append(
                Match(
                    list_name=m.list_name,
                    entry_id=entry_id,
                    signal=signal,
                    distance=distance,
                    action=m.action,
                    category=m.category,
                    external_id=m.external_id,
                    variant=variant,
                )
            )
        return out
