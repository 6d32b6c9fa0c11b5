"""expected.py - where a report should put the blame for each planted bug of the two pairs: the
culprit that `nnparity run` (no rules file) must name, in the terms of its JSON report.

    {"kind": "module", "port_module": P}   the port's module P computes a wrong result from right
                                           inputs (its own error, measurable by injection)
    {"kind": "code", "port_module": P,     code of module P that no module boundary of its own
     "after": A, "before": B}              covers (P '' for the root): between the port records A
                                           (the last right value) and B (the first wrong one)

"ref_module", where given, is the reference's module that the culprit stands for. Keys left out
are not checked: a folded convolution, for one, stands for two reference modules (conv and BN).
Record names are the bridge's: module path (the root is "model"), '/', role."""

VIT = {
    "no-residual": {
        "kind": "code", "port_module": "blocks.1.mlp",
        "after": "blocks.1.mlp.fc2/out0", "before": "blocks.1.mlp/out0",
        "note": "the residual add lives in FeedForward.forward, after fc2; torchvision adds it "
                "in the encoder block, so the reference's mlp/out0 is the port's fc2/out0"},
    "pos-shift": {
        "kind": "code", "port_module": "embed",
        "after": "embed.proj/out0", "before": "embed/out0",
        "note": "the port adds positions in its patch embedding (torchvision: in the encoder); "
                "the patches are right, the sum is not"},
    "pool-mean": {
        "kind": "code", "port_module": "",
        "after": "norm/out0", "before": "classifier/in0",
        "note": "the root's forward picks the token the classifier sees; the final norm is right"},
    "softmax-scale": {
        "kind": "code", "port_module": "blocks.0.attention",
        "after": "blocks.0.attention.value/out0", "before": "blocks.0.attention.out/in0",
        "note": "q, k and v are right (the reference's in_proj thirds); scores, softmax and the "
                "weighted sum are SelfAttention.forward's own code, no module of their own"},
    "head-merge": {
        "kind": "code", "port_module": "blocks.2.attention",
        "after": "blocks.2.attention.value/out0", "before": "blocks.2.attention.out/in0",
        "note": "heads merged without the transpose: the context entering `out` is wrong"},
    "qk-swap": {
        "kind": "module", "port_module": "blocks.1.attention.query",
        "ref_module": "encoder.layers.encoder_layer_1.self_attention",
        "note": "query holds k's weights (and key q's): query/out0 against the q third of the "
                "fused in_proj tap is the first wrong value"},
    "no-v-bias": {
        "kind": "module", "port_module": "blocks.0.attention.value",
        "ref_module": "encoder.layers.encoder_layer_0.self_attention",
        "note": "value/out0 against the v third of in_proj"},
    "ln-eps": {
        "kind": "module", "port_module": "blocks.0.attention.norm",
        "ref_module": "encoder.layers.encoder_layer_0.ln_1",
        "note": "shows in the class token's row only (its variance is small)"},
    "gelu-tanh": {
        "kind": "module", "port_module": "blocks.1.mlp.act",
        "ref_module": "encoder.layers.encoder_layer_1.mlp.1",
        "note": "tanh-approximated GELU, max-abs about 2e-4 at the logits"},
}

CNN = {
    "bgr": {
        "kind": "code", "port_module": "",
        "after": "model/in0", "before": "stem/in0",
        "note": "the root's forward flips the channels before the stem"},
    "same-padding": {
        "kind": "module", "port_module": "stem.conv",
        "note": "the folded stem convolution (reference conv1 and bn1) pads 2/3, not 3/3"},
    "bn-eps": {
        "kind": "module", "port_module": "body.1.branch.conv_a",
        "note": "folded with eps 1e-3: each channel scaled by about 1 - 5e-4 too little"},
    "stride-moved": {
        "kind": "module", "port_module": "body.2.branch.conv_a",
        "note": "conv_a's output is 16x16 where the reference's bn1 gives 8x8: a shape "
                "mismatch, then conv_b (stride 2) brings the shape back with wrong values"},
    "no-relu": {
        "kind": "code", "port_module": "body.3.branch",
        "after": "body.3.branch.conv_a/out0", "before": "body.3.branch.conv_b/in0",
        "note": "Branch.forward skips its act: body.3.branch.act is never called"},
    "shortcut-unfolded": {
        "kind": "module", "port_module": "body.4.shortcut",
        "note": "the 1x1 downsampling convolution without its BatchNorm"},
    "no-bias": {
        "kind": "module", "port_module": "body.5.branch.conv_b",
        "note": "the folded BatchNorm's shift dropped"},
    "kernel-flip": {
        "kind": "module", "port_module": "body.6.branch.conv_a",
        "note": "the 3x3 kernel flipped in both spatial axes"},
    "no-residual": {
        "kind": "module", "port_module": "body.7.merge",
        "note": "the port's residual add is a module of its own (torchvision: BasicBlock code)"},
    "pool-max": {
        "kind": "code", "port_module": "head",
        "after": "head/in0", "before": "head.fc/in0",
        "note": "Head.forward pools; the features entering the head are right"},
}

EXPECTED = {"vit": VIT, "cnn": CNN}
