"""Content types, Accept negotiation, decoders, encoders, errors and settings (no model needed)."""

from __future__ import annotations

import io
import json
import logging
import math
import zipfile

import numpy as np
import pytest
import scipy.sparse

from sklearn_mme.handler.content_types import CSV, JSON, JSONLINES, NPY, NPZ, negotiate, parse_media_type
from sklearn_mme.handler.decoders import MAX_EXPANDED_BYTES, decode
from sklearn_mme.handler.encoders import encode
from sklearn_mme.handler.errors import (
    BadRequest,
    InferenceError,
    InsufficientMemory,
    NotAcceptable,
    UnsupportedMediaType,
    error_body,
    to_error,
)
from sklearn_mme.handler.settings import Settings, SettingsError, get_settings
from tests.unit.conftest import assert_clean_error


def dec(body: bytes | str, content_type: str) -> np.ndarray:
    return decode(body, parse_media_type(content_type))


def npy_bytes(array: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, **kw)
    return buf.getvalue()


def npz_bytes(matrix, compressed: bool = True) -> bytes:
    buf = io.BytesIO()
    scipy.sparse.save_npz(buf, matrix, compressed=compressed)
    return buf.getvalue()


def npz_of(arrays: dict[str, bytes]) -> bytes:
    """An .npz archive with these members (name -> .npy bytes), as np.savez lays it out."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for name, data in arrays.items():
            archive.writestr(name, data)
    return buf.getvalue()


def csr_members(**override: bytes) -> dict[str, bytes]:
    """The members save_npz writes for a valid 2x3 CSR matrix, with some replaced."""
    members = {
        "format.npy": npy_bytes(np.array(b"csr")),
        "shape.npy": npy_bytes(np.array([2, 3])),
        "data.npy": npy_bytes(np.array([1.0, 2.0])),
        "indices.npy": npy_bytes(np.array([0, 2], dtype=np.int32)),
        "indptr.npy": npy_bytes(np.array([0, 1, 2], dtype=np.int32)),
    }
    members.update({f"{k}.npy": v for k, v in override.items()})
    return members


# --- media types and Accept ---


def test_parse_media_type_is_case_insensitive_with_params():
    media = parse_media_type(' Text/CSV ; Charset="UTF-8"; header=present; junk')
    assert media.type == CSV
    assert media.charset == "UTF-8"
    assert media.params["header"] == "present"
    assert parse_media_type("application/x-jsonlines").type == JSONLINES


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, JSON),
        ("", JSON),
        ("*/*", JSON),
        ("*", JSON),
        ("text/csv", CSV),
        ("TEXT/CSV; charset=utf-8", CSV),
        ("application/jsonlines", JSONLINES),
        ("application/x-npy", NPY),
        ("text/*", CSV),
        ("application/*", JSON),
        ("text/html, text/csv;q=0.5, application/json;q=0.9", JSON),  # highest q wins
        ("application/json;q=0.5, text/csv;q=0.5", JSON),  # tie: client order
        ("text/csv;q=0.5, application/json;q=0.5", CSV),
        ("application/json;q=0, */*", CSV),  # q=0 excludes; */* then picks by server order
        ("text/html, */*;q=0.1", JSON),
        ("image/png, application/x-npy;q=0.2", NPY),
        ("text/csv;q=bogus, application/jsonlines", JSONLINES),
    ],
)
def test_negotiate(accept, expected):
    assert negotiate(accept, JSON) == expected


def test_negotiate_wildcards_prefer_the_configured_default():
    assert negotiate("*/*", CSV) == CSV
    assert negotiate(None, JSONLINES) == JSONLINES
    assert negotiate("application/*", JSONLINES) == JSONLINES
    assert negotiate("application/*", CSV) == JSON  # the default does not match: server order


@pytest.mark.parametrize("accept", ["text/html", "image/png, text/plain", "text/csv;q=0", "json"])
def test_negotiate_406_names_supported_types(accept):
    with pytest.raises(NotAcceptable) as info:
        negotiate(accept, JSON)
    assert_clean_error(info.value, 406)
    assert "text/csv" in info.value.message and "application/json" in info.value.message


# --- CSV ---


def test_csv_single_and_many_rows():
    np.testing.assert_array_equal(dec(b"1,2,3", CSV), [[1, 2, 3]])
    np.testing.assert_array_equal(dec(b"1,2\r\n3.5,-4e2\n\n", CSV), [[1, 2], [3.5, -400]])
    assert dec(b"1,2", CSV).dtype == np.float64


def test_csv_header_present_is_skipped():
    np.testing.assert_array_equal(dec(b"a,b\n1,2\n", "text/csv; header=present"), [[1, 2]])


def test_csv_header_without_param_is_400_with_hint():
    with pytest.raises(BadRequest) as info:
        dec(b"sepal,petal\n1,2\n", CSV)
    assert_clean_error(info.value, 400)
    assert "header=present" in info.value.message


@pytest.mark.parametrize(
    "body",
    [b"1,2\n3\n", b"1,2,3\n4,x,6\n", b'1,"2\n', b"1,\x002\n", b"a,b", b"\n\n", b"   ", b""],
)
def test_csv_malformed_is_400(body):
    with pytest.raises(BadRequest) as info:
        dec(body, CSV)
    assert_clean_error(info.value, 400)


def test_csv_ragged_message():
    with pytest.raises(BadRequest, match="row 2 has 1 features, row 1 has 2"):
        dec(b"1,2\n3\n", CSV)


def test_csv_missing_and_special_values_are_floats():
    out = dec(b"1,,nan,inf,-inf", CSV)
    assert out[0, 0] == 1 and math.isnan(out[0, 1]) and math.isnan(out[0, 2])
    assert out[0, 3] == math.inf and out[0, 4] == -math.inf


def test_csv_charset_is_honoured():
    np.testing.assert_array_equal(dec("1,2\n".encode("utf-16"), "text/csv; charset=utf-16"), [[1, 2]])
    np.testing.assert_array_equal(dec(b"\xef\xbb\xbf1,2", CSV), [[1, 2]])  # UTF-8 BOM
    with pytest.raises(BadRequest, match="not valid utf-8"):
        dec(b"1,\xff2", CSV)
    for charset in ("no-such-charset", "base64"):
        with pytest.raises(UnsupportedMediaType):
            dec(b"1,2", f"text/csv; charset={charset}")


# --- JSON and JSON Lines ---


@pytest.mark.parametrize(
    "body",
    [
        {"instances": [[1, 2], [3, 4]]},
        {"inputs": [[1, 2], [3, 4]]},
        [[1, 2], [3, 4]],
        {"instances": [{"features": [1, 2]}, {"features": [3, 4]}]},
    ],
)
def test_json_row_shapes(body):
    np.testing.assert_array_equal(dec(json.dumps(body), JSON), [[1, 2], [3, 4]])


def test_json_single_row_and_null():
    np.testing.assert_array_equal(dec(b"[1, 2.5]", JSON), [[1, 2.5]])
    out = dec(b'{"instances": [1, null]}', "Application/JSON; charset=utf-8")
    assert out[0, 0] == 1 and math.isnan(out[0, 1])


@pytest.mark.parametrize(
    "body",
    [
        b"{",
        b"42",
        b'"1,2"',
        b"[]",
        b"[[]]",
        b'{"data": [[1]]}',
        b'[["one", 2]]',
        b'[[""]]',
        b"[[true, 2]]",
        b"[[1, 2], [3]]",
        b"[1, [2]]",
        b"[[[1]]]",
        b'{"instances": {"a": 1}}',
        b"[" + b"9" * 400 + b"]",  # int too large for a float
        b"[" + b"1" * 5000 + b"]",  # int beyond Python's str-digits limit
        b"[" * 100_000,
        b"[" * 50_000 + b"]" * 50_000,
        b"\xff\xfe",
    ],
)
def test_json_malformed_is_400(body):
    with pytest.raises(BadRequest) as info:
        dec(body, JSON)
    assert_clean_error(info.value, 400)


def test_json_numbers_as_strings_are_read_as_floats():
    expected = [[5.1, 3.5, 1.4, 0.2]]
    for body in (
        '["5.1", "3.5", "1.4", "0.2"]',
        '[["5.1", "3.5", "1.4", "0.2"]]',
        '{"instances": [["5.1", "3.5", 1.4, " 0.2 "]]}',
        '{"inputs": ["5.1", "3.5", "1.4", "2e-1"]}',
        '{"instances": [{"features": ["5.1", "3.5", "1.4", "0.2"]}]}',
    ):
        np.testing.assert_array_equal(dec(body, JSON), expected, err_msg=body)
    lines = '["5.1", "3.5", "1.4", "0.2"]\n{"features": ["1", "2", "3", "4"]}\n'
    np.testing.assert_array_equal(dec(lines, JSONLINES), [[5.1, 3.5, 1.4, 0.2], [1, 2, 3, 4]])
    assert dec('["-7"]', JSON).dtype == np.float64


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        # A single row is row 1; the column is the 1-based position of the bad value.
        ('["5.1", "abc", "1.4"]', JSON, "row 1, column 2 is not a number: 'abc'"),
        ('[5.1, "abc"]', JSON, "row 1, column 2 is not a number: 'abc'"),
        ("[1, [2]]", JSON, "row 1, column 2 is not a number: [2]"),
        ("[1, true]", JSON, "row 1, column 2 is not a number: True"),
        ('{"instances": [["1", "2"], ["3", ""]]}', JSON, "row 2, column 2 is not a number: ''"),
        ('{"inputs": [[1, 2], 3]}', JSON, "row 2 is not a list of numbers"),
        ("[[1, 2], [3]]", JSON, "row 2 has 1 features, row 1 has 2"),
        ('[1, 2]\n\n["3", "x"]\n', JSONLINES, "row 2, column 2 is not a number: 'x'"),
        ('[[1, 2], [3, 4]]\n{"features": [5, null, {}]}', JSONLINES, "row 3, column 3 is not a number: {}"),
        ("1,2\n3,x", CSV, "CSV row 2, column 2 is not numeric: 'x'"),
        ("a,b\n1,2", CSV, "CSV row 1, column 1 is not numeric: 'a' (send 'text/csv; header=present'"),
        ("1,2\n\n3,4,5", CSV, "row 2 has 3 features, row 1 has 2"),
    ],
)
def test_error_messages_count_rows_and_columns(body, content_type, message):
    with pytest.raises(BadRequest) as info:
        dec(body, content_type)
    assert_clean_error(info.value, 400)
    assert message in info.value.message
    assert "instance" not in info.value.message and "feature " not in info.value.message


def test_csv_header_present_counts_data_rows_without_the_hint():
    with pytest.raises(BadRequest) as info:
        dec("a,b\n1,2\n3,?", "text/csv; header=present")
    assert info.value.message == "CSV row 2, column 2 is not numeric: '?'"


def test_jsonlines_rows_and_objects():
    body = b'[1, 2]\n{"features": [3, 4]}\n\n{"instances": [[5, 6], [7, 8]]}\n'
    np.testing.assert_array_equal(dec(body, JSONLINES), [[1, 2], [3, 4], [5, 6], [7, 8]])


@pytest.mark.parametrize("body", [b"[1,2]\n{", b'{"x": 1}', b"[1,2]\n[3]", b"1\n2", b"\n\n"])
def test_jsonlines_malformed_is_400(body):
    with pytest.raises(BadRequest) as info:
        dec(body, JSONLINES)
    assert_clean_error(info.value, 400)


# --- .npy ---


def test_npy_arrays():
    np.testing.assert_array_equal(dec(npy_bytes(np.arange(6).reshape(2, 3)), NPY), [[0, 1, 2], [3, 4, 5]])
    np.testing.assert_array_equal(dec(npy_bytes(np.array([1.5, 2.5], dtype=">f4")), NPY), [[1.5, 2.5]])
    fortran = np.asfortranarray(np.arange(6, dtype=np.float64).reshape(2, 3))
    out = dec(npy_bytes(fortran), NPY)
    np.testing.assert_array_equal(out, fortran)
    assert out.flags.writeable


def test_npy_never_unpickles():
    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('unpickled!')",))

    body = npy_bytes(np.array([Boom()], dtype=object), allow_pickle=True)
    with pytest.raises(BadRequest, match="not numeric"):
        dec(body, NPY)


@pytest.mark.parametrize(
    "body",
    [
        npy_bytes(np.zeros((2, 2, 2))),
        npy_bytes(np.array(1.0)),
        npy_bytes(np.zeros((0, 3))),
        npy_bytes(np.array(["a", "b"])),
        npy_bytes(np.array([1 + 2j])),
        npy_bytes(np.zeros((2, 3)))[:-8],  # truncated data
        npy_bytes(np.zeros((2, 3))) + b"extra",
        npy_bytes(np.zeros(3)).replace(b"'shape': (3,), ", b"'shape': (10**9,),"),  # not a literal
        npy_bytes(np.zeros(3)).replace(b"'shape': (3,), ", b"'shape': (-3,),  "),
        b"\x93NUMPY\x01\x00\x10\x00{'descr': 1}    \n",
        b"\x93NUMPY",
        b"\x93NUMPY\x01\x00\x04\x00)  \n",  # numpy's tokenizer raises TokenError here
        b"PK\x03\x04 a zip is not an .npy",
        b"\x80\x04pickle",
        b"1,2,3",
    ],
)
def test_npy_malformed_is_400(body):
    with pytest.raises(BadRequest) as info:
        dec(body, NPY)
    assert_clean_error(info.value, 400)


def test_npy_huge_declared_shape_is_rejected_before_allocating():
    body = npy_bytes(np.zeros(3))
    header_end = body.index(b"\n") + 1
    header = "{'descr': '<f8', 'fortran_order': False, 'shape': (10000000000000, 10000), }"
    fake = b"\x93NUMPY\x01\x00" + len(header.ljust(118) + "\n").to_bytes(2, "little")
    fake += (header.ljust(118) + "\n").encode() + body[header_end:]
    with pytest.raises(BadRequest, match="does not match shape"):
        dec(fake, NPY)


# --- .npz (scipy.sparse) ---


@pytest.mark.parametrize("fmt", ["csr", "csc", "coo"])
@pytest.mark.parametrize("compressed", [True, False])
def test_npz_sparse_matrix_stays_sparse(fmt, compressed):
    dense = np.array([[0, 1.5, 0, 0], [0, 0, 0, -2], [3, 0, 0, 0]])
    out = dec(npz_bytes(scipy.sparse.csr_matrix(dense).asformat(fmt), compressed), NPZ)
    assert scipy.sparse.issparse(out) and out.format == "csr" and out.dtype == np.float64
    np.testing.assert_array_equal(out.toarray(), dense)


def test_npz_sparse_array_ints_and_one_row():
    out = dec(npz_bytes(scipy.sparse.csr_array(np.array([[0, 2], [3, 0]], dtype=np.int8))), "application/npz")
    np.testing.assert_array_equal(out.toarray(), [[0, 2], [3, 0]])
    assert out.dtype == np.float64
    one = dec(npz_bytes(scipy.sparse.coo_array(np.array([0.0, 4.0, 0.0]))), NPZ)
    assert one.shape == (1, 3) and one.toarray().tolist() == [[0, 4, 0]]


def test_npz_never_unpickles():
    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('unpickled!')",))

    pickled = npy_bytes(np.array([Boom()], dtype=object), allow_pickle=True)
    for member in ("data", "format"):
        with pytest.raises(BadRequest) as info:
            dec(npz_of(csr_members(**{member: pickled})), NPZ)
        assert_clean_error(info.value, 400)
        assert "not numeric" in info.value.message


@pytest.mark.parametrize(
    "body",
    [
        b"PK\x03\x04 not really a zip",
        b"\x93NUMPY an npy, not an npz",
        npz_bytes(scipy.sparse.csr_matrix(np.eye(3)))[:-20],  # truncated
        npz_of({}),
        npz_of({"data.npy": npy_bytes(np.zeros(3))}),  # a dense np.savez, no sparse format
        npz_of(csr_members(indices=npy_bytes(np.array([0, 3], dtype=np.int32)))),  # column 3 of 3
        npz_of(csr_members(indices=npy_bytes(np.array([0, -1], dtype=np.int32)))),
        npz_of(csr_members(indptr=npy_bytes(np.array([0, 2, 1], dtype=np.int32)))),  # not monotonic
        npz_of(csr_members(indptr=npy_bytes(np.array([0, 1], dtype=np.int32)))),  # too short for 2 rows
        npz_of(csr_members(data=npy_bytes(np.array([1 + 2j, 3j])))),
        npz_of(csr_members(data=npy_bytes(np.array(["a", "b"])))),
        npz_of(csr_members(format=npy_bytes(np.array(b"dia")))),
        npz_of(csr_members(format=npy_bytes(np.array(b"spmatrix_or_anything")))),
        npz_of(csr_members(shape=npy_bytes(np.array([0, 3])), indptr=npy_bytes(np.array([0])),
                           data=npy_bytes(np.zeros(0)), indices=npy_bytes(np.zeros(0, dtype=np.int32)))),
        npz_of(csr_members(data=npy_bytes(np.zeros(2))[:-8])),  # header says more than the member holds
        npz_of({**csr_members(), "evil.pkl": b"\x80\x04."}),
        npz_bytes(scipy.sparse.dia_matrix(np.eye(3))),
        npz_bytes(scipy.sparse.bsr_matrix(np.eye(4), blocksize=(2, 2))),
        npz_bytes(scipy.sparse.coo_matrix(([1.0], ([0], [0])), shape=(10**12, 4))),  # indptr would be 8 TB
        "text, not bytes",
    ],
)
def test_npz_malformed_is_400_one_line(body):
    with pytest.raises(BadRequest) as info:
        dec(body, NPZ)
    assert_clean_error(info.value, 400)


def test_npz_coo_out_of_its_shape_is_400():
    members = {
        "format.npy": npy_bytes(np.array(b"coo")),
        "shape.npy": npy_bytes(np.array([2, 2])),
        "data.npy": npy_bytes(np.array([1.0])),
        "row.npy": npy_bytes(np.array([5])),
        "col.npy": npy_bytes(np.array([0])),
    }
    with pytest.raises(BadRequest) as info:
        dec(npz_of(members), NPZ)
    assert_clean_error(info.value, 400)


def test_npz_zip_bomb_is_refused_before_inflating():
    # 2x the limit of zeros deflates to a few hundred KB; the declared sizes are refused before reading.
    rows = MAX_EXPANDED_BYTES // (8 * 1024) * 2
    data = np.zeros(rows * 1024)
    members = csr_members(
        shape=npy_bytes(np.array([rows, 1024])),
        data=npy_bytes(data),
        indices=npy_bytes(np.zeros(data.size, dtype=np.int32)),
        indptr=npy_bytes(np.arange(0, data.size + 1, 1024, dtype=np.int64)),
    )
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, member in members.items():
            archive.writestr(name, member)
    body = buf.getvalue()
    assert len(body) < 6 * 1024 * 1024
    with pytest.raises(BadRequest, match="expand to more than"):
        dec(body, NPZ)


def test_unknown_content_type_is_415_naming_supported():
    with pytest.raises(UnsupportedMediaType) as info:
        dec(b"1,2", "application/x-www-form-urlencoded")
    assert_clean_error(info.value, 415)
    assert "text/csv" in info.value.message and "application/x-npy" in info.value.message
    assert "application/x-npz" in info.value.message


# --- encoders ---

PREDICTION = {"predictions": [0, 2], "probabilities": [[0.75, 0.25, 0.0], [0.1, 0.2, 0.7]]}


def test_encode_json():
    assert json.loads(encode(PREDICTION, JSON)) == PREDICTION
    assert json.loads(encode(np.array([1.5, np.nan]), JSON)) == {"predictions": [1.5, None]}
    assert json.loads(encode({"predictions": np.array([np.int64(3)])}, JSON)) == {"predictions": [3]}


def test_encode_csv():
    assert encode(PREDICTION, CSV) == b"0,0.75,0.25,0.0\n2,0.1,0.2,0.7\n"
    assert encode({"predictions": ["a", "b,c"]}, CSV) == b'a\n"b,c"\n'
    assert encode({"predictions": [[1, 2], [3, 4]]}, CSV) == b"1,2\n3,4\n"  # multi-output


def test_encode_jsonlines():
    lines = encode(PREDICTION, JSONLINES).decode().splitlines()
    assert [json.loads(line) for line in lines] == [
        {"prediction": 0, "probabilities": [0.75, 0.25, 0.0]},
        {"prediction": 2, "probabilities": [0.1, 0.2, 0.7]},
    ]


def test_encode_npy_is_loadable_without_pickle():
    out = np.load(io.BytesIO(encode(PREDICTION, NPY)), allow_pickle=False)
    np.testing.assert_array_equal(out, [0, 2])
    out = np.load(io.BytesIO(encode({"predictions": ["setosa", "virginica"]}, NPY)), allow_pickle=False)
    assert out.tolist() == ["setosa", "virginica"]
    out = np.load(io.BytesIO(encode([1, "x"], NPY)), allow_pickle=False)  # mixed objects become strings
    assert out.tolist() == ["1", "x"]


def test_encode_unsupported():
    with pytest.raises(NotAcceptable):
        encode(PREDICTION, "text/html")
    with pytest.raises(InferenceError) as info:
        encode("not a prediction", CSV)
    assert info.value.status == 500


# --- errors and settings ---


def test_error_body_is_one_short_json_line():
    body = json.loads(error_body(400, "bad\nthing\n" + "x" * 1000))
    assert body["code"] == 400 and body["type"] == "BadRequest"
    assert "\n" not in body["message"] and len(body["message"]) <= 300
    assert json.loads(error_body(413, "big"))["type"] == "PayloadTooLarge"
    assert json.loads(error_body(418, "tea"))["type"] == "ImATeapot"


def test_to_error(caplog):
    err = BadRequest("x")
    assert to_error(err) is err
    assert isinstance(to_error(MemoryError()), InsufficientMemory)
    with caplog.at_level(logging.ERROR, logger="sklearn_mme.handler.errors"):
        try:
            raise KeyError("secret detail")
        except KeyError as exc:
            mapped = to_error(exc)
    assert_clean_error(mapped, 500)
    assert mapped.message == "Internal error: KeyError" and "secret" not in mapped.message
    assert "Traceback" in caplog.text  # the traceback goes to the log


def test_inference_error_message_is_one_line():
    err = InferenceError("line one\n  Traceback-free line two", status=418)
    assert err.status == 418 and err.message == "line one Traceback-free line two"


def test_settings_from_env(set_env):
    assert Settings.from_env({}) == Settings()
    s = Settings.from_env(
        {
            "SAGEMAKER_MAX_PAYLOAD_IN_MB": "0.5",
            "SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT": "Text/CSV",
            "MME_SKOPS_TRUSTED_TYPES": " a.B , c.D,,",
            "MME_DEFAULT_CONTENT_TYPE": "application/json",
        }
    )
    assert s.max_payload_bytes == 512 * 1024 and s.default_accept == CSV and s.default_content_type == JSON
    assert s.skops_trusted_types == ("a.B", "c.D")
    for name, bad in (("SAGEMAKER_MAX_PAYLOAD_IN_MB", "-1"), ("SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT", "x/y")):
        with pytest.raises(SettingsError, match=f"^{name}='{bad}' "):
            Settings.from_env({name: bad})
    set_env(SAGEMAKER_MAX_PAYLOAD_IN_MB="1")
    assert get_settings().max_payload_bytes == 1024 * 1024
    assert get_settings() is get_settings()


@pytest.mark.parametrize(
    ("raw", "program"), [("serve.py", "serve.py"), (" serve ", "serve.py"), ("x.y.py", "x.y.py")]
)
def test_settings_sagemaker_program(raw, program):
    assert Settings.from_env({"SAGEMAKER_PROGRAM": raw}).program == program
    blank = Settings.from_env({"SAGEMAKER_PROGRAM": " "})
    assert blank.program == "inference.py"  # blank is unset, as for every variable


@pytest.mark.parametrize(
    "raw", ["code/serve.py", "../serve.py", "/opt/ml/code/serve.py", "a\\b.py"]
)
def test_settings_sagemaker_program_path_is_an_error(raw):
    with pytest.raises(SettingsError, match="SAGEMAKER_PROGRAM"):
        Settings.from_env({"SAGEMAKER_PROGRAM": raw})
