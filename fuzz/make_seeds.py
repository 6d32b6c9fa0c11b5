#!/usr/bin/python3
"""make_seeds.py - writes the small seed inputs of the fuzz targets into fuzz/corpus/<target>/.

Seeds are valid files that reach deep into each reader, so the fuzzer mutates from inside the
format instead of rediscovering its framing. They are kept tiny (the whole set is a few KB):
libFuzzer mutates small inputs much faster, and they are checked in. Re-running rewrites the same
bytes (fixed values, fixed zip timestamps), so the seeds never churn in git.

Run with Debian's interpreter, which has numpy: /usr/bin/python3 fuzz/make_seeds.py
"""
import io
import json
import os
import struct
import sys
import zipfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")


def write(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed_" + name), "wb") as f:
        f.write(data)


# ---- safetensors ------------------------------------------------------------------------------

def safetensors(tensors, metadata=None, pad_to=8, lead=""):
    """The reference writer's layout: u64 header length, JSON header padded with spaces to a
    multiple of 8, then the tensors' bytes back to back in header order."""
    header, blobs, off = {}, [], 0
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    text = (lead + json.dumps(header, separators=(",", ":"))).encode()
    text += b" " * (-len(text) % pad_to)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def st_seeds():
    f32 = np.array([[1.5, -2.0, 0.0], [np.nan, np.inf, -np.inf]], dtype="<f4")
    write("fuzz_safetensors", "f32_nonfinite.safetensors",
          safetensors({"x": ("F32", f32.shape, f32.tobytes())}))

    # One tensor of nearly every dtype, so every conversion routine is reachable.
    many = {
        "f64": ("F64", (2,), np.array([0.5, -1e300], "<f8").tobytes()),
        "f16": ("F16", (2,), np.array([1.0, -65504], "<f2").tobytes()),
        "bf16": ("BF16", (2,), bytes([0x80, 0x3F, 0xC0, 0x7F])),  # 1.0, NaN
        "e4m3": ("F8_E4M3", (3,), bytes([0x38, 0x7F, 0x80])),    # 1.0, NaN, -0
        "e5m2": ("F8_E5M2", (3,), bytes([0x3C, 0x7C, 0xFC])),    # 1.0, +Inf, -Inf
        "i8": ("I8", (2,), bytes([0x80, 0x7F])),
        "i16": ("I16", (1,), struct.pack("<h", -2)),
        "i32": ("I32", (1,), struct.pack("<i", -7)),
        "i64": ("I64", (1,), struct.pack("<q", -(2 ** 40))),
        "u8": ("U8", (1,), b"\xff"),
        "u16": ("U16", (1,), struct.pack("<H", 65535)),
        "u32": ("U32", (1,), struct.pack("<I", 2 ** 32 - 1)),
        "u64": ("U64", (1,), struct.pack("<Q", 2 ** 64 - 1)),
        "bool": ("BOOL", (2,), b"\x01\x00"),
    }
    write("fuzz_safetensors", "all_dtypes.safetensors", safetensors(many))

    # A 0-dim scalar next to a zero-size tensor: shape [] and nelem 0 are the edge cases.
    write("fuzz_safetensors", "scalar_and_empty.safetensors",
          safetensors({"s": ("F64", (), struct.pack("<d", 3.25)), "z": ("F32", (2, 0), b"")},
                      metadata={"note": "scalar"}))

    # What nnparity's own writer produces: provenance metadata in execution order that differs
    # from file order, and a header padded with spaces, as the streaming writer leaves it.
    records = [
        {"tensor": "fc/out0", "module": "fc", "role": "out0", "type": "Linear", "call": 0, "seq": 1},
        {"tensor": "fc/in0", "module": "fc", "role": "in0", "type": "Linear", "call": 0, "seq": 0},
    ]
    meta = {"nnparity.format": "dump/1", "nnparity.records": json.dumps(records)}
    a = np.arange(4, dtype="<f4").tobytes()
    write("fuzz_safetensors", "nnparity_dump.safetensors",
          safetensors({"fc/out0": ("F32", (2, 2), a), "fc/in0": ("F16", (4,),
                       np.ones(4, "<f2").tobytes())}, metadata=meta, pad_to=64))

    # A sharded checkpoint's index: the target resolves its shards in a private directory that
    # holds model-00001-of-00002.safetensors (tensor "a") and model-00002-of-00002 ("b").
    index = {"metadata": {"total_size": 8},
             "weight_map": {"a": "model-00001-of-00002.safetensors",
                            "b": "model-00002-of-00002.safetensors"}}
    write("fuzz_safetensors", "index.json", json.dumps(index).encode())
    # The same for the index target, with the shapes an index takes in the wild: extra metadata,
    # one shard holding both tensors, a tensor named twice, a shard that is not there.
    write("fuzz_index", "index.json", json.dumps(index).encode())
    write("fuzz_index", "index_one_shard.json", json.dumps(
        {"metadata": {"total_size": 8, "format": "pt"},
         "weight_map": {"a": "model-00001-of-00002.safetensors"}}).encode())
    write("fuzz_index", "index_spaced.json", json.dumps(index, indent=2).encode())
    write("fuzz_index", "index_missing_shard.json", json.dumps(
        {"weight_map": {"a": "model-00001-of-00002.safetensors",
                        "c": "model-00003-of-00003.safetensors"}}).encode())


# ---- npy --------------------------------------------------------------------------------------

def npy(arr, version=None):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, version=version, allow_pickle=False)
    return buf.getvalue()


def npy_seeds():
    a = np.array([[1.0, -2.5, np.nan], [0.0, np.inf, 3.0]], dtype="<f4")
    write("fuzz_npy", "v1_le_f4.npy", npy(a, (1, 0)))
    write("fuzz_npy", "v2_be_f8.npy", npy(a.astype(">f8"), (2, 0)))
    write("fuzz_npy", "v3_le_i2.npy", npy(np.arange(6, dtype="<i2").reshape(3, 2), (3, 0)))
    write("fuzz_npy", "v1_be_u4.npy", npy(np.arange(4, dtype=">u4"), (1, 0)))
    write("fuzz_npy", "fortran_3d_f2.npy",
          npy(np.asfortranarray(np.arange(24, dtype="<f2").reshape(2, 3, 4)), (1, 0)))
    write("fuzz_npy", "fortran_be_i8.npy",
          npy(np.asfortranarray(np.arange(6, dtype=">i8").reshape(2, 3)), (1, 0)))
    write("fuzz_npy", "scalar_f8.npy", npy(np.array(3.25, dtype="<f8"), (1, 0)))
    write("fuzz_npy", "empty_0x4.npy", npy(np.zeros((0, 4), dtype="<f4"), (1, 0)))
    write("fuzz_npy", "bool.npy", npy(np.array([True, False, True]), (1, 0)))
    write("fuzz_npy", "i1.npy", npy(np.array([-128, 127], dtype="i1"), (1, 0)))
    # Refused kinds: the fuzzer starts next to the branches that name them.
    write("fuzz_npy", "structured.npy",
          npy(np.zeros(2, dtype=[("a", "<f4"), ("b", "<i4")]), (1, 0)))
    write("fuzz_npy", "complex.npy", npy(np.zeros(1, dtype="<c8"), (1, 0)))


# ---- npz --------------------------------------------------------------------------------------

def fixed_dates(data):
    """numpy stamps each member with the current time; set every stamp to 1980-01-01 so that
    re-running leaves the seeds byte-identical."""
    buf = bytearray(data)
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        infos, pos = z.infolist(), z.start_dir
    for info in infos:
        assert buf[info.header_offset:info.header_offset + 4] == b"PK\x03\x04"
        struct.pack_into("<HH", buf, info.header_offset + 10, 0, 0x21)
        assert buf[pos:pos + 4] == b"PK\x01\x02"
        struct.pack_into("<HH", buf, pos + 12, 0, 0x21)
        n, m, k = struct.unpack_from("<HHH", buf, pos + 28)
        pos += 46 + n + m + k
    return bytes(buf)


def savez(save, *args, **kwargs):
    buf = io.BytesIO()
    save(buf, *args, **kwargs)
    return fixed_dates(buf.getvalue())


def npz_seeds():
    members = {
        "w": np.arange(6, dtype="<f4").reshape(2, 3),
        "b": np.array([0.5, np.nan], dtype=">f8"),
        "f": np.asfortranarray(np.arange(6, dtype="<i4").reshape(3, 2)),
        "s": np.array(7, dtype="<i8"),
    }
    # numpy's own writer: savez stores, savez_compressed deflates, and both put zip64 extra
    # fields in the local headers (force_zip64), which a hand-made zip would not exercise.
    write("fuzz_npz", "stored.npz", savez(np.savez, **members))
    write("fuzz_npz", "deflated.npz", savez(np.savez_compressed, **members))
    write("fuzz_npz", "positional.npz",
          savez(np.savez, np.array([1.0], "<f4"), np.array([1, 2], "<u2")))
    write("fuzz_npz", "empty.npz", savez(np.savez))


def main():
    st_seeds()
    npy_seeds()
    npz_seeds()
    total = sum(os.path.getsize(os.path.join(dp, f))
                for dp, _, fs in os.walk(CORPUS) for f in fs if f.startswith("seed_"))
    print(f"seeds: {total} bytes under {CORPUS}")
    return 0 if total < 50_000 else 1


if __name__ == "__main__":
    sys.exit(main())
