"""`nnparity weights SRC DST`: a converted checkpoint checked against its source. The bundled
example's port weights (GGUF-like names, q/k/v split out of the fused in_proj) against torchvision's
own state dict saved with torch.save; then the mistakes conversions make — a k-bias left behind, a
transposed matrix, a lower precision, a tied weight written once, a sharded source — each reported
as what it is."""
import json
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT, write_safetensors

pytestmark = pytest.mark.cli

sys.path.insert(0, str(ROOT / "examples" / "vit"))
import reference  # noqa: E402  (the example's model and its weight export)

RULES = ROOT / "examples" / "vit" / "weights.rules"


@pytest.fixture(scope="module")
def vit(tmp_path_factory):
    """torchvision's state dict as a torch .pt, and the port's weights as a dict of tensors."""
    d = tmp_path_factory.mktemp("vit")
    model = reference.build_model()
    torch.save(model.state_dict(), d / "vit.pt")
    return d / "vit.pt", reference.port_weights(model, reference.input_image())


def weights(nnp, src, dst, *args, check):
    out = nnp("weights", "--json", src, dst, *args, check=check)
    return json.loads(out.stdout)


def write_port(path, tensors):
    reference.write_safetensors(path, tensors)
    return path


def test_the_example_port_weights_hold_torchvisions(nnp, vit, tmp_path):
    src, port = vit
    dst = write_port(tmp_path / "port.safetensors", port)
    doc = weights(nnp, src, dst, "--rules", RULES, check=0)
    n_src = len(torch.load(src))
    assert doc["agree"] and doc["totals"]["equal"] == n_src
    assert doc["missing"] == [] and doc["unexpected"] == []
    qkv = [p for p in doc["pairs"] if p["source"].endswith("in_proj_weight")]
    assert len(qkv) == reference.CONFIG["num_layers"]
    assert qkv[0]["destination"] == ["blk.0.attn_q.weight", "blk.0.attn_k.weight",
                                     "blk.0.attn_v.weight"]
    # the text report says it in words
    text = nnp("weights", src, dst, "--rules", RULES, check=0).stdout
    assert f"{n_src:6d} exactly equal" in text
    assert "the destination holds the source's weights" in text


def test_a_k_bias_left_behind(nnp, vit, tmp_path):
    src, port = vit
    port = dict(port)
    del port["blk.1.attn_k.bias"]
    doc = weights(nnp, src, write_port(tmp_path / "p.safetensors", port), "--rules", RULES,
                  check=1)
    # the fused bias cannot be made: missing in the destination, and its two parts unexpected
    assert doc["missing"] == ["encoder.layers.encoder_layer_1.self_attention.in_proj_bias"]
    assert sorted(doc["unexpected"]) == ["blk.1.attn_q.bias", "blk.1.attn_v.bias"]


def test_swapped_and_transposed_tensors(nnp, vit, tmp_path):
    src, port = vit
    port = dict(port)
    port["blk.0.attn_q.weight"], port["blk.0.attn_k.weight"] = (port["blk.0.attn_k.weight"],
                                                                port["blk.0.attn_q.weight"])
    port["blk.2.ffn_up.weight"] = port["blk.2.ffn_up.weight"].t().contiguous()
    doc = weights(nnp, src, write_port(tmp_path / "p.safetensors", port), "--rules", RULES,
                  check=1)
    by = {p["source"]: p for p in doc["pairs"]}
    qkv = by["encoder.layers.encoder_layer_0.self_attention.in_proj_weight"]
    assert qkv["class"] == "different" and qkv["metrics"]["max_index"][0] < 128
    # both swapped tensors are named, the one left in place is not
    assert qkv["differing_parts"] == ["blk.0.attn_q.weight", "blk.0.attn_k.weight"]
    assert by["encoder.layers.encoder_layer_2.mlp.0.weight"]["class"] == "shape"
    assert doc["totals"]["different"] == 1 and doc["totals"]["shape"] == 1
    # a port that keeps that matrix transposed on purpose says so in its rules (rules see the
    # name as the renames before them left it)
    rules = tmp_path / "t.rules"
    rules.write_text(RULES.read_text() + "transpose ^encoder\\.layers\\.encoder_layer_2\\.mlp\\.0\\.weight$\n")
    port["blk.0.attn_q.weight"], port["blk.0.attn_k.weight"] = (port["blk.0.attn_k.weight"],
                                                                port["blk.0.attn_q.weight"])
    doc = weights(nnp, src, write_port(tmp_path / "p.safetensors", port), "--rules", rules,
                  check=0)
    assert doc["agree"]


def test_lower_precision_is_a_dtype_change_within_tolerance(nnp, tmp_path):
    rng = np.random.default_rng(0)
    w = {"a.weight": rng.standard_normal((32, 16)).astype(np.float32),
         "a.bias": rng.standard_normal(32).astype(np.float32)}
    write_safetensors(tmp_path / "src.safetensors", w)
    write_safetensors(tmp_path / "f16.safetensors", {k: v.astype(np.float16) for k, v in w.items()})
    doc = weights(nnp, tmp_path / "src.safetensors", tmp_path / "f16.safetensors", check=0)
    assert doc["totals"]["dtype_changes"] == 2 and doc["totals"]["within"] == 2
    assert doc["pairs"][0]["destination_dtype"] == "F16"
    # a value off by more than float16's rounding is different
    bad = {k: v.astype(np.float16) for k, v in w.items()}
    bad["a.weight"][3, 4] += 0.5
    write_safetensors(tmp_path / "bad.safetensors", bad)
    doc = weights(nnp, tmp_path / "src.safetensors", tmp_path / "bad.safetensors", check=1)
    (p,) = [p for p in doc["pairs"] if p["class"] == "different"]
    assert p["source"] == "a.weight" and p["metrics"]["max_index"] == [3, 4]


def test_tied_weights_and_a_sharded_source(nnp, tmp_path):
    rng = np.random.default_rng(1)
    emb = rng.standard_normal((50, 8)).astype(np.float32)
    norm = rng.standard_normal(8).astype(np.float32)
    # the source is sharded, with an index, and stores the tied matrix twice
    shards = tmp_path / "src"
    shards.mkdir()
    write_safetensors(shards / "model-00001-of-00002.safetensors",
                      {"model.embed_tokens.weight": emb})
    write_safetensors(shards / "model-00002-of-00002.safetensors",
                      {"model.norm.weight": norm, "lm_head.weight": emb})
    (shards / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "model.embed_tokens.weight": "model-00001-of-00002.safetensors",
        "model.norm.weight": "model-00002-of-00002.safetensors",
        "lm_head.weight": "model-00002-of-00002.safetensors"}}))
    write_safetensors(tmp_path / "dst.safetensors",
                      {"token_embd.weight": emb, "output_norm.weight": norm})
    rules = tmp_path / "r.rules"
    rules.write_text("rename ^token_embd\\. model.embed_tokens.\n"
                     "rename ^output_norm\\. model.norm.\n")
    doc = weights(nnp, shards / "model.safetensors.index.json", tmp_path / "dst.safetensors",
                  "--rules", rules, check=1)
    assert doc["missing"] == ["lm_head.weight"]
    rules.write_text("alias ^token_embd\\.weight$ lm_head.weight\n" + rules.read_text())
    for src in (shards / "model.safetensors.index.json", shards):
        doc = weights(nnp, src, tmp_path / "dst.safetensors", "--rules", rules, check=0)
        assert doc["totals"]["equal"] == 3 and doc["missing"] == []


def test_markdown_and_usage(nnp, vit, tmp_path):
    src, port = vit
    port = dict(port)
    del port["output.bias"]
    dst = write_port(tmp_path / "p.safetensors", port)
    nnp("weights", src, dst, "--rules", RULES, "--markdown", tmp_path / "r.md", check=1)
    md = (tmp_path / "r.md").read_text()
    assert "the destination differs from the source" in md and "missing: `heads.head.bias`" in md
    assert "SRC and DST are needed" in nnp("weights", src, check=2).stderr
    out = nnp("weights", src, tmp_path / "nothere.safetensors", check=2)
    assert "nothere.safetensors" in out.stderr and out.stderr.count("\n") == 1


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_0"])
def test_quantized_destination_judged_by_its_type(nnp, tmp_path, qtype):
    from gguf_writer import GGUFWriter
    rng = np.random.default_rng(2)
    w = {f"blk.{i}.ffn_up.weight": rng.standard_normal((64, 128)).astype(np.float32) * 0.02
         for i in range(3)}
    w["output_norm.weight"] = rng.standard_normal(128).astype(np.float32)
    write_safetensors(tmp_path / "src.safetensors", w)

    def gguf(path, tensors):
        g = GGUFWriter()
        for name, x in tensors.items():
            g.add_tensor(name, x, qtype if x.ndim == 2 else "F32")
        g.write(path)
        return g

    g = gguf(tmp_path / "q.gguf", w)
    doc = weights(nnp, tmp_path / "src.safetensors", tmp_path / "q.gguf", check=0)
    by = {p["source"]: p for p in doc["pairs"]}
    q = by["blk.0.ffn_up.weight"]
    assert q["class"] == "within" and q["quantization"] == qtype
    assert q["metrics"]["rel_l2"] <= q["rel_l2_bound"] / 2      # well inside: the bound has room
    # the reader's dequantized values are what the quantizer's own dequantization gives
    x = w["blk.0.ffn_up.weight"]
    want = np.linalg.norm(g.expected["blk.0.ffn_up.weight"].astype(np.float64) - x) / \
        np.linalg.norm(x.astype(np.float64))
    assert q["metrics"]["rel_l2"] == pytest.approx(want, rel=1e-9)
    assert by["output_norm.weight"]["class"] == "equal"
    # rows of one layer swapped with another's: errors the size of the weights, different
    bad = dict(w)
    bad["blk.1.ffn_up.weight"] = np.concatenate([w["blk.1.ffn_up.weight"][:32],
                                                 w["blk.2.ffn_up.weight"][32:]])
    gguf(tmp_path / "bad.gguf", bad)
    doc = weights(nnp, tmp_path / "src.safetensors", tmp_path / "bad.gguf", check=1)
    assert [p["source"] for p in doc["pairs"] if p["class"] == "different"] == \
        ["blk.1.ffn_up.weight"]
