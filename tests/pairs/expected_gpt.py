"""expected_gpt.py - where each bug that gpt_port.c can plant (NNP_PAIR_BUG=<name>) lives: the
culprit that `nnparity run` on gpt_ref.py and the port, with no rules file, should name.

    kind "module": the module's own computation errs: it fails on the reference's inputs too
                   (labelled own); port_module names it as the port does, ref_module (where one
                   reference module corresponds) as the reference does.
    kind "code":   the code of port_module between two of its children's taps errs ("" is the
                   top level, outside every tapped module): the first wrong value enters a module
                   that is right on the reference's inputs (labelled inherited).

first: the port record of the first divergence (execution order), as the hand pairing of
gpt_oracle.py finds it; the test checks these entries against it, so that a wrong entry here
cannot pass for a wrong pairing. The port's modules nest by execution, not by name:
blk.N.attn_qkv, attn_kqv and attn_output run inside blk.N.attn; ffn_up and ffn_down inside
blk.N.ffn; the norms, attn and ffn inside blk.N."""

EXPECTED = {
    "no-residual": {
        "kind": "code", "port_module": "blk.1", "first": "blk.1.ffn_norm/in0",
        "note": "blk.1 drops the residual add after its attention: ffn_norm's input is wrong, "
                "attn's output right"},
    "pos-off-by-one": {
        "kind": "code", "port_module": "", "first": "position_embd/in0#1",
        "note": "the top level passes position n_past + 1 to the position embedding at every "
                "decode step; the prefill (call 0) is right"},
    "softmax-scale": {
        "kind": "module", "port_module": "blk.0.attn_kqv", "ref_module": "h.0.attn.attend",
        "first": "blk.0.attn_kqv/out0",
        "note": "scores scaled by 1/head_dim instead of 1/sqrt(head_dim)"},
    "no-causal-mask": {
        "kind": "module", "port_module": "blk.1.attn_kqv", "ref_module": "h.1.attn.attend",
        "first": "blk.1.attn_kqv/out0",
        "note": "the prefill lets each token attend to later ones; decode steps are right on "
                "right inputs"},
    "kv-slot": {
        "kind": "code", "port_module": "blk.0.attn", "first": "blk.0.attn_kqv/in1#1",
        "note": "blk.0.attn's own code stores k and v one cache slot too far at decode steps: "
                "attn_kqv's keys (in1) hold a zero row where the new key should be"},
    "qk-swap": {
        "kind": "module", "port_module": "blk.1.attn_qkv", "first": "blk.1.attn_qkv/out0",
        "note": "the fused weight's q and k thirds swapped; its output pairs with the "
                "reference's q_proj, k_proj and v_proj outputs side by side, and nothing else "
                "of the reference holds it"},
    "no-bias": {
        "kind": "module", "port_module": "blk.0.attn_output", "ref_module": "h.0.attn.o_proj",
        "first": "blk.0.attn_output/out0",
        "note": "the attention's output projection without its bias"},
    "ln-eps": {
        "kind": "module", "port_module": "blk.0.attn_norm", "ref_module": "h.0.ln_1",
        "first": "blk.0.attn_norm/out0",
        "note": "every LayerNorm with eps 1e-6 instead of 1e-5; it shows first where the input "
                "variance is small, on the embeddings"},
    "gelu-tanh": {
        "kind": "code", "port_module": "blk.0.ffn", "first": "blk.0.ffn_down/in0",
        "note": "blk.N.ffn computes GELU in its own code, with the tanh approximation; the "
                "reference has a module for it (mlp.act), the port none"},
    "head-split": {
        "kind": "module", "port_module": "blk.1.attn_kqv", "ref_module": "h.1.attn.attend",
        "first": "blk.1.attn_kqv/out0",
        "note": "heads taken interleaved (dimension d of head h at d*heads + h)"},
}
