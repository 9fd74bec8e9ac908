"""`schemas.PlainPdqBatch` (the fast lane's bulk shape) accepts exactly the PDQ-only
batches `HashMatchRequest` accepts, with the same values: a body it takes must mean what
the route would have read, or the lane would answer a request FastAPI refuses."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from hashsvc.api import schemas

FULL: TypeAdapter[Any] = TypeAdapter(schemas.HashMatchRequest)

_hex = st.text("0123456789abcdefABCDEF", min_size=62, max_size=66)
_valid_pdq = st.sampled_from(["ab" * 32, "AB" * 32, "0123456789abcdef" * 4])
_pdq = st.one_of(_valid_pdq, _hex, st.text(max_size=70), st.integers(), st.none())
_quality = st.one_of(
    st.integers(0, 100),
    st.integers(-3, 103),
    st.none(),
    st.booleans(),
    st.floats(-1, 101),
    st.just(float("nan")),
    st.text("0123456789. -", max_size=4),
)
# mostly the plain shape (pdq, maybe a quality), some of it broken; sometimes other keys
_plain_item = st.fixed_dictionaries(
    {"pdq": st.one_of(_valid_pdq, _valid_pdq, _pdq)}, optional={"pdq_quality": _quality}
)
_other_item = st.fixed_dictionaries(
    {},
    optional={
        "pdq": _pdq,
        "pdq_quality": _quality,
        "md5": st.just("0" * 32),
        "colour": st.just("red"),
    },
)
_item = st.one_of(_plain_item, _plain_item, _plain_item, _other_item)
_valid_quality = st.one_of(st.integers(0, 100), st.none())
_good_item = st.fixed_dictionaries({"pdq": _valid_pdq}, optional={"pdq_quality": _valid_quality})
_items = st.one_of(
    st.lists(_good_item, min_size=1, max_size=3),  # the plain shape itself
    st.lists(st.one_of(_good_item, _item), min_size=1, max_size=3),
    st.lists(_item, max_size=3),
    _item,  # not a list
)
_body = st.one_of(
    st.fixed_dictionaries({"items": _items}),
    st.fixed_dictionaries({"items": _items}),
    st.fixed_dictionaries({"items": _items, "extra": st.integers()}),
)


def _accepts(adapter: TypeAdapter[Any], body: Any) -> Any:
    try:
        return adapter.validate_python(body)
    except ValidationError:
        return None


@settings(max_examples=600, deadline=None)
@given(_body)
def test_plain_shape_is_the_pdq_only_part_of_the_batch_schema(body: dict[str, Any]) -> None:
    plain = _accepts(schemas.PLAIN_PDQ_BATCH, body)
    full = _accepts(FULL, body)
    pdq_only = isinstance(body["items"], list) and all(
        set(item) <= {"pdq", "pdq_quality"} for item in body["items"]
    )
    if plain is not None:
        assert isinstance(full, schemas.HashBatch), body
        got = [(i["pdq"], i.get("pdq_quality")) for i in plain["items"]]
        assert got == [(q.pdq, q.pdq_quality) for q in full.items], body
        assert all(q.phash is q.md5 is q.sha256 is q.vpdq is None for q in full.items)
    elif full is not None and pdq_only:
        raise AssertionError(f"a PDQ-only batch the route takes is not the plain shape: {body}")


def test_the_plain_shape_takes_a_full_batch() -> None:
    body = {"items": [{"pdq": "ab" * 32, "pdq_quality": 80}] * schemas.MAX_BATCH}
    assert len(schemas.PLAIN_PDQ_BATCH.validate_python(body)["items"]) == schemas.MAX_BATCH
    assert _accepts(schemas.PLAIN_PDQ_BATCH, {"items": body["items"] * 2}) is None
    assert _accepts(schemas.PLAIN_PDQ_BATCH, {"items": []}) is None
