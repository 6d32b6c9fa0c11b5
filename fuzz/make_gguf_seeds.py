#!/usr/bin/python3
"""make_gguf_seeds.py - writes the seed inputs of fuzz_gguf into fuzz/corpus/fuzz_gguf/.

GGUF files laid out by hand with struct (gguf-py is not needed), small enough for libFuzzer to
mutate quickly, and together reaching every part of the reader:
  seed_all_types.gguf   version 3: a key of every value type, arrays of numbers, bools and
                        strings (one longer than the 16 items shown), and one tensor of every
                        type nnparity reads, plain and quantized, with finite fp16 scales
  seed_v2_align64.gguf  version 2 with general.alignment 64, a 0-d tensor and a zero-size one
  seed_no_tensors.gguf  metadata only (no padding after it)
  seed_refused.gguf     a tensor of a type nnparity refuses by name (Q8_1)
The bytes come from a seeded generator, so re-running rewrites the same files. Run with Debian's
interpreter: /usr/bin/python3 fuzz/make_gguf_seeds.py
"""
import os
import random
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "corpus", "fuzz_gguf")

U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
SCALAR = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f",
          BOOL: "<B", U64: "<Q", I64: "<q", F64: "<d"}

# ggml type: (number, elements per block, bytes per block, offsets of fp16 scales in a block)
TYPES = {
    "F32": (0, 1, 4, ()), "F16": (1, 1, 2, ()), "Q4_0": (2, 32, 18, (0,)),
    "Q4_1": (3, 32, 20, (0, 2)), "Q5_0": (6, 32, 22, (0,)), "Q5_1": (7, 32, 24, (0, 2)),
    "Q8_0": (8, 32, 34, (0,)), "Q8_1": (9, 32, 36, (0, 2)), "Q2_K": (10, 256, 84, (80, 82)),
    "Q3_K": (11, 256, 110, (108,)), "Q4_K": (12, 256, 144, (0, 2)),
    "Q5_K": (13, 256, 176, (0, 2)), "Q6_K": (14, 256, 210, (208,)), "I8": (24, 1, 1, ()),
    "I16": (25, 1, 2, ()), "I32": (26, 1, 4, ()), "I64": (27, 1, 8, ()), "F64": (28, 1, 8, ()),
    "BF16": (30, 1, 2, ()),
}


def gstr(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def value(vtype, v):
    if vtype == STR:
        return gstr(v)
    if vtype == ARR:
        etype, items = v
        return struct.pack("<IQ", etype, len(items)) + b"".join(value(etype, x) for x in items)
    return struct.pack(SCALAR[vtype], v)


def tensor_bytes(rng, tname, nelem):
    _, block, size, scales = TYPES[tname]
    out = bytearray()
    for _ in range(nelem // block):
        blk = bytearray(rng.getrandbits(8) for _ in range(size))
        for off in scales:  # a finite scale: exponent bits below all ones
            blk[off:off + 2] = struct.pack("<e", rng.uniform(-2.0, 2.0))
        out += blk
    return bytes(out)


def gguf(kvs, tensors, version=3, alignment=32, seed=0):
    """kvs: [(key, type, value)]; tensors: [(name, ggml dims fastest first, type name)]."""
    rng = random.Random(seed)
    head = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs))
    for key, vtype, v in kvs:
        head += gstr(key) + struct.pack("<I", vtype) + value(vtype, v)
    data, infos = b"", b""
    for name, dims, tname in tensors:
        nelem = 1
        for d in dims:
            nelem *= d
        data += b"\0" * (-len(data) % alignment)
        infos += gstr(name) + struct.pack("<I", len(dims))
        infos += b"".join(struct.pack("<Q", d) for d in dims)
        infos += struct.pack("<IQ", TYPES[tname][0], len(data))
        data += tensor_bytes(rng, tname, nelem)
    head += infos
    if tensors:
        head += b"\0" * (-len(head) % alignment)
    return head + data


def write(name, data):
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "seed_" + name), "wb") as f:
        f.write(data)
    return len(data)


def main():
    kvs = [
        ("general.architecture", STR, "seed"), ("general.alignment", U32, 32),
        ("u8", U8, 200), ("i8", I8, -100), ("u16", U16, 60000), ("i16", I16, -30000),
        ("i32", I32, -2000000000), ("f32", F32, 1.5), ("bool", BOOL, 1),
        ("u64", U64, 2**63 + 5), ("i64", I64, -2**62), ("f64", F64, 3.25),
        ("str", STR, "h\u00e9llo \"w\u00f6rld\"\n"),
        ("arr_i32", ARR, (I32, [1, -2, 3])), ("arr_bool", ARR, (BOOL, [0, 1, 1])),
        ("arr_str", ARR, (STR, ["a", "", "b\\c"] + [str(i) for i in range(15)])),
        ("arr_f64", ARR, (F64, [0.5, -1e300])),
    ]
    tensors = [("f32", [4, 2], "F32"), ("f16", [4], "F16"), ("bf16", [4], "BF16"),
               ("f64", [2], "F64"), ("i8", [3], "I8"), ("i16", [3], "I16"),
               ("i32", [3], "I32"), ("i64", [2], "I64")]
    tensors += [(t.lower(), [TYPES[t][1]], t)
                for t in ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K",
                          "Q5_K", "Q6_K")]
    total = write("all_types.gguf", gguf(kvs, tensors))
    total += write("v2_align64.gguf",
                   gguf([("general.alignment", U32, 64), ("general.name", STR, "v2")],
                        [("w", [32, 2], "Q8_0"), ("s", [], "F16"), ("z", [0, 3], "F32"),
                         ("b", [5], "F32")], version=2, alignment=64, seed=1))
    total += write("no_tensors.gguf", gguf([("general.name", STR, "empty")], []))
    total += write("refused.gguf", gguf([], [("w", [32], "Q8_1")], seed=2))
    print(f"seeds: {total} bytes under {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
