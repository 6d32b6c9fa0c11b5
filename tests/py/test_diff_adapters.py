"""`nnparity diff --rules` with adapters: tensors laid out differently on the two sides (a fused qkv
against separate q, k, v and the other way round, transposed weights, a reshaped attention output,
the last token selected, llama.cpp's rotary row order, casts) compare element for element, and a
rule's tolerance applies to the pairs it names. Every case also checks that the same data without
the right rule does not pass, so a rule that did nothing would be caught."""
import json

import numpy as np
import pytest

from conftest import write_safetensors

pytestmark = pytest.mark.cli


def diff(nnp, tmp_path, ref, port, rules, *args, check):
    write_safetensors(tmp_path / "ref.safetensors", ref)
    write_safetensors(tmp_path / "port.safetensors", port)
    extra = []
    if rules is not None:
        (tmp_path / "r.rules").write_text(rules)
        extra = ["--rules", str(tmp_path / "r.rules")]
    out = nnp("diff", "--json", "--no-align", tmp_path / "ref.safetensors",
              tmp_path / "port.safetensors", *extra, *args, check=check)
    return json.loads(out.stdout)


def rng(seed=0):
    return np.random.default_rng(seed)


def test_concat_joins_q_k_v_against_a_fused_qkv(nnp, tmp_path):
    g = rng(1)
    q, k, v = (g.standard_normal((5, 8)).astype(np.float32) for _ in range(3))
    ref = {"blocks.0.attn.qkv/out0": np.concatenate([q, k, v], axis=-1)}
    # stored in alphabetical order, as safetensors writers do: the labels give the order
    port = {"blk.0.attn_k/out0": k, "blk.0.attn_q/out0": q, "blk.0.attn_v/out0": v}
    rules = ("concat  ^blk\\.[0-9]+\\.attn_(q|k|v)/  -1  q k v\n"
             "rename  ^blk\\.([0-9]+)\\.attn_[qkv]/  blocks.\\1.attn.qkv/\n")
    doc = diff(nnp, tmp_path, ref, port, rules, check=0)
    (pair,) = doc["pairs"]
    assert pair["verdict"] == "pass" and pair["metrics"]["max_abs"] == 0
    assert pair["port_parts"] == ["blk.0.attn_q/out0", "blk.0.attn_k/out0", "blk.0.attn_v/out0"]
    assert pair["port_shape"] == [5, 24] and "concat 3 parts on axis -1" in pair["adapters"]
    assert doc["unmatched_port"] == [] and doc["unmatched_ref"] == []
    # q and k swapped in the port: the join is compared, and fails where q and k sit
    swapped = {"blk.0.attn_k/out0": q, "blk.0.attn_q/out0": k, "blk.0.attn_v/out0": v}
    doc = diff(nnp, tmp_path, ref, swapped, rules, check=1)
    m = doc["pairs"][0]["metrics"]
    assert doc["pairs"][0]["verdict"] == "fail" and m["max_index"][1] < 16
    # a missing part leaves the join unmade: both sides listed as unmatched, nothing dropped
    doc = diff(nnp, tmp_path, ref, {"blk.0.attn_q/out0": q, "blk.0.attn_k/out0": k}, rules,
               check=0)
    assert doc["pairs"] == [] and doc["unmatched_ref"] == ["blocks.0.attn.qkv/out0"]
    assert sorted(doc["unmatched_port"]) == ["blk.0.attn_k/out0", "blk.0.attn_q/out0"]


def test_split_compares_a_fused_port_tensor_with_separate_ones(nnp, tmp_path):
    g = rng(2)
    # grouped-query attention: q has 8 rows, k and v 4 each; sizes say where each part lies
    q, k, v = (g.standard_normal((n, 6)).astype(np.float32) for n in (8, 4, 4))
    ref = {"layers.0.q_proj.weight": q, "layers.0.k_proj.weight": k,
           "layers.0.v_proj.weight": v}
    port = {"layers.0.qkv_proj.weight": np.concatenate([q, k, v])}
    rules = "split  \\.(qkv)_proj\\.  0  q:8 k:4 v:4\n"
    doc = diff(nnp, tmp_path, ref, port, rules, check=0)
    assert [p["verdict"] for p in doc["pairs"]] == ["pass"] * 3
    assert {p["port"] for p in doc["pairs"]} == {"layers.0.qkv_proj.weight"}
    # equal parts when no sizes are given: 16 rows into 3 does not divide, so it is not compared
    doc = diff(nnp, tmp_path, ref, port, "split  \\.(qkv)_proj\\.  0  q k v\n", check=1)
    assert {p["verdict"] for p in doc["pairs"]} == {"shape"}
    assert "does not divide into equal parts" in doc["pairs"][0]["problem"]


def test_transpose_reshape_select_slice(nnp, tmp_path):
    g = rng(3)
    w = g.standard_normal((6, 4)).astype(np.float32)
    attn = g.standard_normal((7, 16)).astype(np.float32)
    logits = g.standard_normal((1, 5, 10)).astype(np.float32)
    emb = g.standard_normal((12, 3)).astype(np.float32)
    ref = {"fc.weight": w, "attn/out0": attn, "lm_head/out0": logits, "embed.weight": emb}
    port = {"fc.weight": np.ascontiguousarray(w.T),      # stored [in, out]
            "attn/out0": attn.reshape(7, 4, 4),          # heads kept apart
            "lm_head/out0": logits[:, -1, :].copy(),     # only the last token computed
            "embed.weight": emb[2:10].copy()}            # a slice of the vocabulary
    rules = ("transpose ^fc\\.weight$\n"
             "reshape   ^attn/\n"
             "ref select ^lm_head/ 1 -1\n"
             "ref slice ^embed\\.  0 2:-2\n")
    doc = diff(nnp, tmp_path, ref, port, rules, check=0)
    by = {p["ref"]: p for p in doc["pairs"]}
    assert all(p["verdict"] == "pass" and p["metrics"]["max_abs"] == 0 for p in by.values())
    assert by["fc.weight"]["adapters"] == "transpose"
    assert by["lm_head/out0"]["ref_shape"] == [1, 10]
    assert by["embed.weight"]["ref_shape"] == [8, 3]
    # without the rules, nothing of it compares
    doc = diff(nnp, tmp_path, ref, port, None, check=1)
    assert {p["verdict"] for p in doc["pairs"]} == {"shape"}
    # an explicit permutation that is not the right one is compared, and fails
    port["fc.weight"] = w.reshape(4, 6).copy()
    doc = diff(nnp, tmp_path, ref, port, "reshape ^fc\\.weight$ 6,4\ntranspose ^fc 1,0\n"
               "reshape ^attn/\nref select ^lm_head/ 1 -1\nref slice ^embed\\. 0 2:-2\n",
               check=1)
    assert {p["ref"]: p["verdict"] for p in doc["pairs"]}["fc.weight"] == "shape"


def test_worst_element_index_is_in_the_compared_layout(nnp, tmp_path):
    w = np.zeros((3, 5), np.float32)
    port = np.ascontiguousarray(w.T)
    port[4, 1] = 1.0                                      # element [1, 4] of the reference layout
    doc = diff(nnp, tmp_path, {"w": w}, {"w": port}, "transpose ^w$ 1,0\n", check=1)
    assert doc["pairs"][0]["metrics"]["max_index"] == [1, 4]


def llama_cpp_permute(w, heads):
    """The row permutation llama.cpp's converter applies to q and k weights."""
    return (w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def test_rotary_undoes_llama_cpp_row_order(nnp, tmp_path):
    g = rng(4)
    wq = g.standard_normal((32, 12)).astype(np.float32)
    bq = g.standard_normal(32).astype(np.float32)
    ref = {"q_proj.weight": wq, "q_proj.bias": bq}
    port = {"q_proj.weight": llama_cpp_permute(wq, 4), "q_proj.bias": llama_cpp_permute(bq, 4)}
    doc = diff(nnp, tmp_path, ref, port, "rotary ^q_proj\\. 4\n", check=0)
    assert [p["verdict"] for p in doc["pairs"]] == ["pass", "pass"]
    assert diff(nnp, tmp_path, ref, port, None, check=1)["pairs"][0]["verdict"] == "fail"
    # the wrong head count is a different permutation: fails
    doc = diff(nnp, tmp_path, ref, port, "rotary ^q_proj\\. 2\n", check=1)
    assert doc["pairs"][0]["verdict"] == "fail"


def test_cast_and_tolerance_rules(nnp, tmp_path):
    g = rng(5)
    x = g.standard_normal(1000).astype(np.float32)
    # the port rounds to bfloat16 (round to nearest even on the upper 16 bits)
    bits = x.view(np.uint32)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000).astype(np.uint32)
    port_bf16 = rounded.view(np.float32)
    ref = {"a/out0": x, "b/out0": x}
    port = {"a/out0": port_bf16, "b/out0": port_bf16}
    doc = diff(nnp, tmp_path, ref, port, None, check=1)
    assert {p["verdict"] for p in doc["pairs"]} == {"fail"}
    # rounding the reference the same way makes it exact; a looser tolerance accepts b
    doc = diff(nnp, tmp_path, ref, port, "ref cast ^a/ BF16\ntolerance ^b/ 1e-2 1e-2\n",
               check=0)
    by = {p["ref"]: p for p in doc["pairs"]}
    assert by["a/out0"]["metrics"]["max_abs"] == 0 and by["a/out0"]["ref_dtype"] == "BF16"
    assert by["b/out0"]["verdict"] == "pass" and by["b/out0"]["atol"] == 1e-2
    # a rule's tolerance wins over --atol/--rtol, which still set the others
    doc = diff(nnp, tmp_path, ref, port, "tolerance ^b/ 1e-2 1e-2\n", "--atol", "0", "--rtol",
               "0", check=1)
    by = {p["ref"]: p for p in doc["pairs"]}
    assert by["b/out0"]["verdict"] == "pass" and by["a/out0"]["verdict"] == "fail"


def test_ref_ignore_drops_reference_records(nnp, tmp_path):
    x = np.ones(3, np.float32)
    ref = {"blocks.0/out0": x, "blocks.0.dropout/out0": x}
    doc = diff(nnp, tmp_path, ref, {"blocks.0/out0": x}, None, check=0)
    assert doc["unmatched_ref"] == ["blocks.0.dropout/out0"]
    doc = diff(nnp, tmp_path, ref, {"blocks.0/out0": x}, "ref ignore \\.dropout/\n", check=0)
    assert doc["unmatched_ref"] == [] and len(doc["pairs"]) == 1
    # it is about the reference's names only: a port record of that name is still compared
    doc = diff(nnp, tmp_path, {"a/out0": x}, {"a/out0": x}, "ref ignore ^a/\n", check=0)
    assert doc["pairs"] == [] and doc["unmatched_port"] == ["a/out0"]


def test_renames_that_meet_are_reported(nnp, tmp_path):
    """A rename too general sends two port records onto one name: the first one takes it and
    the other is reported as a collision, naming both, not just listed as unmatched."""
    r = rng(7)
    up, gate = r.standard_normal(8).astype(np.float32), r.standard_normal(8).astype(np.float32)
    ref = {"layers.0.mlp.up/out0": up, "layers.0.mlp.gate/out0": gate}
    port = {"blk.0.ffn_up/out0": up, "blk.0.ffn_gate/out0": gate}
    rules = "rename ^blk\\.([0-9]+)\\.ffn_(up|gate)/ layers.\\1.mlp.up/\n"
    doc = diff(nnp, tmp_path, ref, port, rules, check=0)
    # the port's earlier record takes the name
    assert doc["collisions"] == [{"port": "blk.0.ffn_gate/out0", "name": "layers.0.mlp.up/out0",
                                  "taken_by": "blk.0.ffn_up/out0"}]
    assert doc["unmatched_port"] == ["blk.0.ffn_gate/out0"]
    text = nnp("diff", "--no-align", "--rules", tmp_path / "r.rules", tmp_path / "ref.safetensors",
               tmp_path / "port.safetensors", check=0).stdout
    assert ("rules: 1 port record renamed onto a name another port record took first:\n"
            "  blk.0.ffn_gate/out0 -> layers.0.mlp.up/out0\n"
            "    (taken by blk.0.ffn_up/out0)\n") in text
    # renames that do not meet report nothing
    doc = diff(nnp, tmp_path, ref, port, "rename ^blk\\.([0-9]+)\\.ffn_ layers.\\1.mlp.\n",
               check=0)
    assert doc["collisions"] == [] and len(doc["pairs"]) == 2


def test_component_rules_place_records(nnp, tmp_path):
    x = np.ones(3, np.float32)
    ref = {"blocks.0.mixer/out0": x, "blocks.0.norm_f/out0": x}
    doc = diff(nnp, tmp_path, ref, ref, None, check=0)
    assert set(doc["components"]) == {"other", "normalization"}
    doc = diff(nnp, tmp_path, ref, ref, "component \\.mixer/ attention\n", check=0)
    assert set(doc["components"]) == {"attention", "normalization"}


def test_text_report_shows_adapters_and_unfit_rules(nnp, tmp_path):
    write_safetensors(tmp_path / "ref.safetensors", {"w": np.zeros((2, 3), np.float32)})
    write_safetensors(tmp_path / "port.safetensors", {"w": np.ones((2, 3, 1), np.float32)})
    (tmp_path / "r.rules").write_text("transpose ^w$ 1,0\n")
    out = nnp("diff", tmp_path / "ref.safetensors", tmp_path / "port.safetensors", "--rules",
              tmp_path / "r.rules", check=1).stdout
    assert "adapted: transpose 1,0" in out
    assert "not compared: 'transpose 1,0' does not fit a tensor of shape [2, 3, 1]" in out


@pytest.mark.parametrize("rule,needle", [
    ("transpose ^w$ 1,x", "line 1, column 15: '1,x' is not a list of axes"),
    ("concat ^w$ 0 a b", "the regex needs a group"),
    ("split ^(w)$ 0 a", "two or more labels"),
    ("split ^(w)$ 0 a:1 b", "give every part a size, or none"),
    ("cast ^w$ I8", "cast takes F64, F32, F16 or BF16"),
    ("ref rename a b", "'ref' goes only before ignore or an adapter"),
    ("slice ^w$ 0 3", "'3' is not a range START:END"),
    ("tolerance ^w$ 1e-3", "needs a regex, an atol and an rtol"),
    ("rotary ^w$ 0", "is not a number of heads"),
    ("component ^w$ mixer", "'mixer' is not a component"),
    ("reshape ^w$ -1,-1", "at most one -1"),
    # stacked repetitions make glibc's regcomp exponential: refused before it runs
    ("rename a" + "+" * 30 + " b", "line 1, column 10: bad regex"),
    ("ignore (x*){2}{3}", "one repetition operator right after another"),
    ("ignore ((x{64}){64}){64}", "counts past {64} or in more than two {}"),
    ("ignore x{1000}", "counts past {64}"),
])
def test_bad_adapter_rules(nnp, tmp_path, rule, needle):
    (tmp_path / "r.rules").write_text(rule + "\n")
    write_safetensors(tmp_path / "x.safetensors", {"w": np.zeros(2, np.float32)})
    out = nnp("diff", "--rules", tmp_path / "r.rules", tmp_path / "x.safetensors",
              tmp_path / "x.safetensors", check=2)
    assert needle in out.stderr and str(tmp_path / "r.rules") in out.stderr
    assert out.stderr.count("\n") == 1


def test_every_rules_example_in_the_docs_parses(nnp, tmp_path):
    from conftest import ROOT
    text = (ROOT / "docs" / "rules.md").read_text()
    blocks = text.split("```")[1::2]
    examples = [b for b in blocks if "line " not in b]      # the error block shows errors
    assert len(examples) >= 4
    write_safetensors(tmp_path / "x.safetensors", {"w": np.zeros(2, np.float32)})
    for i, block in enumerate(examples):
        path = tmp_path / f"{i}.rules"
        path.write_text(block)
        nnp("diff", "--rules", path, tmp_path / "x.safetensors", tmp_path / "x.safetensors",
            check=0)
