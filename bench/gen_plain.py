#!/usr/bin/python3
"""gen_plain.py - writes a safetensors file of COUNT small F32 tensors without any nnparity
metadata, laid out as the reference (Rust/Python safetensors) writer lays it out: tensors sorted
by name (one dtype throughout), header keys in that order, no whitespace, the header padded with
spaces to a multiple of 8, then the data back to back.

    /usr/bin/python3 bench/gen_plain.py OUT [COUNT]    (COUNT defaults to 100000)
"""
import json
import os
import struct
import sys


def main():
    if len(sys.argv) not in (2, 3):
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    out = sys.argv[1]
    count = int(sys.argv[2]) if len(sys.argv) == 3 else 100000
    # Names of a deep model's parameters; the reference writer orders tensors by name.
    names = sorted(f"model.layers.{i // 8}.block{i % 8}.weight" for i in range(count))
    nbytes = 4 * 4 * 4  # F32 [4, 4]
    header = {}
    for k, name in enumerate(names):
        header[name] = {"dtype": "F32", "shape": [4, 4],
                        "data_offsets": [k * nbytes, (k + 1) * nbytes]}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    # Fixed contents: the benchmark times the header, never the values.
    data = struct.pack("<16f", *[float(i) for i in range(16)]) * count
    tmp = out + ".partial"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        f.write(data)
    os.replace(tmp, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
