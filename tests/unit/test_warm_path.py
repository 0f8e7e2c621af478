"""The warm path's shortcuts give exactly what the full paths give (issue 19)."""

from __future__ import annotations

import numpy as np
import pytest

from sklearn_mme.handler import content_types, decoders
from sklearn_mme.handler.content_types import CSV, JSON, negotiate, parse_media_type
from sklearn_mme.handler.errors import BadRequest, NotAcceptable

BODIES = [
    "5.1,3.5,1.4,0.2", "1,2\n3,4\n", "1,2\n\n3,4\n\n", " 1 , 2 \n3,\t4", "1e-5,-2E+3\n0.1,1_000",
    "nan,inf\n-inf,-0.0", "1\u2003,2\n3,4", "1,2\n\x1c\n3,4", "1,2\n , \n3,4", "1,,3", ",,\n1,2",
    "\ufeff1,2", "١,٢", "0.30000000000000004,1.7976931348623157e308,5e-324", "1,2\n3", "a,b\n1,2", "1;2",
    "1,2\r\n3,4", '"1",2', "   ", "1,2,\n3,4,", "1\x00,2",
]


def _full_path(body: str) -> object:
    original = decoders._plain_csv
    decoders._plain_csv = lambda text: None
    try:
        return _outcome(body)
    finally:
        decoders._plain_csv = original


def _outcome(body: str) -> object:
    try:
        out = decoders.decode(body.encode(), parse_media_type(CSV))
    except BadRequest as exc:
        return ("400", exc.message)
    return (out.dtype, out.shape, out.tobytes())  # bit for bit, NaN and -0.0 included


@pytest.mark.parametrize("body", BODIES)
def test_csv_shortcut_reads_every_body_as_the_csv_module_does(body: str) -> None:
    assert _outcome(body) == _full_path(body)


def test_the_csv_shortcut_is_taken_for_a_plain_body() -> None:
    assert decoders._plain_csv("5.1,3.5\n1,2\n") == [[5.1, 3.5], [1.0, 2.0]]
    assert decoders._plain_csv('"1",2') is None and decoders._plain_csv("1,x") is None
    # header=present takes the full path (it drops the first record)
    np.testing.assert_array_equal(decoders.decode(b"a,b\n1,2", parse_media_type("text/csv; header=present")),
                                  [[1.0, 2.0]])


@pytest.mark.parametrize("accept", ["application/json", "text/csv;q=0.5, application/json;q=0.9", "*/*",
                                    "application/*", "text/*;q=0.1, */*;q=0.05", "image/png", "x" * 200])
def test_negotiate_remembers_answers_not_406s(accept: str) -> None:
    content_types._negotiate_cached.cache_clear()
    try:
        expected = content_types._negotiate(accept, JSON, content_types.SUPPORTED_ACCEPT)
    except NotAcceptable as exc:
        for _ in range(2):  # a 406 is raised every time, never remembered
            with pytest.raises(NotAcceptable, match="cannot produce"):
                negotiate(accept, JSON)
        assert content_types._negotiate_cached.cache_info().currsize == 0
        assert "supported" in exc.message
        return
    assert negotiate(accept, JSON) == negotiate(accept, JSON) == expected
    assert negotiate(accept, CSV) == content_types._negotiate(accept, CSV, content_types.SUPPORTED_ACCEPT)
    cached = content_types._negotiate_cached.cache_info().currsize
    assert cached == (2 if len(accept) <= content_types._CACHED_ACCEPT_CHARS else 0)
