"""Inputs that are not regular files: a FIFO, a device, a link to one, or a file far larger than
its kind may be. Each is refused at once with one line naming the file and why, exit status 2 and
nothing on stdout; none blocks (a FIFO has no writer here) or grows until memory runs out (a link to
/dev/zero never ends). Directories stay valid where a directory is an input (a shard directory)."""
import json
import os
import subprocess

import numpy as np
import pytest

from conftest import BIN, one_line_error, write_safetensors

pytestmark = pytest.mark.cli


def nnp(*args):
    # a refusal is immediate: the timeout only turns a hang into a failure instead of a stuck run
    return subprocess.run([str(BIN), *map(str, args)], capture_output=True, text=True,
                          errors="replace", timeout=60)


def partial_with_journal(tmp_path):
    """A partial dump whose header names j.journal beside it; returns its path."""
    text = json.dumps({"__metadata__": {"nnparity.partial": "j.journal"}}).encode()
    text += b" " * (-len(text) % 8)
    path = tmp_path / "x.safetensors.partial"
    path.write_bytes(len(text).to_bytes(8, "little") + text + b"\0" * 4)
    return path


def test_journal_linked_to_dev_zero(tmp_path):
    path = partial_with_journal(tmp_path)
    os.symlink("/dev/zero", tmp_path / "j.journal")
    assert one_line_error(nnp("ls", path), tmp_path / "j.journal") == \
        "not a regular file (a character device)"


def test_journal_fifo(tmp_path):
    path = partial_with_journal(tmp_path)
    os.mkfifo(tmp_path / "j.journal")
    assert one_line_error(nnp("ls", path), tmp_path / "j.journal") == \
        "not a regular file (a FIFO)"


def test_journal_larger_than_a_journal_may_be(tmp_path):
    # sparse: the size is refused from fstat, before a byte is read
    path = partial_with_journal(tmp_path)
    with open(tmp_path / "j.journal", "wb") as f:
        f.truncate((1 << 30) + 1)
    assert one_line_error(nnp("ls", path), tmp_path / "j.journal") == \
        "1073741825 bytes, more than a journal may hold (1073741824)"


def test_index_linked_to_dev_zero(tmp_path):
    index = tmp_path / "model.safetensors.index.json"
    os.symlink("/dev/zero", index)
    assert one_line_error(nnp("ls", index), index) == "not a regular file (a character device)"


def test_index_fifo(tmp_path):
    index = tmp_path / "model.safetensors.index.json"
    os.mkfifo(index)
    assert one_line_error(nnp("ls", index), index) == "not a regular file (a FIFO)"


def test_index_too_large(tmp_path):
    index = tmp_path / "model.safetensors.index.json"
    with open(index, "wb") as f:
        f.write(b'{"weight_map": {')
        f.truncate((256 << 20) + 1)
    assert one_line_error(nnp("ls", index), index) == \
        "268435457 bytes, more than a shard index may hold (268435456)"


def test_fifo_shard_named_by_index(tmp_path):
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {"a": "s1.safetensors"}}))
    os.mkfifo(tmp_path / "s1.safetensors")
    assert one_line_error(nnp("ls", index), tmp_path / "s1.safetensors") == \
        "not a regular file (a FIFO)"


def test_fifo_shard_in_directory(tmp_path):
    write_safetensors(tmp_path / "model-00001-of-00002.safetensors",
                      {"a": np.ones(2, np.float32)})
    os.mkfifo(tmp_path / "model-00002-of-00002.safetensors")
    assert one_line_error(nnp("ls", tmp_path), tmp_path / "model-00002-of-00002.safetensors") == \
        "not a regular file (a FIFO)"


def test_shard_directory_still_read(tmp_path):
    write_safetensors(tmp_path / "model-00001-of-00002.safetensors",
                      {"a": np.ones(2, np.float32)})
    write_safetensors(tmp_path / "model-00002-of-00002.safetensors",
                      {"b": np.ones(2, np.float32)})
    p = nnp("ls", tmp_path)
    assert p.returncode == 0, p.stderr
    assert " a " in p.stdout and " b " in p.stdout


@pytest.mark.parametrize("kind", ["fifo", "dev_zero", "too_large"])
def test_dump_and_rules_files(tmp_path, kind):
    dump = tmp_path / "d.safetensors"
    write_safetensors(dump, {"a": np.ones(2, np.float32)})
    special = tmp_path / "special"
    if kind == "fifo":
        os.mkfifo(special)
        why = "not a regular file (a FIFO)"
    elif kind == "dev_zero":
        os.symlink("/dev/zero", special)
        why = "not a regular file (a character device)"
    else:
        with open(special, "wb") as f:
            f.truncate((16 << 20) + 1)
        why = "16777217 bytes, more than a rules file may hold (16777216)"
    assert one_line_error(nnp("diff", dump, dump, "--rules", special), special) == why
    if kind != "too_large":  # as a dump: refused before any reader looks at it
        assert one_line_error(nnp("ls", special), special) == why


def test_relevance_image_fifo(tmp_path):
    # the picture is checked before anything is written: no output directory either
    write_safetensors(tmp_path / "d.safetensors",
                      {"a.probs": np.full((1, 5, 5), 0.2, np.float32)})
    os.mkfifo(tmp_path / "img.png")
    p = nnp("relevance", tmp_path / "d.safetensors", "--attn", "a[.]", "--grid", "2x2",
            "--out", tmp_path / "o", "--image", tmp_path / "img.png")
    assert one_line_error(p, tmp_path / "img.png") == \
        "not a regular file; --image reads a PNG file"
    assert not (tmp_path / "o").exists()
