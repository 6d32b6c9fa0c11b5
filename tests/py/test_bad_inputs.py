"""The catalogue of bad inputs: one row per rule of every reader (safetensors, sharded index, npy,
npz and zip, PyTorch checkpoints and their restricted unpickler, GGUF, rules files), each file
built here, each refused by the nnparity command with exit status 2, nothing on stdout and one
line on stderr that names the file, the place (byte offset, tensor, member, line and column) and
the rule. Read the table to see what nnparity refuses and how it says so.

The tests after the table check what one line cannot: a header of ten million entries and a
header length field claiming exabytes are refused fast and in bounded memory, a pickle that
would run a command is refused without running it, and a zip whose sizes lie is not inflated
past what it declares."""
import io
import json
import os
import struct
import subprocess
import sys
import tempfile
import warnings
import zipfile
import zlib

import numpy as np
import pytest

from conftest import BIN, one_line_error, write_safetensors

pytestmark = pytest.mark.cli


# ------------------------------------------------------------------------------------------------
# safetensors

def st(header, data=b"", hlen=None):
    """A safetensors file: the 8-byte header length (the real one unless hlen), header, data."""
    if isinstance(header, dict):
        header = json.dumps(header, separators=(",", ":"))
    if isinstance(header, str):
        header = header.encode()
    return struct.pack("<Q", len(header) if hlen is None else hlen) + header + data


def ent(dtype="F32", shape=(1,), begin=0, end=4):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": [begin, end]}


ONE = '{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'

SAFETENSORS = [
    # (id, bytes, fragments that must all be in the message after "nnparity: FILE: ")
    ("st_truncated_length", b"\x10\x00\x00", ["byte 0", "shorter than the 8-byte header length",
                                               "(HeaderTooSmall)"]),
    ("st_length_past_end", st(ONE, b"\0" * 4, hlen=4096), ["byte 0", "header length 4096 runs "
                                                           "past the end", "(InvalidHeaderLength)"]),
    ("st_length_huge", st(ONE, hlen=1 << 63), ["byte 0", "header length 9223372036854775808",
                                               "(HeaderTooLarge)"]),
    ("st_utf8", st(b'{"a\xff":1}'), ["byte 11", "not valid UTF-8", "(InvalidHeader)"]),
    ("st_utf8_overlong", st(b'{"\xc0\xaf":1}'), ["byte 10", "(InvalidHeader)"]),
    ("st_json", st('{"a":{"dtype":"F32",'), ["byte ", "not valid JSON",
                                            "(InvalidHeaderDeserialization)"]),
    ("st_not_object", st("[1,2]"), ["byte 8", "not a JSON object",
                                   "(InvalidHeaderDeserialization)"]),
    ("st_trailing_json", st("{} x"), ["byte ", "(InvalidHeaderDeserialization)"]),
    ("st_duplicate_tensor", st('{"a":' + json.dumps(ent()) + ',"a":' + json.dumps(ent(begin=4, end=8))
                               + "}", b"\0" * 8), ["tensor 'a' appears twice", "(duplicate key)"]),
    ("st_duplicate_field", st('{"a":{"dtype":"F32","dtype":"F32","shape":[1],'
                              '"data_offsets":[0,4]}}', b"\0" * 4),
     ["tensor 'a'", "duplicate field \"dtype\"", "(InvalidHeaderDeserialization)"]),
    ("st_duplicate_meta_key", st('{"__metadata__":{"k":"1","k":"2"}}'),
     ["__metadata__ has key 'k' twice", "(InvalidHeaderDeserialization)"]),
    ("st_duplicate_metadata", st('{"__metadata__":{},"__metadata__":{}}'),
     ["__metadata__ appears twice", "(InvalidHeaderDeserialization)"]),
    ("st_meta_not_string", st('{"__metadata__":{"k":1}}'),
     ["__metadata__ value of 'k' is not a string", "(InvalidHeaderDeserialization)"]),
    ("st_unknown_dtype", st({"a": ent("F33")}, b"\0" * 4),
     ["tensor 'a'", "unknown dtype \"F33\"", "(InvalidHeaderDeserialization)"]),
    ("st_unsupported_dtype", st({"a": ent("C64", end=8)}, b"\0" * 8),
     ["tensor 'a'", "dtype C64 is not supported"]),
    ("st_missing_offsets", st('{"a":{"dtype":"F32","shape":[1]}}'),
     ["tensor 'a'", "missing \"data_offsets\"", "(InvalidHeaderDeserialization)"]),
    ("st_negative_dim", st('{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,0]}}'),
     ["tensor 'a'", "dimension 0 is negative", "(InvalidHeaderDeserialization)"]),
    ("st_dim_past_64_bits", st('{"a":{"dtype":"F32","shape":[18446744073709551616],'
                               '"data_offsets":[0,0]}}'),
     ["tensor 'a'", "not an integer", "(InvalidHeaderDeserialization)"]),
    ("st_nelem_overflow", st({"a": ent(shape=(1 << 32, 1 << 32, 2), end=0)}),
     ["tensor 'a'", "overflows 64 bits", "(ValidationOverflow)"]),
    ("st_size_mismatch", st({"a": ent(shape=(2,), end=4)}, b"\0" * 4),
     ["tensor 'a'", "span 4 bytes but shape and dtype F32 need 8", "(TensorInvalidInfo)"]),
    ("st_offsets_gap", st({"a": ent(), "b": ent(begin=8, end=12)}, b"\0" * 12),
     ["tensor 'b'", "[8, 12] leave a gap", "(InvalidOffset)"]),
    ("st_offsets_overlap", st({"a": ent(end=8, shape=(2,)), "b": ent(begin=4, end=8)}, b"\0" * 8),
     ["tensor 'b'", "overlap the previous tensor", "(InvalidOffset)"]),
    ("st_offsets_reversed", st({"a": ent(begin=4, end=0)}, b"\0" * 4),
     ["tensor 'a'", "end before begin", "(InvalidOffset)"]),
    ("st_trailing_data", st(ONE, b"\0" * 5), ["tensors end at byte", "(MetadataIncompleteBuffer)"]),
    ("st_truncated_data", st(ONE, b"\0" * 3), ["tensors end at byte", "(MetadataIncompleteBuffer)"]),
    ("st_deep_nesting", st('{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":' +
                           "[" * 100_000 + "]" * 100_000 + "}}", b"\0" * 4),
     ["byte ", "(InvalidHeaderDeserialization)"]),
    ("st_partial_lists_tensors", st({"__metadata__": {"nnparity.partial": "x.journal"}, "a": ent()},
                                    b"\0" * 4), ["a partial dump's header lists tensors"]),
]

# the entry, metadata and provenance rules the rows above do not reach, each by its whole message
REC = '{"__metadata__":{"nnparity.records":%s},"x":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}'
SAFETENSORS += [
    ("st_entry_not_object", st('{"a":[1]}'),
     ["tensor 'a': entry is not an object (InvalidHeaderDeserialization)"]),
    ("st_dtype_not_string", st('{"a":{"dtype":1,"shape":[1],"data_offsets":[0,4]}}', b"\0" * 4),
     ["tensor 'a': \"dtype\" is not a string (InvalidHeaderDeserialization)"]),
    ("st_shape_not_array", st('{"a":{"dtype":"F32","shape":1,"data_offsets":[0,4]}}', b"\0" * 4),
     ["tensor 'a': \"shape\" is not an array (InvalidHeaderDeserialization)"]),
    ("st_offsets_one_integer", st('{"a":{"dtype":"F32","shape":[1],"data_offsets":[0]}}',
                                  b"\0" * 4),
     ["tensor 'a': \"data_offsets\" is not two non-negative integers "
      "(InvalidHeaderDeserialization)"]),
    ("st_offsets_negative", st('{"a":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}}',
                               b"\0" * 4),
     ["tensor 'a': \"data_offsets\" is not two non-negative integers "
      "(InvalidHeaderDeserialization)"]),
    ("st_missing_dtype", st('{"a":{"shape":[1],"data_offsets":[0,4]}}', b"\0" * 4),
     ["tensor 'a': missing \"dtype\" (InvalidHeaderDeserialization)"]),
    ("st_missing_shape", st('{"a":{"dtype":"F32","data_offsets":[0,4]}}', b"\0" * 4),
     ["tensor 'a': missing \"shape\" (InvalidHeaderDeserialization)"]),
    ("st_meta_not_object", st('{"__metadata__":[1]}'),
     ["__metadata__ is not an object (InvalidHeaderDeserialization)"]),
    ("st_records_not_object", st(REC % '"[1]"', b"\0"),
     ["metadata 'nnparity.records' entry 0: not an object"]),
    ("st_records_empty_entry", st(REC % '"[{}]"', b"\0"),
     ["metadata 'nnparity.records' entry 0: \"tensor\" is missing"]),
    ("st_records_no_tensor", st(REC % '"[{\\"module\\":\\"m\\"}]"', b"\0"),
     ["metadata 'nnparity.records' entry 0: \"tensor\" is missing"]),
    ("st_records_field_twice", st(REC % '"[{\\"tensor\\":\\"x\\",\\"tensor\\":\\"x\\"}]"', b"\0"),
     ["metadata 'nnparity.records' entry 0: a field appears twice"]),
    ("st_records_not_string", st(REC % '"[{\\"tensor\\":1}]"', b"\0"),
     ["metadata 'nnparity.records' entry 0: \"tensor\", \"module\", \"role\", \"type\" and "
      "\"same_as\" must be strings"]),
    ("st_records_negative_call", st(REC % '"[{\\"tensor\\":\\"x\\",\\"call\\":-1}]"', b"\0"),
     ["metadata 'nnparity.records' entry 0: \"call\" and \"seq\" must be non-negative integers"]),
]


# ------------------------------------------------------------------------------------------------
# sharded checkpoints: an index.json beside its shards (built by put_sharded)

def sharded(weight_map, shards):
    """An HF-style index and its shards: {file name: {tensor: array}} -> files to write."""
    files = {"model.safetensors.index.json":
             json.dumps({"metadata": {}, "weight_map": weight_map}).encode()}
    for name, tensors in shards.items():
        header, blobs, off = {}, [], 0
        for k, v in tensors.items():
            raw = np.asarray(v, "<f4").tobytes()
            header[k] = ent(shape=np.shape(v), begin=off, end=off + len(raw))
            blobs.append(raw)
            off += len(raw)
        files[name] = st(header, b"".join(blobs))
    return files


SHARD = {"s1.safetensors": {"a": [1.0]}, "s2.safetensors": {"b": [2.0]}}
INDEX = "model.safetensors.index.json"
SHARDED = [
    # (id, files, the file the message names first, fragments)
    ("index_json", {INDEX: b'{"weight_map": {'}, INDEX, ["byte ", "not a valid JSON index"]),
    ("index_no_map", {INDEX: b'{"metadata": {}}'}, INDEX, ["index has no \"weight_map\" object"]),
    ("index_outside_dir", sharded({"a": "../s1.safetensors"}, {}), INDEX,
     ["weight_map: tensor 'a' must name a file beside"]),
    ("index_missing_shard", sharded({"a": "s1.safetensors", "b": "gone.safetensors"}, SHARD),
     "gone.safetensors", ["cannot open: No such file or directory"]),
    ("index_wrong_shard", sharded({"a": "s2.safetensors", "b": "s1.safetensors"}, SHARD), INDEX,
     ["weight_map: tensor"]),
    ("index_unlisted_tensor", sharded({"a": "s1.safetensors"},
                                      {"s1.safetensors": {"a": [1.0], "x": [0.0]}}), INDEX,
     ["weight_map does not list tensor 'x'"]),
    ("index_tensor_twice", sharded({"a": "s1.safetensors", "b": "s2.safetensors"},
                                   {"s1.safetensors": {"a": [1.0]},
                                    "s2.safetensors": {"b": [2.0], "a": [3.0]}}),
     "s2.safetensors", ["tensor 'a' is also in", "s1.safetensors (duplicate tensor name)"]),
]

SHARDED += [
    ("index_tensor_not_in_shard", sharded({"a": "s1.safetensors", "x": "s1.safetensors"},
                                          {"s1.safetensors": {"a": [1.0]}}), INDEX,
     ["weight_map: tensor 'x' is not in shard 's1.safetensors'"]),
    ("index_tensor_in_other_shard", sharded({"a": "s2.safetensors", "b": "s1.safetensors"}, SHARD),
     INDEX, ["weight_map: tensor 'a' is in ", "s1.safetensors, not in shard 's2.safetensors'"]),
    ("index_shard_not_a_string", sharded({"a": 1}, {}), INDEX,
     ["weight_map: tensor 'a' must name a file beside the index"]),
]


# ------------------------------------------------------------------------------------------------
# npy

def npy(header, data=b"", version=(1, 0), hlen=None, magic=b"\x93NUMPY"):
    """An .npy file: magic, version, header length, the header padded as numpy pads it, data."""
    if isinstance(header, str):
        header = header.encode("latin-1")
    lenfmt = "<H" if version[0] == 1 else "<I"
    fixed = len(magic) + 2 + struct.calcsize(lenfmt)
    header = header + b" " * ((-(fixed + len(header) + 1)) % 64) + b"\n"
    n = len(header) if hlen is None else hlen
    return magic + bytes(version) + struct.pack(lenfmt, n) + header + data


def npy_dict(descr="'<f4'", fortran="False", shape="(2,)"):
    return "{'descr': %s, 'fortran_order': %s, 'shape': %s, }" % (descr, fortran, shape)


NPY = [
    ("npy_truncated_magic", b"\x93NUMPY\x01", ["byte 7", "(npy magic)"]),
    ("npy_version", npy(npy_dict(), b"\0" * 8, version=(9, 0)), ["byte 6", "(npy version)"]),
    ("npy_header_past_end", npy(npy_dict(), hlen=60000), ["byte 8", "(npy header length)"]),
    ("npy_not_dict", npy("[1, 2]", b""), ["not a Python dict literal", "(npy header)"]),
    ("npy_unknown_key", npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': 1}",
                            b"\0" * 8), ["unexpected key 'x'", "(npy header)"]),
    ("npy_duplicate_key", npy("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, "
                              "'shape': (2,)}", b"\0" * 8), ["key 'descr' appears twice",
                                                             "(npy header)"]),
    ("npy_missing_key", npy("{'descr': '<f4', 'shape': (2,)}", b"\0" * 8),
     ["no 'fortran_order' key", "(npy header)"]),
    ("npy_negative_dim", npy(npy_dict(shape="(-2,)")), ["negative dimension", "(npy header)"]),
    ("npy_dim_past_64_bits", npy(npy_dict(shape="(18446744073709551616,)")),
     ["does not fit in 64 bits", "(npy header)"]),
    ("npy_size_overflow", npy(npy_dict(shape="(4294967296, 4294967296)")),
     ["overflows 64 bits", "(npy header)"]),
    ("npy_fortran_not_bool", npy(npy_dict(fortran="1"), b"\0" * 8),
     ["'fortran_order' is not True or False", "(npy header)"]),
    ("npy_deep_nesting", npy("{'descr': [" + "(" * 10_000 + ")" * 10_000 + "], "
                             "'fortran_order': False, 'shape': (2,)}", b"\0" * 8),
     ["nested more than 32 deep", "(npy header)"]),
    ("npy_object", npy(npy_dict(descr="'|O'"), b"\0" * 16), ["object array"]),
    ("npy_unknown_dtype", npy(npy_dict(descr="'<q7'"), b"\0" * 8), ["dtype '<q7'"]),
    ("npy_truncated_data", npy(npy_dict(), b"\0" * 7), ["(npy data size)"]),
    ("npy_trailing_data", npy(npy_dict(), b"\0" * 9), ["(npy data size)"]),
    ("npy_v3_utf8", npy(npy_dict(descr="'<f4\xff'"), b"\0" * 8, version=(3, 0)),
     ["not valid UTF-8", "(npy 3.0 header)"]),
]

# the header literal's syntax, which the rows above reach only in part; the byte is where the
# parser stopped (10 + its index in the header: the preamble of a 1.0 file is 10 bytes)
NPY += [
    ("npy_string_unclosed", npy("{'descr': '<f4"),  # the padding's final newline ends the string
     ["byte 63: string has no closing quote (npy header)"]),
    ("npy_string_past_end", b"\x93NUMPY\x01\x00" + struct.pack("<H", 14) + b"{'descr': '<f4",
     ["byte 20: string runs past the end of the header (npy header)"]),
    ("npy_value_missing", npy("{'descr': ["),
     ["byte 64: header ends where a value should be (npy header)"]),
    ("npy_literal_colon", npy(npy_dict(descr="[{'a' 1}]"), b"\0" * 8),
     ["byte 26: expected ':' (npy header)"]),
    ("npy_literal_comma", npy(npy_dict(descr="[1 2]"), b"\0" * 8),
     ["byte 23: expected ',' or ']' (npy header)"]),
    ("npy_literal_character", npy(npy_dict(descr="[@]"), b"\0" * 8),
     ["byte 21: unexpected character 0x40 where a value should be (npy header)"]),
]


# ------------------------------------------------------------------------------------------------
# npz and zip

NPY_OK = npy(npy_dict(), np.array([1, 2], "<f4").tobytes())


def zipped(members, method=zipfile.ZIP_STORED):
    buf = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buf, "w", method) as z:
        warnings.simplefilter("ignore")  # a duplicate name is what one row wants
        for name, data in members:
            z.writestr(zipfile.ZipInfo(name), data, compress_type=method)
    return buf.getvalue()


def patch_sizes(raw, name, size=None, comp=None, crc=None):
    """Rewrite a member's sizes or CRC in its local header and central directory entry."""
    raw = bytearray(raw)
    n = name.encode()
    loc = raw.index(b"PK\x03\x04")
    while raw[loc + 30:loc + 30 + len(n)] != n:
        loc = raw.index(b"PK\x03\x04", loc + 4)
    cen = raw.index(b"PK\x01\x02")
    while raw[cen + 46:cen + 46 + len(n)] != n:
        cen = raw.index(b"PK\x01\x02", cen + 4)
    for field, off_local, off_central in ((crc, 14, 16), (comp, 18, 20), (size, 22, 24)):
        if field is not None:
            struct.pack_into("<I", raw, loc + off_local, field)
            struct.pack_into("<I", raw, cen + off_central, field)
    return bytes(raw)


def bomb():
    """A member of 10 MiB of zeros deflated to about 10 KB, declared at 4 GiB - 1."""
    return patch_sizes(zipped([("a.npy", NPY_OK + b"\0" * (10 << 20))], zipfile.ZIP_DEFLATED),
                       "a.npy", size=0xFFFFFFFF)


def understated():
    """A deflated member whose data inflates to more than the size it declares."""
    raw = zipped([("a.npy", NPY_OK + b"\0" * 4096)], zipfile.ZIP_DEFLATED)
    return patch_sizes(raw, "a.npy", size=len(NPY_OK), crc=zlib.crc32(NPY_OK))


def wrong_crc():
    """A deflated member whose CRC-32 is off by one bit, found as it is inflated (stored
    members: test_zip_crc.py)."""
    return patch_sizes(zipped([("a.npy", NPY_OK)], zipfile.ZIP_DEFLATED), "a.npy",
                       crc=zlib.crc32(NPY_OK) ^ 1)


def overlapping():
    """Two central directory entries pointing at the same local header and data."""
    raw = bytearray(zipped([("a.npy", NPY_OK), ("b.npy", NPY_OK)]))
    cen_b = raw.index(b"PK\x01\x02", raw.index(b"PK\x01\x02") + 4)
    struct.pack_into("<I", raw, cen_b + 42, 0)  # b's local header offset := a's
    return bytes(raw)


def method(m):
    raw = bytearray(zipped([("a.npy", NPY_OK)]))
    for sig, off in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):
        struct.pack_into("<H", raw, raw.index(sig) + off, m)
    return bytes(raw)


def encrypted():
    raw = bytearray(zipped([("a.npy", NPY_OK)]))
    for sig, off in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        struct.pack_into("<H", raw, raw.index(sig) + off, 1)
    return bytes(raw)


NPZ = [
    ("zip_dotdot", zipped([("../evil.npy", NPY_OK)]),
     ["member '../evil.npy'", "(zip member name)"]),
    ("zip_absolute", zipped([("/etc/evil.npy", NPY_OK)]),
     ["member '/etc/evil.npy'", "(zip member name)"]),
    ("zip_no_eocd", zipped([("a.npy", NPY_OK)])[:-22], ["byte ", "no end of central directory"]),
    ("zip_truncated", zipped([("a.npy", NPY_OK)])[:40], ["byte ", "(zip"]),
    ("zip_bomb_ratio", bomb(), ["member 'a.npy'", "refusing a zip bomb (zip)"]),
    ("zip_duplicate_member", zipped([("a.npy", NPY_OK), ("a.npy", NPY_OK)]),
     ["member 'a.npy'", "appears twice in the central directory (zip)"]),
    ("zip_overlap", overlapping(), ["member 'b.npy'", "(zip"]),
    ("zip_bzip2", method(12), ["member 'a.npy'", "compression method 12 (bzip2) is not supported"]),
    ("zip_encrypted", encrypted(), ["member 'a.npy'", "is encrypted"]),
    ("npz_member_not_npy", zipped([("a.npy", b"hello")]), ["member 'a.npy'", "(npy magic)"]),
]

# data checks that happen when the data is read (stats), not when the archive is listed
NPZ_DATA = [
    ("zip_understated_size", understated(), ["member 'a.npy'", "inflates to more than"]),
    ("zip_crc", wrong_crc(), ["member 'a.npy'", "CRC-32 mismatch", "(zip CRC-32)"]),
]


# The central directory, zip64 and local header rules the rows above do not reach.

def cd_at(raw, i=0):
    """Where central directory entry i starts."""
    off = raw.index(b"PK\x01\x02")
    for _ in range(i):
        off = raw.index(b"PK\x01\x02", off + 4)
    return off


def with_extra(extra):
    """One stored member whose local and central entries carry `extra`."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        info = zipfile.ZipInfo("a.npy")
        info.extra = extra
        z.writestr(info, NPY_OK)
    return buf.getvalue()


def patched(raw, *edits):
    """raw with (offset, struct format, value) edits."""
    raw = bytearray(raw)
    for off, fmt, value in edits:
        struct.pack_into(fmt, raw, off, value)
    return bytes(raw)


ONE_NPY = zipped([("a.npy", NPY_OK)])
TWO_NPY = zipped([("a.npy", NPY_OK), ("b.npy", NPY_OK)])
EOCD = len(ONE_NPY) - 22
CD = cd_at(ONE_NPY)
# zip64 records go before the end record: a locator naming byte 0 (a local header), and a
# zip64 end record whose size field claims a terabyte
LOCATOR_TO_0 = struct.pack("<IIQI", 0x07064B50, 0, 0, 1)
ZIP64_RECORD = struct.pack("<IQHHIIQQQQ", 0x06064B50, 1 << 40, 45, 45, 0, 0, 1, 1, 0, 0)
ZIP64_LOCATOR = struct.pack("<IIQI", 0x07064B50, 0, EOCD, 1)
EXTRA = with_extra(struct.pack("<HH", 0x9999, 16))  # a field claiming 16 bytes, holding none
SHORT64 = with_extra(struct.pack("<HHI", 0x9999, 4, 0))  # made zip64 (id 1) below
SHORT64_CD = cd_at(SHORT64)
RANDOM_NPY = npy("{'descr': '|u1', 'fortran_order': False, 'shape': (4096,), }",
                 np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())

NPZ += [
    ("zip_zip64_locator_nowhere", ONE_NPY[:EOCD] + LOCATOR_TO_0 + ONE_NPY[EOCD:],
     [f"byte {EOCD}: the zip64 locator points to byte 0, where no zip64 end of central "
      "directory record is (zip64)"]),
    ("zip_zip64_record_size", ONE_NPY[:EOCD] + ZIP64_RECORD + ZIP64_LOCATOR + ONE_NPY[EOCD:],
     [f"byte {EOCD + 4}: zip64 end of central directory record size 1099511627776 does not "
      "fit before its locator (zip64)"]),
    ("zip_extra_past_entry", EXTRA,
     [f"byte {cd_at(EXTRA) + 46 + 5}: member 'a.npy': extra field runs past its central "
      "directory entry (zip central directory)"]),
    ("zip_zip64_extra_short", patched(SHORT64, (SHORT64_CD + 51, "<H", 1),
                                  (SHORT64_CD + 24, "<I", 0xFFFFFFFF)),
     [f"byte {SHORT64_CD + 51}: member 'a.npy': zip64 extra field is too short for its sizes "
      "and offset (zip64)"]),
    ("zip_cd_signature", patched(ONE_NPY, (CD, "<I", 0x09014B50)),
     [f"byte {CD}: entry 1 of the central directory does not start with PK\\1\\2 "
      "(zip central directory)"]),
    ("zip_cd_entry_past_end", patched(ONE_NPY, (CD + 28, "<H", 0x1000)),
     [f"byte {CD}: entry 1 runs past the end of the central directory (zip central directory)"]),
    ("zip_cd_trailing_entries", patched(TWO_NPY, (len(TWO_NPY) - 14, "<I", 0x00010001)),
     [f"byte {cd_at(TWO_NPY, 1)}: 51 bytes of the central directory follow its 1 declared "
      "entries (zip central directory)"]),
    ("zip_other_disk", patched(ONE_NPY, (CD + 34, "<H", 1)),
     ["member 'a.npy': is on another disk; split zip archives are not supported"]),
    ("zip_local_encrypted", patched(ONE_NPY, (6, "<H", 1)),  # the central entry says it is not
     ["member 'a.npy': is encrypted; encrypted members are not read"]),
    ("zip_local_into_directory", patched(ONE_NPY, (28, "<H", 0xFFFF)),
     ["member 'a.npy': byte 0: local header runs into the central directory (zip local header)"]),
    ("zip_deflate_corrupt",  # the stream's first block has the reserved type 3
     patched(zipped([("a.npy", NPY_OK)], zipfile.ZIP_DEFLATED), (35, "<B", 0xFF)),
     ["member 'a.npy': deflated data is corrupt near its byte 1: invalid block type (zip)"]),
]

NPZ_DATA += [
    # the header inflates from what is there; the rest of the stream is cut off
    ("zip_deflate_cut", patch_sizes(zipped([("a.npy", RANDOM_NPY)], zipfile.ZIP_DEFLATED), "a.npy",
                                    comp=2000),
     ["member 'a.npy': its 2000 bytes of deflated data end before the deflate stream does (zip)"]),
]


# ------------------------------------------------------------------------------------------------
# PyTorch checkpoints: hand-made pickles inside a torch.save-shaped zip

def checkpoint(pickle_bytes, storages=None, prefix="archive"):
    members = [(f"{prefix}/data.pkl", pickle_bytes)]
    members += [(f"{prefix}/data/{k}", v) for k, v in (storages or {}).items()]
    members.append((f"{prefix}/version", b"3\n"))
    return zipped(members)


def proto(n, body):
    return bytes([0x80, n]) + body + b"."


def marker_path(tmp):
    return tmp / "pwned"


def pickle_global_system(cmd):
    """posix.system(cmd) through GLOBAL and REDUCE (protocol 2)."""
    return proto(2, b"cposix\nsystem\n" + b"X" + struct.pack("<I", len(cmd)) + cmd + b"\x85R")


def pickle_stack_global_system(cmd):
    """os.system(cmd) through STACK_GLOBAL and REDUCE (protocol 4)."""
    s = lambda b: b"\x8c" + bytes([len(b)]) + b  # SHORT_BINUNICODE
    return proto(4, s(b"os") + s(b"system") + b"\x93" + s(cmd) + b"\x85R")


def pickle_eval(cmd):
    return proto(2, b"cbuiltins\neval\n" + b"X" + struct.pack("<I", len(cmd)) + cmd + b"\x85R")


TORCH = [
    # (id, builder taking the marker path, fragments); the marker must never appear
    ("pt_global_os_system", lambda m: checkpoint(pickle_global_system(b"touch " + bytes(m))),
     ["data.pkl byte 2", "global 'posix.system' is not allowed (restricted unpickler)"]),
    ("pt_stack_global_os_system",
     lambda m: checkpoint(pickle_stack_global_system(b"touch " + bytes(m))),
     ["data.pkl byte", "global 'os.system' is not allowed (restricted unpickler)"]),
    ("pt_builtins_eval", lambda m: checkpoint(pickle_eval(b"open('" + bytes(m) + b"','w')")),
     ["data.pkl byte 2", "global 'builtins.eval' is not allowed (restricted unpickler)"]),
    ("pt_inst_opcode", lambda m: checkpoint(proto(2, b"(iposix\nsystem\n")),
     ["data.pkl byte 3", "opcode INST (0x69) is not allowed"]),
    ("pt_unknown_opcode", lambda m: checkpoint(proto(2, b"\xff")),
     ["data.pkl byte 2", "unknown opcode 0xff (restricted unpickler)"]),
    ("pt_truncated_pickle", lambda m: checkpoint(bytes([0x80, 2]) + b"}"),
     ["data.pkl byte", "without a STOP opcode (truncated)"]),
    ("pt_trailing_pickle", lambda m: checkpoint(proto(2, b"}") + b"xx"),
     ["data.pkl byte", "after STOP (trailing data)"]),
    ("pt_memo_unset", lambda m: checkpoint(proto(2, b"h\x05")),
     ["data.pkl byte", "memo index 5"]),
    ("pt_reduce_non_global", lambda m: checkpoint(proto(2, b"})R")),
     ["data.pkl byte", "REDUCE calls a", "(restricted unpickler)"]),
    # torch < 1.6: a pickle of torch's magic number (LONG1 0x1950a86a20f9469cfc6c) first
    ("pt_legacy", lambda m: b"\x80\x02\x8a\x0a" + bytes.fromhex("6cfc9c46f9206aa85019") + b"." +
     b"\0" * 64, ["byte 0", "PyTorch's legacy serialization format", "re-save it"]),
]


def pstr(b):
    """BINUNICODE."""
    b = b if isinstance(b, bytes) else b.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def pid(stype=b"ctorch\nFloatStorage\n", key=pstr("0"), loc=pstr("cpu"), numel=b"K\x04"):
    """BINPERSID of ('storage', stype, key, loc, numel)."""
    return b"(" + pstr("storage") + stype + key + loc + numel + b"tQ"


def ndim_tensor(nd):
    """_rebuild_tensor_v2 of storage '0' with nd sizes and strides of 1."""
    ones = b"(" + b"K\x01" * nd + b"t"
    return (b"ctorch._utils\n_rebuild_tensor_v2\n(" + pid() + b"K\x00" + ones + ones +
            b"\x89ccollections\nOrderedDict\n)RtR")


F4 = {"0": b"\0" * 16}
TORCH += [
    ("pt_pid_storage_type", lambda m: checkpoint(proto(2, pid(stype=pstr("FloatStorage"))), F4),
     ["data.pkl byte 49: persistent id's storage type is a str, not a torch storage class "
      "(persistent id)"]),
    ("pt_pid_numel_negative", lambda m: checkpoint(proto(2, pid(numel=b"J\xff\xff\xff\xff")), F4),
     ["data.pkl byte 55: persistent id's key, location and numel are a str, a str and an int "
      "below 0, not str, str and a non-negative int (persistent id)"]),
    ("pt_storage_key_nul", lambda m: checkpoint(proto(2, pid(key=pstr(b"0\0x"))), F4),
     ["data.pkl byte 54: storage key '0?x' holds a NUL byte or is over 256 bytes "
      "(persistent id)"]),
    ("pt_rebuild_tensor_arity", lambda m: checkpoint(
        proto(2, b"ctorch._utils\n_rebuild_tensor_v2\n)R"), F4),
     ["data.pkl byte 36: _rebuild_tensor_v2(storage, storage_offset, size, stride, "
      "requires_grad, backward_hooks[, metadata]) called with 0 arguments"]),
    ("pt_too_many_dims", lambda m: checkpoint(proto(2, ndim_tensor(65)), F4),
     ["data.pkl byte 382: tensor has 65 dimensions, more than 64"]),
    ("pt_reduce_not_tuple", lambda m: checkpoint(proto(2, b"ccollections\nOrderedDict\n]R")),
     ["data.pkl byte 28: REDUCE of 'collections.OrderedDict' takes a tuple of arguments, "
      "not a list"]),
    ("pt_rebuild_parameter", lambda m: checkpoint(
        proto(2, b"ctorch._utils\n_rebuild_parameter\nNNN\x87R")),
     ["data.pkl byte 39: torch._utils._rebuild_parameter called with 3 arguments, the first not "
      "a tensor (expected a tensor, requires_grad and hooks)"]),
    ("pt_appends_on_dict", lambda m: checkpoint(proto(2, b"}(Ne")),
     ["data.pkl byte 5: APPENDS on a dict (restricted unpickler)"]),
    ("pt_stack_global_not_strings", lambda m: checkpoint(proto(4, b"K\x01K\x02\x93")),
     ["data.pkl byte 6: STACK_GLOBAL takes two strings, not an int and an int"]),
    ("pt_key_nul", lambda m: checkpoint(proto(2, b"}" + pstr(b"a\0b") + b"K\x01s")),
     ["data.pkl byte 3: dict key holds a NUL byte (tensor name)"]),
    ("pt_name_too_long", lambda m: checkpoint(proto(2, b"}" + pstr(b"k" * 4097) + b"K\x01s")),
     ["data.pkl byte 3: a tensor name built from the nested keys is longer than 4096 bytes"]),
    # 400 names of 4,000 bytes from a pickle of 4,4xx: past 16 bytes a pickle byte plus 1 MiB
    ("pt_output_bound", lambda m: checkpoint(proto(2, b"}" + pstr(b"k" * 4000) + b"](" +
                                                   b"N" * 400 + b"es")),
     ["data.pkl: the names and values built from the pickle pass 1119184 bytes (shared "
      "containers multiply them; amplification bound)"]),
]


# ------------------------------------------------------------------------------------------------
# GGUF

def gguf(version=3, kv=b"", nkv=0, tensors=b"", ntensors=0, data=b"", align=32):
    head = b"GGUF" + struct.pack("<IQQ", version, ntensors, nkv) + kv + tensors
    head += b"\0" * (-len(head) % align)
    return head + data


def gstr(b):
    return struct.pack("<Q", len(b)) + b


def gkv(key, vtype, payload):
    return gstr(key) + struct.pack("<I", vtype) + payload


def gtensor(name=b"w", dims=(4,), ttype=0, offset=0):
    return gstr(name) + struct.pack("<I", len(dims)) + struct.pack(f"<{len(dims)}Q", *dims) + \
        struct.pack("<IQ", ttype, offset)


def sparse(raw, size):
    """raw, then zeros up to `size` bytes (written as a sparse file: no disk used)."""
    return (raw, size)


W = gtensor()
GGUF = [
    ("gguf_truncated_header", b"GGUF\x03\x00\x00\x00\x01", ["byte 0", "(gguf truncated)"]),
    ("gguf_version", gguf(version=1), ["byte 4", "GGUF version 1 is not read", "(gguf version)"]),
    ("gguf_big_endian", gguf(version=3 << 24), ["byte 4", "big-endian", "(gguf version)"]),
    ("gguf_counts_past_end", gguf(nkv=1 << 40), ["byte 16", "(gguf counts)"]),
    ("gguf_kv_cap", sparse(gguf(nkv=(1 << 20) + 1), 15 << 20),
     ["byte 16", "reads at most 1048576", "(gguf count cap)"]),
    ("gguf_key_past_end", gguf(nkv=1, kv=struct.pack("<Q", 1000) + b"k" * 10, align=1),
     ["byte 24", "the key of key-value pair 0 is 1000 bytes long, but only 10 bytes follow",
      "(gguf string length)"]),
    ("gguf_string_past_end", gguf(nkv=1, kv=gkv(b"k", 8, struct.pack("<Q", 1 << 40))),
     ["byte 37", "only", "(gguf string length)"]),
    ("gguf_string_cap", sparse(gguf(nkv=1, kv=gkv(b"k", 8, struct.pack("<Q", (16 << 20) + 1))),
                               17 << 20), ["byte 37", "reads at most 16777216",
                                           "(gguf string cap)"]),
    ("gguf_array_past_end", gguf(nkv=1, kv=gkv(b"k", 9, struct.pack("<IQ", 0, 1 << 40))),
     ["byte 41", "key 'k'", "(gguf array length)"]),
    ("gguf_array_cap", sparse(gguf(nkv=1, kv=gkv(b"k", 9, struct.pack("<IQ", 0, (1 << 30) + 1))),
                              (1 << 30) + 4096), ["byte 41", "key 'k'", "(gguf array cap)"]),
    ("gguf_string_utf8", gguf(nkv=1, kv=gkv(b"k", 8, gstr(b"\xff"))),
     ["byte 45", "not valid UTF-8", "(gguf string)"]),
    ("gguf_key_utf8", gguf(nkv=1, kv=gkv(b"k\xfe", 0, b"\x01")), ["byte 33", "(gguf string)"]),
    ("gguf_empty_key", gguf(nkv=1, kv=gkv(b"", 0, b"\x01")), ["byte 24", "(gguf name)"]),
    ("gguf_bool", gguf(nkv=1, kv=gkv(b"k", 7, b"\x02")), ["byte 37", "key 'k'"]),
    ("gguf_value_type", gguf(nkv=1, kv=gkv(b"k", 99, b"")), ["byte 33", "(gguf value type)"]),
    ("gguf_duplicate_key", gguf(nkv=2, kv=2 * gkv(b"k", 0, b"\x01")),
     ["byte 38", "key 'k' appears twice; the first is at byte 24", "(gguf duplicate key)"]),
    ("gguf_alignment", gguf(nkv=1, kv=gkv(b"general.alignment", 4, struct.pack("<I", 3))),
     ["general.alignment", "power of two"]),
    ("gguf_duplicate_tensor", gguf(ntensors=2, tensors=W + gtensor(offset=32), data=b"\0" * 64),
     ["tensor name 'w' appears twice", "(gguf duplicate tensor name)"]),
    ("gguf_too_many_dims", gguf(ntensors=1, tensors=gtensor(dims=(1,) * 9), data=b"\0" * 4),
     ["byte ", "tensor 'w'", "9 dimensions"]),
    ("gguf_dim_overflow", gguf(ntensors=1, tensors=gtensor(dims=(1 << 63,)), data=b"\0" * 4),
     ["byte ", "tensor 'w'"]),
    ("gguf_nelem_overflow", gguf(ntensors=1, tensors=gtensor(dims=(1 << 40, 1 << 40)),
                                 data=b"\0" * 4), ["byte ", "tensor 'w'"]),
    ("gguf_unknown_type", gguf(ntensors=1, tensors=gtensor(ttype=77), data=b"\0" * 16),
     ["byte ", "ggml type 77"]),
    ("gguf_unaligned", gguf(ntensors=1, tensors=gtensor(offset=8), data=b"\0" * 32),
     ["byte ", "not a multiple of the alignment"]),
    ("gguf_past_end", gguf(ntensors=1, tensors=W, data=b"\0" * 15),
     ["byte ", "past the end of the file"]),
    ("gguf_overlap", gguf(ntensors=2, tensors=gtensor(dims=(16,)) + gtensor(b"v", offset=32),
                          data=b"\0" * 64),
     ["byte 57", "tensors 'w' and 'v' overlap", "(gguf tensor data)"]),
    ("gguf_reserved_key", gguf(nkv=1, kv=gkv(b"gguf.tensor_type.w", 0, b"\x01")),
     ["gguf.tensor_type."]),
]

GGUF += [
    ("gguf_array_item_type", gguf(nkv=1, kv=gkv(b"k", 9, struct.pack("<IQ", 99, 1))),
     ["byte 37: key 'k': array item type 99 is no GGUF value type (gguf value type)"]),
    ("gguf_tensor_cap", sparse(gguf(ntensors=(1 << 20) + 1), 27 << 20),
     ["byte 8: 1048577 tensors; nnparity reads at most 1048576 (gguf count cap)"]),
]


# ------------------------------------------------------------------------------------------------
# rules files (nnparity diff --rules FILE): line and column of what is wrong

RULES = [
    ("rules_bad_regex", b"# comment\nignore (open\n", ["line 2, column 8", "bad regex '(open'"]),
    ("rules_unknown_rule", b"rename a b\n  transmogrify x y\n",
     ["line 2, column 3", "unknown rule 'transmogrify'"]),
    ("rules_missing_replacement", b"rename x\n", ["line 1, column 9",
                                                   "needs a regex and a replacement"]),
    ("rules_bad_group", b"rename (a) \\2\n", ["line 1, column 12", "\\2 refers to a group"]),
    ("rules_bad_axes", b"transpose ^w$ 1,x\n", ["line 1, column 15", "is not a list of axes"]),
    ("rules_unknown_cast", b"cast ^w$ I8\n", ["line 1", "cast takes F64, F32, F16 or BF16"]),
    ("rules_unknown_component", b"component ^w$ mixer\n", ["line 1", "'mixer' is not a component"]),
    ("rules_exponential_regex", b"rename a" + b"+" * 30 + b" b\n", ["line 1, column 10",
                                                                   "bad regex"]),
    ("rules_binary", b"rename a b\n\0\0", ["not a text file"]),
    ("rules_utf8", b"rename \xff b\n", ["not a text file"]),
]

RULES += [
    ("rules_gather_needs_axis", b"gather ^w$ concat\n",
     ["line 1, column 18: 'gather REGEX concat' needs the axis to join along"]),
    ("rules_gather_extra_word", b"gather ^w$ sum 3\n",
     ["line 1, column 16: unexpected '3' after the rule"]),
    ("rules_gather_axis", b"gather ^w$ concat x\n",
     ["line 1, column 19: 'x' is not an axis (an integer)"]),
    ("rules_gather_mode", b"gather ^w$ avg\n",
     ["line 1, column 12: 'avg' is not a way to gather (concat AXIS, sum or rank0)"]),
    ("rules_negative_tolerance", b"tolerance ^w$ 1e-3 -1\n",
     ["line 1, column 20: '-1' is not a tolerance (a number >= 0)"]),
    ("rules_concat_axis", b"concat ^(q|k)$ x q k\n",
     ["line 1, column 16: 'x' is not an axis (an integer)"]),
    ("rules_split_part_size", b"split ^(q|k)$ 0 q:x k:2\n",
     ["line 1, column 19: 'x' is not a part size"]),
    ("rules_split_part_label", b"split ^(q|k)$ 0 :2 k:2\n",
     ["line 1, column 17: ':2': a part needs a label"]),
    ("rules_slice_axis", b"slice ^w$ x 0:2\n",
     ["line 1, column 11: 'x' is not an axis (an integer)"]),
    ("rules_select_index", b"select ^w$ 0 x\n",
     ["line 1, column 14: 'x' is not an index (an integer)"]),
    ("rules_ref_alone", b"  ref\n", ["line 1, column 3: 'ref' needs an adapter after it"]),
    ("rules_regex_too_long", b"ignore " + b"a" * 4097 + b"\n",
     ["line 1, column 8: the regex is longer than 4096 characters"]),
    # each split makes a record per label of every record before it: refused past 1024
    ("rules_split_blowup", b"split (w|a|b|c|d|e|f|g) 0 w a b c d e f g\n" * 12,
     ["line 4: the rules make 'w' into 4096 records, more than 1024"]),
]


# ------------------------------------------------------------------------------------------------
# Running the table

def write_input(tmp_path, name, content):
    """Write one row's file(s); returns the path given to the command."""
    if isinstance(content, dict):  # a directory of files: the index is the input
        for fname, data in content.items():
            (tmp_path / fname).write_bytes(data)
        return tmp_path / "model.safetensors.index.json"
    path = tmp_path / name
    if isinstance(content, tuple):
        raw, size = content
        with open(path, "wb") as f:
            f.write(raw)
            f.truncate(size)
    else:
        path.write_bytes(content)
    return path


def expect(nnp, cmd, path, fragments):
    line = one_line_error(nnp(*cmd, path), path)
    for frag in fragments:
        assert frag in line, (frag, line)
    return line


EXT = {"st": ".safetensors", "npy": ".npy", "zip": ".npz", "npz": ".npz", "pt": ".pt",
       "gguf": ".gguf"}


@pytest.mark.parametrize("name,content,fragments",
                         SAFETENSORS + NPY + NPZ + GGUF,
                         ids=[r[0] for r in SAFETENSORS + NPY + NPZ + GGUF])
def test_refused_by_ls_and_stats(nnp, tmp_path, name, content, fragments):
    path = write_input(tmp_path, name + EXT[name.split("_")[0]], content)
    for cmd in (("ls",), ("stats",)):
        expect(nnp, cmd, path, fragments)


@pytest.mark.parametrize("name,content,fragments", NPZ_DATA, ids=[r[0] for r in NPZ_DATA])
def test_refused_when_data_is_read(nnp, tmp_path, name, content, fragments):
    path = write_input(tmp_path, name + ".npz", content)
    nnp("ls", path, check=0)  # the directory is sound; the member's data is not
    expect(nnp, ("stats",), path, fragments)


@pytest.mark.parametrize("name,content,named,fragments", SHARDED, ids=[r[0] for r in SHARDED])
def test_sharded_index_refused(nnp, tmp_path, name, content, named, fragments):
    index = write_input(tmp_path, name, content)
    line = one_line_error(nnp("ls", index), tmp_path / named)
    for frag in fragments:
        assert frag in line, (frag, line)


@pytest.mark.parametrize("name,build,fragments", TORCH, ids=[r[0] for r in TORCH])
def test_torch_refused_and_nothing_runs(nnp, tmp_path, name, build, fragments):
    marker = marker_path(tmp_path)
    path = write_input(tmp_path, name + ".pt", build(marker))
    for cmd in (("ls",), ("stats",)):
        expect(nnp, cmd, path, fragments)
    assert not marker.exists()


def test_python_would_run_the_hostile_pickles(tmp_path):
    """The hostile pickles above are real: Python's own unpickler runs them (in a child process,
    on a marker file), so the test above shows nnparity refusing code that would run."""
    marker = marker_path(tmp_path)
    for make in (pickle_global_system, pickle_stack_global_system):
        assert not marker.exists()
        code = "import pickle, sys; pickle.loads(sys.stdin.buffer.read())"
        subprocess.run([sys.executable, "-c", code], input=make(b"touch " + bytes(marker)),
                       check=True, capture_output=True)
        assert marker.exists()
        marker.unlink()


@pytest.mark.parametrize("name,text,fragments", RULES, ids=[r[0] for r in RULES])
def test_rules_refused_with_line_and_column(nnp, tmp_path, name, text, fragments):
    rules = tmp_path / f"{name}.rules"
    rules.write_bytes(text)
    x = tmp_path / "x.safetensors"
    write_safetensors(x, {"w": np.zeros(2, np.float32)})
    p = nnp("diff", "--rules", rules, x, x)
    line = one_line_error(p, rules)
    for frag in fragments:
        assert frag in line, (frag, line)


# ------------------------------------------------------------------------------------------------
# partial dumps (a capture that never finished): the placeholder header names a journal beside it,
# one JSON line per record; `nnparity ls` reads the two together

def partial(journal_name="j.journal", data=b"\0" * 4):
    """A partial dump's placeholder header, padded to a multiple of 8 as the writer pads it."""
    text = json.dumps({"__metadata__": {"nnparity.partial": journal_name}}).encode()
    text += b" " * (-len(text) % 8)
    return st(text, data), len(text)


ROOM = partial()[1]
HEAD = b'{"nnparity.journal":1,"room":%d}\n' % ROOM
REC0 = {"tensor": "t", "seq": 0, "dtype": "F32", "shape": [1], "data_offsets": [0, 4]}


def rec(**fields):
    return json.dumps({**REC0, **fields}).encode() + b"\n"


JOURNAL = [
    # (id, journal text, fragments of the message after "nnparity: JOURNAL: ")
    ("journal_empty", b"", ["the journal of partial dump ", " is empty"]),
    ("journal_syntax", HEAD + b'{"tensor":\n', ["line 2, column 10: "]),
    ("journal_not_object", HEAD + b"[1]\n", ["line 2: not a JSON object"]),
    ("journal_room", b'{"nnparity.journal":1,"room":3}\n',
     ["line 1: does not describe a partial dump's header room"]),
    ("journal_room_mismatch", b'{"nnparity.journal":1,"room":%d}\n' % (ROOM - 8),
     ["line 1: names a header room that is not the partial dump's"]),
    ("journal_not_record", HEAD + rec(tensor=1), ["line 2: not a record entry"]),
    ("journal_unknown_dtype", HEAD + rec(dtype="F33"), ["line 2: unknown dtype"]),
    ("journal_too_many_dims", HEAD + rec(shape=[1] * 65), ["line 2: more than 64 dimensions"]),
    ("journal_negative_dim", HEAD + rec(shape=[-1]),
     ["line 2: a dimension is not a non-negative integer"]),
    ("journal_size_mismatch", HEAD + rec(shape=[2]),
     ["line 2: tensor 't' spans 4 bytes but its shape and dtype need 8 (TensorInvalidInfo)"]),
    ("journal_meta_not_pair", HEAD + b'{"meta":["k"]}\n',
     ["line 2: \"meta\" is not a [key, value] pair"]),
]


@pytest.mark.parametrize("name,text,fragments", JOURNAL, ids=[r[0] for r in JOURNAL])
def test_partial_dump_journal_refused(nnp, tmp_path, name, text, fragments):
    path = tmp_path / "x.safetensors.partial"
    path.write_bytes(partial()[0])
    (tmp_path / "j.journal").write_bytes(text)
    line = one_line_error(nnp("ls", path), tmp_path / "j.journal")
    for frag in fragments:
        assert frag in line, (frag, line)


def test_persistent_id_message_names_only_the_wrong_fields(nnp, tmp_path):
    """A persistent id whose key is an int and whose numel (4) is fine: the message must not
    call the numel negative."""
    path = tmp_path / "pid_key_int.pt"
    path.write_bytes(checkpoint(proto(2, pid(key=b"K\x00")), F4))
    assert "data.pkl byte 48: persistent id's key, location and numel are an int, a str and " \
           "an int, not str, str and a non-negative int (persistent id)" in \
        one_line_error(nnp("ls", path), path)


def test_partial_dump_journal_must_be_beside_it(nnp, tmp_path):
    path = tmp_path / "x.safetensors.partial"
    path.write_bytes(partial("../j.journal")[0])
    assert one_line_error(nnp("ls", path), path) == \
        "the journal of a partial dump must be a file beside it, not '../j.journal'"


# ------------------------------------------------------------------------------------------------
# Huge headers: refused fast, in bounded memory

# AddressSanitizer reserves terabytes of address space and adds its own memory: under it, the
# limits and bounds below are not applied (the refusals still are).
ASAN = "asan" in str(BIN)


# Runs a command under an address-space limit and writes its peak RSS (KiB) to a file. It runs
# as a small process of its own because a child's peak RSS counts the memory of the process it
# was forked from, and this test process is large.
MEASURE = """
import os, resource, subprocess, sys, threading
limit, report, cmd = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
def lower():
    if limit:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
p = subprocess.Popen(cmd, preexec_fn=lower)
killer = threading.Timer(110, p.kill)  # a hang fails the test, not the whole run
killer.start()
_, status, usage = os.wait4(p.pid, 0)
killer.cancel()
p.returncode = os.waitstatus_to_exitcode(status)
with open(report, "w") as f:
    f.write(str(usage.ru_maxrss))
sys.exit(p.returncode if p.returncode >= 0 else 128 - p.returncode)
"""


def run_limited(args, mem_bytes):
    """Run nnparity under an address-space limit; returns (CompletedProcess, its peak RSS in
    bytes)."""
    with tempfile.TemporaryDirectory() as d:
        report = os.path.join(d, "rss")
        p = subprocess.run([sys.executable, "-c", MEASURE, "0" if ASAN else str(mem_bytes),
                            report, str(BIN), *map(str, args)], capture_output=True, text=True,
                           errors="replace", timeout=120)
        with open(report) as f:
            return p, int(f.read()) * 1024


def test_header_of_ten_million_entries_is_refused_by_its_length(nnp, tmp_path):
    """A real header of 10,000,000 metadata entries (about 120 MB) is over the 100,000,000-byte
    limit: refused from its first 8 bytes, without reading the rest."""
    path = tmp_path / "ten_million.safetensors"
    n = 10_000_000
    with open(path, "wb") as f:
        f.write(b"\0" * 8)
        f.write(b'{"__metadata__":{')
        for start in range(0, n, 1_000_000):
            f.write(b",".join(b'"%x":""' % i for i in range(start, start + 1_000_000)))
            if start + 1_000_000 < n:
                f.write(b",")
        f.write(b"}}")
        hlen = f.tell() - 8
        f.seek(0)
        f.write(struct.pack("<Q", hlen))
    assert hlen > 100_000_000
    p, rss = run_limited(["ls", path], 512 << 20)
    line = one_line_error(p, path)
    assert f"header length {hlen} exceeds the limit of 100000000 bytes (HeaderTooLarge)" in line
    assert ASAN or rss < 64 << 20


def test_header_length_claiming_exabytes(nnp, tmp_path):
    path = tmp_path / "claims.safetensors"
    path.write_bytes(struct.pack("<Q", (1 << 64) - 1) + b"{}")
    p, rss = run_limited(["stats", path], 256 << 20)
    assert "(HeaderTooLarge)" in one_line_error(p, path)
    assert ASAN or rss < 64 << 20


def test_metadata_entries_past_the_cap_are_refused(nnp, tmp_path):
    """A header within the byte limit holding 1,048,577 metadata entries: refused at the entry
    past the cap, in memory proportional to the entries read (a reader that compared every key
    with every other would take hours here)."""
    path = tmp_path / "many.safetensors"
    n = (1 << 20) + 1
    body = b",".join(b'"%x":""' % i for i in range(n))
    path.write_bytes(st(b'{"__metadata__":{' + body + b"}}"))
    p, rss = run_limited(["ls", path], 2 << 30)
    line = one_line_error(p, path)
    assert "__metadata__ has more than 1048576 entries (metadata count cap)" in line
    assert "byte " in line
    assert ASAN or rss < 600 << 20


def test_many_metadata_entries_within_the_cap_open(nnp, tmp_path):
    """200,000 distinct metadata keys (safetensors) and 200,000 key-value pairs (GGUF) open, each
    key looked up once; the last key reads back."""
    n = 200_000
    f = tmp_path / "keys.safetensors"
    f.write_bytes(st(b'{"__metadata__":{' + b",".join(b'"k%d":"%d"' % (i, i) for i in range(n))
                     + b"}}"))
    doc = json.loads(nnp("ls", "--json", "--meta", f, check=0).stdout)
    assert len(doc["files"][0]["metadata"]) == n
    assert doc["files"][0]["metadata"][f"k{n - 1}"] == str(n - 1)
    g = tmp_path / "keys.gguf"
    kv = b"".join(gkv(b"k%d" % i, 4, struct.pack("<I", i)) for i in range(n))
    g.write_bytes(gguf(nkv=n, kv=kv))
    doc = json.loads(nnp("ls", "--json", "--meta", g, check=0).stdout)
    assert doc["files"][0]["metadata"][f"k{n - 1}"] == str(n - 1)


def test_index_naming_a_shard_per_tensor(nnp, tmp_path):
    """An index of 100,000 tensors, each in a shard of its own that is missing: the shards are
    listed once each without comparing every pair of names, and the first missing one is
    named."""
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {f"t{i}": f"s{i}.safetensors"
                                                for i in range(100_000)}}))
    p, _ = run_limited(["ls", index], 1 << 30)
    assert "cannot open: No such file or directory" in one_line_error(p, tmp_path / "s0.safetensors")


def test_zip_bomb_is_not_inflated(nnp, tmp_path):
    """Deflated data that inflates past its declared size stops at the declared size: memory
    stays near the declared size, not the inflated one."""
    path = tmp_path / "bomb.npz"
    raw = zipped([("a.npy", NPY_OK + b"\0" * (64 << 20))], zipfile.ZIP_DEFLATED)
    path.write_bytes(patch_sizes(raw, "a.npy", size=len(NPY_OK), crc=zlib.crc32(NPY_OK)))
    p, rss = run_limited(["stats", path], 1 << 30)
    assert "inflates to more than the 136 bytes the central directory declares" in \
        one_line_error(p, path)
    assert ASAN or rss < 32 << 20
