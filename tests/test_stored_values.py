"""Serving decodes the values Feast's online store keeps straight from their wire format: equal to Feast's own
decoding for every shape the feature build stores, and handed to protobuf for any other."""

import numpy as np
import pytest

from serving.online_features import _decode_value, decode_stored


def feast(blob: bytes):
    from feast.protos.feast.types.Value_pb2 import Value
    from feast.type_map import feast_value_type_to_python_type

    return _decode_value(Value.FromString(blob), feast_value_type_to_python_type)


def values():
    from feast.protos.feast.types.Value_pb2 import DoubleList, Int64List, StringList, Value

    rng = np.random.default_rng(0)
    yield Value(double_val=1.5)
    yield Value(double_val=float("nan"))
    yield Value(double_val=-0.0)
    yield Value(double_val=float("-inf"))
    for v in (0, 1, -1, 127, 128, 300, -(2**63), 2**63 - 1):
        yield Value(int64_val=v)
    yield Value(double_list_val=DoubleList(val=[]))
    yield Value(double_list_val=DoubleList(val=[*rng.normal(size=20).tolist(), float("nan")]))
    yield Value(int64_list_val=Int64List(val=[]))
    yield Value(int64_list_val=Int64List(val=[0, 1, 300, -2, 2**40, *rng.integers(0, 5000, 50).tolist()]))
    yield Value(string_val="brand")  # not a stored shape: protobuf decodes it
    yield Value(string_list_val=StringList(val=["a", "b"]))
    yield Value(int32_val=7)
    yield Value()


@pytest.mark.parametrize("value", list(values()), ids=lambda v: v.WhichOneof("val") or "empty")
def test_direct_decoding_equals_feasts(value):
    blob = value.SerializeToString()
    mine, theirs = decode_stored(blob, feast), feast(blob)
    if isinstance(theirs, np.ndarray | list):
        np.testing.assert_array_equal(np.asarray(mine), np.asarray(theirs))
        assert np.asarray(mine).dtype.kind == np.asarray(theirs, dtype=np.asarray(mine).dtype).dtype.kind
    elif isinstance(theirs, float) and np.isnan(theirs):
        assert np.isnan(mine)
    else:
        assert mine == theirs and type(mine) is type(theirs)


def test_a_truncated_or_foreign_blob_goes_to_the_fallback():
    seen = []
    assert decode_stored(b"\x7a\x12\x0a\x10\x00", lambda b: seen.append(b) or "fallback") == "fallback"
    assert decode_stored(b"\x29\x00\x00", lambda b: seen.append(b) or "fallback") == "fallback"
    assert len(seen) == 2
