"""The safetensors header parser against Python's json module: names with every kind of JSON
escape come back exactly, and text that is not JSON is refused as the reference reader refuses it
(InvalidHeaderDeserialization), with the byte offset of the problem."""
import json
import struct

import pytest

pytestmark = pytest.mark.cli

ENTRY = '{"dtype":"U8","shape":[1],"data_offsets":[%d,%d]}'


def write_header(path, text, data_len):
    raw = text.encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\x07" * data_len)


NAMES = ["plain", "with space", "quote\"d", "back\\slash", "tab\there", "new\nline",
         "caf\u00e9", "\u4e2d\u6587", "emoji \U0001F600", "ctrl \u0001", "slash/ok", ""]


@pytest.mark.parametrize("ascii_only", [True, False])
def test_escaped_names_round_trip(nnp, tmp_path, ascii_only):
    header = {n: {"dtype": "U8", "shape": [1], "data_offsets": [i, i + 1]}
              for i, n in enumerate(NAMES)}
    f = tmp_path / "names.safetensors"
    write_header(f, json.dumps(header, ensure_ascii=ascii_only), len(NAMES))
    doc = json.loads(nnp("ls", "--json", f, check=0).stdout)
    assert [r["name"] for r in doc["files"][0]["records"]] == NAMES


@pytest.mark.parametrize("ascii_only", [True, False])
def test_long_escaped_strings_round_trip(nnp, tmp_path, ascii_only):
    """Strings of every length up to a few kilobytes, made of escapes and plain runs of every
    length, come back exactly: the scanner copies whole runs and makes room once per run, so an
    escape at the end of its buffer is where it would go wrong."""
    pieces = ["\"", "\\", "\n", "\t", "\u0001", "/", "\u00e9", "\u4e2d", "\U0001F600"]
    values = {}
    for n in range(1, 3000, 37):
        run = "x" * (n % 300)
        values[f"k{n}"] = "".join(run[: (i * 7) % 41] + pieces[i % len(pieces)]
                                  for i in range(n // 5 + 1))
    names = {"\"" * n + "n" + str(n): {"dtype": "U8", "shape": [1], "data_offsets": [i, i + 1]}
             for i, n in enumerate((1, 255, 256, 257, 1000))}
    f = tmp_path / "long.safetensors"
    write_header(f, json.dumps({"__metadata__": values, **names}, ensure_ascii=ascii_only),
                 len(names))
    doc = json.loads(nnp("ls", "--json", "--meta", f, check=0).stdout)
    assert doc["files"][0]["metadata"] == values
    assert [r["name"] for r in doc["files"][0]["records"]] == list(names)


def test_escaped_solidus_and_whitespace(nnp, tmp_path):
    f = tmp_path / "ws.safetensors"
    text = ' \r\n\t{ "a\\/b" : { "shape" : [ 1 ] , "dtype" : "U8" , "data_offsets" : ' \
           '[ 0 , 1 ] , "x" : { "n" : [ true, false, null, -1.5e3, "s" ] } } } \n'
    write_header(f, text, 1)
    doc = json.loads(nnp("ls", "--json", f, check=0).stdout)
    assert doc["files"][0]["records"][0]["name"] == "a/b"


@pytest.mark.parametrize("text,where,python_refuses", [
    ('{"a":' + ENTRY % (0, 1) + ',}', 53 + 8, True),        # trailing comma: at the '}'
    ("{'a':1}", 1 + 8, True),                                 # single quotes
    ('{"a":' + ENTRY % (0, 1) + '} x', 54 + 8, True),         # text after the object
    ('{"a":{"dtype":"U8","shape":[01],"data_offsets":[0,1]}}', None, True),  # leading zero
    ('{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"x":NaN}}', None, False),
    ('{"a\x01":1}', 3 + 8, True),                            # raw control character
    ('{"\\ud800":1}', None, False),                         # lone surrogate
    ('{"a\\q":1}', None, True),                             # unknown escape
    ('{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}', None, True),  # unterminated
    ('[' * 200 + ']' * 200, None, False),                     # not an object, deeply nested
    ('{"a":{"dtype":"U8","shape":[-0],"data_offsets":[0,1]}}', None, False),  # -0 is no size
])
def test_not_json_is_refused(nnp, tmp_path, text, where, python_refuses):
    f = tmp_path / "bad.safetensors"
    write_header(f, text, 1)
    p = nnp("ls", f, check=2)
    assert "(InvalidHeaderDeserialization)" in p.stderr
    if where is not None:
        assert f"byte {where}:" in p.stderr
    if python_refuses:  # Python's json is laxer only about NaN and lone surrogates
        with pytest.raises(ValueError):
            json.loads(text)


def test_duplicate_field_in_entry(nnp, tmp_path):
    f = tmp_path / "dup.safetensors"
    write_header(f, '{"a":{"dtype":"U8","dtype":"U8","shape":[1],"data_offsets":[0,1]}}', 1)
    assert 'duplicate field "dtype"' in nnp("ls", f, check=2).stderr
    write_header(f, '{"__metadata__":{"k":"1","k":"2"}}', 0)
    assert "key 'k' twice" in nnp("ls", f, check=2).stderr
