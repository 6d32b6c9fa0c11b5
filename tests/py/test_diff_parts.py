"""`nnparity diff` pairs a fused value with the other side's values that are its parts along the
last axis: a reference's one q, k, v projection against a port's three (and the reverse), each
part by its values; a port whose query holds k's values fails where the query is made, and
--emit-rules writes the parts so that the pairing is made again by name."""
import json

import numpy as np
import pytest

from conftest import write_safetensors

pytestmark = pytest.mark.cli


def values():
    rng = np.random.default_rng(1)
    return [rng.standard_normal((1, 6, 8)).astype(np.float32) for _ in range(5)]


def fused_reference(tmp_path, swap=False):
    x, q, k, v, y = values()
    ref = {"enc.norm/out0": x, "enc.attn/in_proj": np.concatenate([q, k, v], -1),
           "enc.attn/out0": y}
    port = {"b.n/out0": x, "b.query/out0": k if swap else q, "b.key/out0": q if swap else k,
            "b.value/out0": v, "b.o/out0": y}
    write_safetensors(tmp_path / "ref.safetensors", ref)
    write_safetensors(tmp_path / "port.safetensors", port)
    return tmp_path / "ref.safetensors", tmp_path / "port.safetensors"


def diff(nnp, ref, port, *args, check):
    return json.loads(nnp("diff", "--json", ref, port, *args, check=check).stdout)


def test_separate_qkv_meet_the_fused_projection_part_by_part(nnp, tmp_path):
    ref, port = fused_reference(tmp_path)
    doc = diff(nnp, ref, port, check=0)
    parts = [p for p in doc["pairs"] if p["ref"] == "enc.attn/in_proj"]
    assert [(p["port"], p["evidence"], p["adapters"]) for p in parts] == [
        ("b.query/out0", "value-part", "ref slice -1 0:8"),
        ("b.key/out0", "value-part", "ref slice -1 8:16"),
        ("b.value/out0", "value-part", "ref slice -1 16:24")]
    assert all(p["verdict"] == "pass" and p["confidence"] == 1.0 for p in parts)
    assert doc["unmatched_ref"] == [] and doc["unmatched_port"] == [] and doc["agree"] is True
    rules = tmp_path / "aligned.rules"
    nnp("diff", ref, port, "--emit-rules", rules, check=0)
    text = rules.read_text()
    # the slices meet the port's own names, before the renames make them one name
    at = text.index(r"ref slice ^b\.key/out0$ -1 8:16")
    assert at < text.index("\nrename ")
    assert r"ref slice ^b\.query/out0$ -1 0:8" in text
    assert r"ref slice ^b\.value/out0$ -1 16:24" in text


def test_a_part_in_the_wrong_place_fails_where_it_is_made(nnp, tmp_path):
    ref, port = fused_reference(tmp_path, swap=True)
    doc = diff(nnp, ref, port, check=1)
    parts = {p["port"]: p for p in doc["pairs"] if p["ref"] == "enc.attn/in_proj"}
    assert parts["b.query/out0"]["evidence"] == "structure-part"
    assert parts["b.query/out0"]["verdict"] == "fail"
    assert parts["b.query/out0"]["adapters"] == "ref slice -1 0:8"
    assert parts["b.query/out0"]["confidence"] <= 0.5
    assert parts["b.key/out0"]["evidence"] == "structure-part"
    assert parts["b.value/out0"]["evidence"] == "value-part"
    assert parts["b.value/out0"]["verdict"] == "pass"
    first = doc["pairs"][doc["first_divergence"]]
    assert first["port"] == "b.query/out0"


def test_unrelated_values_of_a_part_shape_are_not_parts(nnp, tmp_path):
    x, q, k, v, y = values()
    rng = np.random.default_rng(2)
    ref = {"enc.norm/out0": x, "enc.attn/in_proj": np.concatenate([q, k, v], -1)}
    port = {"b.n/out0": x, "b.a/out0": rng.standard_normal((1, 6, 8)).astype(np.float32),
            "b.b/out0": rng.standard_normal((1, 6, 8)).astype(np.float32),
            "b.c/out0": rng.standard_normal((1, 6, 8)).astype(np.float32)}
    write_safetensors(tmp_path / "r.safetensors", ref)
    write_safetensors(tmp_path / "p.safetensors", port)
    doc = diff(nnp, tmp_path / "r.safetensors", tmp_path / "p.safetensors", check=0)
    assert not [p for p in doc["pairs"] if p["evidence"].endswith("part")]
    assert "enc.attn/in_proj" in doc["unmatched_ref"]


def test_a_fused_port_record_splits_into_the_reference_parts(nnp, tmp_path):
    x, q, k, v, y = values()
    ref = {"h.ln/out0": x, "h.q_proj/out0": q, "h.k_proj/out0": k, "h.v_proj/out0": v,
           "h.attn/out0": y}
    port = {"blk.norm/out0": x, "blk.qkv/out0": np.concatenate([q, k, v], -1),
            "blk.attn/out0": y}
    write_safetensors(tmp_path / "r.safetensors", ref)
    write_safetensors(tmp_path / "p.safetensors", port)
    r, p = tmp_path / "r.safetensors", tmp_path / "p.safetensors"
    doc = diff(nnp, r, p, check=0)
    parts = {x["ref"]: x for x in doc["pairs"] if x["port"] == "blk.qkv/out0"}
    assert {n: (x["evidence"], x["adapters"]) for n, x in parts.items()} == {
        "h.q_proj/out0": ("value-part", "slice -1 0:8"),
        "h.k_proj/out0": ("value-part", "slice -1 8:16"),
        "h.v_proj/out0": ("value-part", "slice -1 16:24")}
    assert doc["agree"] is True and doc["unmatched_ref"] == [] and doc["unmatched_port"] == []
    rules = tmp_path / "aligned.rules"
    nnp("diff", r, p, "--emit-rules", rules, check=0)
    assert r"split ^(blk\.qkv/out0)$ -1 h.q_proj/out0 h.k_proj/out0 h.v_proj/out0" in \
        rules.read_text()
    # the rules pair the parts by name alone
    doc = diff(nnp, r, p, "--rules", rules, "--no-align", check=0)
    assert doc["unmatched_ref"] == [] and doc["agree"] is True
    assert {x["ref"] for x in doc["pairs"] if x["port"] == "blk.qkv/out0"} == set(parts)
