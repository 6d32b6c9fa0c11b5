"""`nnparity diff` pairs what names leave unmatched by automatic alignment: a capture whose module
names differ throughout (torchvision names against GGUF-style ones) pairs record for record, a
record only one side has stays unmatched, and --emit-rules writes rules that pair the same records
by name next time."""
import json

import numpy as np
import pytest

from conftest import write_safetensors

pytestmark = pytest.mark.cli

PARTS = [("ln_1", "attn_norm"), ("self_attention", "attn"), ("ln_2", "ffn_norm"), ("mlp", "ffn"),
         ("", "")]


def captures(tmp_path, layers=6, drop=None, extra=None, bug=None):
    """Every layer's records share one shape, as in a transformer: only order and names tell
    them apart."""
    rng = np.random.default_rng(0)
    ref, port = {}, {}
    for i in range(layers):
        for r, p in PARTS:
            x = rng.standard_normal((5, 8)).astype(np.float32)
            rname = f"encoder.layers.encoder_layer_{i}" + (f".{r}" if r else "") + "/out0"
            pname = f"blk.{i}" + (f".{p}" if p else "") + "/out0"
            ref[rname] = x
            if pname != drop:
                port[pname] = x + (1.0 if pname == bug else 0.0)
            if pname == extra:      # a scratch buffer of the port's own
                port[f"blk.{i}.scratch/out0"] = np.zeros(16, np.float32)
    write_safetensors(tmp_path / "ref.safetensors", ref)
    write_safetensors(tmp_path / "port.safetensors", port)
    return tmp_path / "ref.safetensors", tmp_path / "port.safetensors"


def diff(nnp, ref, port, *args, check):
    return json.loads(nnp("diff", "--json", ref, port, *args, check=check).stdout)


def test_renamed_capture_aligns_and_the_bug_is_found(nnp, tmp_path):
    ref, port = captures(tmp_path, bug="blk.3.ffn/out0")
    doc = diff(nnp, ref, port, check=1)
    assert doc["aligned"] == 30 and doc["unmatched_ref"] == [] and doc["unmatched_port"] == []
    assert all(p["aligned"] for p in doc["pairs"])
    assert all(p["port"].replace("blk.", "").split(".")[0].split("/")[0] ==
               p["ref"].split("encoder_layer_")[1].split(".")[0].split("/")[0]
               for p in doc["pairs"])
    first = doc["pairs"][doc["first_divergence"]]
    assert (first["ref"], first["port"]) == ("encoder.layers.encoder_layer_3.mlp/out0",
                                             "blk.3.ffn/out0")
    text = nnp("diff", ref, port, check=1).stdout
    assert "paired by automatic alignment (30; '~' in the table)" in text
    assert "~encoder.layers.encoder_layer_3.mlp/out0" in text
    # without alignment nothing pairs
    doc = diff(nnp, ref, port, "--no-align", check=0)
    assert doc["pairs"] == [] and len(doc["unmatched_ref"]) == 30


def test_a_record_only_one_side_has_stays_unmatched(nnp, tmp_path):
    ref, port = captures(tmp_path, drop="blk.2.ffn_norm/out0", extra="blk.4.attn/out0")
    doc = diff(nnp, ref, port, check=0)
    assert doc["unmatched_ref"] == ["encoder.layers.encoder_layer_2.ln_2/out0"]
    assert doc["unmatched_port"] == ["blk.4.scratch/out0"]
    assert all(p["verdict"] == "pass" for p in doc["pairs"]) and len(doc["pairs"]) == 29


def test_emitted_rules_pair_by_name_next_time(nnp, tmp_path):
    ref, port = captures(tmp_path, drop="blk.2.ffn_norm/out0")
    given = tmp_path / "given.rules"
    given.write_text("# the user's own rules come first\nignore ^nothing$\n")
    emitted = tmp_path / "emitted.rules"
    nnp("diff", ref, port, "--rules", given, "--emit-rules", emitted, check=0)
    text = emitted.read_text()
    # a first line that says who wrote it (docs/cli.md), then the user's own rules first
    assert text.startswith("# written by nnparity diff --emit-rules")
    assert text.splitlines()[1] == "# the user's own rules come first"
    assert "review it before use" in text
    assert sum(line.startswith("rename") for line in text.splitlines()) <= 6   # generalized
    doc = diff(nnp, ref, port, "--rules", emitted, "--no-align", check=0)
    assert len(doc["pairs"]) == 29 and doc["aligned"] == 0
    assert doc["unmatched_ref"] == ["encoder.layers.encoder_layer_2.ln_2/out0"]


def test_pairs_say_what_they_were_made_on(nnp, tmp_path):
    """Values pair records whose names share nothing: the same bytes, values within the
    sketches' tolerance, the port's one row against the last row of a sequence the reference
    re-ran whole. A record with no counterpart is listed, not paired by position."""
    rng = np.random.default_rng(1)
    seq = rng.standard_normal((1, 6, 8)).astype(np.float32)
    a = rng.standard_normal((4, 8)).astype(np.float32)
    only_ref = rng.standard_normal((4, 8)).astype(np.float32)
    b = rng.standard_normal((4, 8)).astype(np.float32)
    ref = {"model.embed/out0": a, "model.scores/out0": only_ref, "model.proj/out0": b,
           "model.block/out0": seq}
    port = {"e/out0": a, "p/out0": b * np.float32(1 + 1e-6), "blk/out0": seq[:, -1:, :].copy()}
    write_safetensors(tmp_path / "r.safetensors", ref)
    write_safetensors(tmp_path / "p.safetensors", port)
    doc = json.loads(nnp("diff", "--json", tmp_path / "r.safetensors",
                         tmp_path / "p.safetensors", check=0).stdout)
    pairs = {p["ref"]: p for p in doc["pairs"]}
    assert pairs["model.embed/out0"]["port"] == "e/out0"
    assert pairs["model.embed/out0"]["evidence"] == "value-exact"
    assert pairs["model.embed/out0"]["confidence"] == 1.0
    assert pairs["model.proj/out0"]["port"] == "p/out0"
    assert pairs["model.proj/out0"]["evidence"] == "value"
    assert 0.9 <= pairs["model.proj/out0"]["confidence"] <= 1.0
    last = pairs["model.block/out0"]
    assert last["port"] == "blk/out0" and last["evidence"] == "value-last-row"
    assert last["adapters"] == "ref slice -2 -1:" and last["verdict"] == "pass"
    # the reference's scores have no counterpart: listed, never paired by position
    assert "model.scores/out0" not in pairs
    assert doc["unmatched_ref"] == ["model.scores/out0"] and doc["agree"] is True
    text = nnp("diff", "--all", tmp_path / "r.safetensors", tmp_path / "p.safetensors",
               check=0).stdout
    assert "  blk/out0 -> model.block/out0\n" in text
