"""Where a failing pair's error lies and what explains it: differences planted with known
answers (one channel scaled, one head's rows permuted, q and k swapped, a bias dropped, a token
offset by one, a transposed output, bf16 rounding, a clipped activation, a zeroed slice, a NaN)
must each get the right `where:` and `hint:`, no hint that does not fit, and correct pairs none."""
import json

import numpy as np
import pytest

from conftest import write_safetensors

RNG = np.random.default_rng(7)


def dumps(tmp_path, records):
    """records: [(name, module type, ref array, port array)]; every file also holds a record
    that agrees, "ok/out0"."""
    ok = RNG.standard_normal((4, 8)).astype(np.float32)
    records = [("ok/out0", "Linear", ok, ok.copy())] + records
    paths = []
    for side in (2, 3):
        meta = [{"tensor": n, "module": n.split("/")[0], "role": "out0", "type": t, "call": 0,
                 "seq": k} for k, (n, t, *_ ) in enumerate(records)]
        path = tmp_path / ("ref.safetensors" if side == 2 else "port.safetensors")
        tensors = {r[0]: r[side] for r in records}
        md = {"nnparity.format": "dump/1", "nnparity.records": json.dumps(meta)}
        write_safetensors(path, tensors, md)
        paths.append(path)
    return paths


def diff(nnp, tmp_path, records):
    ref, port = dumps(tmp_path, records)
    doc = json.loads(nnp("diff", "--no-align", "--json", ref, port).stdout)
    text = nnp("diff", "--no-align", ref, port).stdout
    pairs = {p["ref"]: p for p in doc["pairs"]}
    assert pairs["ok/out0"]["verdict"] == "pass"
    assert pairs["ok/out0"]["hints"] == [] and pairs["ok/out0"]["profile"] is None
    return pairs, text


def kinds(pair):
    return [h["kind"] for h in pair["hints"]]


def test_one_channel_scaled(nnp, tmp_path):
    r = RNG.standard_normal((1, 16, 8, 8)).astype(np.float32)
    p = r.copy()
    p[:, 7] *= 1.5
    pairs, text = diff(nnp, tmp_path, [("conv/out0", "Conv2d", r, p)])
    x = pairs["conv/out0"]
    assert x["profile"]["where"] == "all 64 failing elements lie in axis 1 index 7 (channel 7)"
    assert kinds(x) == ["scale"]
    assert x["hints"][0]["value"] == pytest.approx(1.5, rel=1e-6)
    assert x["hints"][0]["fit"] > 0.999
    assert "where: all 64 failing elements lie in axis 1 index 7 (channel 7)" in text
    assert "hint: port = 1.5 x reference in axis 1 index 7 (channel 7)" in text
    ax = x["profile"]["axes"][1]
    assert ax["name"] == "channel" and ax["fail"][7] == 64 and sum(ax["fail"]) == 64
    assert ax["sq_share"][7] == pytest.approx(1.0)


def test_one_heads_rows_permuted(nnp, tmp_path):
    r = RNG.standard_normal((1, 4, 16, 8)).astype(np.float32)
    p = r.copy()
    perm = np.roll(np.arange(16), 5)
    p[:, 2] = r[:, 2, perm]
    pairs, _ = diff(nnp, tmp_path, [("attn/out0", "SelfAttention", r, p)])
    x = pairs["attn/out0"]
    assert x["profile"]["where"].endswith("lie in axis 1 index 2 (head 2)")
    assert kinds(x) == ["permuted"]
    assert x["hints"][0]["axis"] == 2 and x["hints"][0]["value"] == 1


def test_q_and_k_swapped(nnp, tmp_path):
    q = RNG.standard_normal((1, 16, 32)).astype(np.float32)
    k = RNG.standard_normal((1, 16, 32)).astype(np.float32)
    pairs, text = diff(nnp, tmp_path, [("attn.q/out0", "Linear", q, k),
                                       ("attn.k/out0", "Linear", k, q)])
    assert kinds(pairs["attn.q/out0"]) == ["other-record"]
    assert "attn.k/out0" in pairs["attn.q/out0"]["hints"][0]["text"]
    assert kinds(pairs["attn.k/out0"]) == ["other-record"]
    assert "attn.q/out0" in pairs["attn.k/out0"]["hints"][0]["text"]
    assert "hint: the port holds the reference's attn.k/out0" in text


def test_q_and_k_swapped_in_a_fused_projection(nnp, tmp_path):
    r = RNG.standard_normal((1, 16, 96)).astype(np.float32)
    p = np.concatenate([r[..., 32:64], r[..., :32], r[..., 64:]], axis=-1)
    pairs, _ = diff(nnp, tmp_path, [("attn.qkv/out0", "Linear", r, p)])
    x = pairs["attn.qkv/out0"]
    assert kinds(x) == ["permuted"]
    assert x["hints"][0]["axis"] == 2 and x["hints"][0]["value"] == 32
    assert "port block 0 holds 1, 1 holds 0" in x["hints"][0]["text"]


def test_a_bias_dropped(nnp, tmp_path):
    r = RNG.standard_normal((1, 16, 32)).astype(np.float32)
    b = RNG.standard_normal(32).astype(np.float32)
    pairs, _ = diff(nnp, tmp_path, [("fc/out0", "Linear", r + b, r)])
    x = pairs["fc/out0"]
    assert kinds(x) == ["offset"]
    assert x["hints"][0]["axis"] == 2
    assert "along axis 2 (feature)" in x["hints"][0]["text"]


def test_a_token_offset_by_one(nnp, tmp_path):
    r = RNG.standard_normal((1, 16, 32)).astype(np.float32)
    p = r.copy()
    p[:, 1:] = r[:, :-1]
    pairs, text = diff(nnp, tmp_path, [("emb/out0", "Embedding", r, p)])
    x = pairs["emb/out0"]
    assert x["profile"]["where"] == "the error lies along axis 1 (token) from index 1 on"
    assert kinds(x) == ["shift"]
    assert x["hints"][0]["axis"] == 1 and x["hints"][0]["value"] == 1
    assert "hint: shifted by +1 along axis 1 (token)" in text


def test_a_transposed_output(nnp, tmp_path):
    r = RNG.standard_normal((1, 2, 16, 16)).astype(np.float32)
    p = np.ascontiguousarray(r.transpose(0, 1, 3, 2))
    pairs, _ = diff(nnp, tmp_path, [("attn/out0", "Attention", r, p)])
    x = pairs["attn/out0"]
    assert kinds(x) == ["axes-swapped"]
    assert (x["hints"][0]["axis"], x["hints"][0]["axis2"]) == (2, 3)


def test_a_transposed_output_of_another_shape(nnp, tmp_path):
    r = RNG.standard_normal((16, 32)).astype(np.float32)
    pairs, text = diff(nnp, tmp_path, [("fc/out0", "Linear", r, np.ascontiguousarray(r.T))])
    x = pairs["fc/out0"]
    assert x["verdict"] == "shape" and x["profile"] is None
    assert kinds(x) == ["axes-swapped"]
    assert "transpose NAME 1,0" in x["hints"][0]["text"]
    assert "hint: the port holds the reference with its axes permuted" in text


def test_bf16_rounding_is_a_precision_change(nnp, tmp_path):
    r = RNG.standard_normal((1, 16, 64)).astype(np.float32)
    bits = r.view(np.uint32)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000).astype(np.uint32)
    pairs, _ = diff(nnp, tmp_path, [("fc/out0", "Linear", r, rounded.view(np.float32))])
    x = pairs["fc/out0"]
    assert kinds(x) == ["precision"]
    assert "bf16" in x["hints"][0]["text"] and "the port's values are bf16 numbers" in \
        x["hints"][0]["text"]
    assert x["hints"][0]["value"] <= 0.5


def test_a_clipped_activation(nnp, tmp_path):
    r = (3 * RNG.standard_normal((1, 16, 64))).astype(np.float32)
    pairs, _ = diff(nnp, tmp_path, [("act/out0", "GELU", r, np.minimum(r, 6.0))])
    x = pairs["act/out0"]
    assert kinds(x) == ["clip"]
    assert x["hints"][0]["value"] == 6.0 and "clipped above at 6" in x["hints"][0]["text"]


def test_a_zeroed_slice(nnp, tmp_path):
    r = RNG.standard_normal((1, 16, 8, 8)).astype(np.float32)
    p = r.copy()
    p[:, 3] = 0
    pairs, text = diff(nnp, tmp_path, [("conv/out0", "Conv2d", r, p)])
    x = pairs["conv/out0"]
    assert x["profile"]["where"] == "all 64 failing elements lie in axis 1 index 3 (channel 3)"
    assert kinds(x) == ["zeros"]
    assert "hint: zeros where the reference is not in axis 1 index 3 (channel 3)" in text


def test_nan_introduced(nnp, tmp_path):
    r = RNG.standard_normal((1, 16, 32)).astype(np.float32)
    p = r.copy()
    p[0, 5, 8:10] = np.nan
    pairs, text = diff(nnp, tmp_path, [("fc/out0", "Linear", r, p)])
    x = pairs["fc/out0"]
    assert x["profile"]["where"] == ("all 2 failing elements lie in axis 1 index 5 (token 5), "
                                     "axis 2 indices 8 and 9 (features 8 and 9)")
    assert kinds(x) == ["nonfinite"]
    assert x["hints"][0]["value"] == 2


def test_unexplained_differences_get_no_hint(nnp, tmp_path):
    r = RNG.standard_normal((1, 16, 32)).astype(np.float32)
    p = r + 0.1 * RNG.standard_normal(r.shape).astype(np.float32)
    pairs, text = diff(nnp, tmp_path, [("fc/out0", "Linear", r, p)])
    x = pairs["fc/out0"]
    assert x["verdict"] == "fail" and x["hints"] == []
    assert x["profile"]["where"].startswith("the error is spread over every axis")
    assert "hint:" not in text and "where: the error is spread" in text


def test_the_profile_of_a_large_pair_is_a_sample(nnp, tmp_path):
    r = RNG.standard_normal((1, 64, 96, 96)).astype(np.float32)
    p = r.copy()
    p[:, 11] *= -1
    pairs, _ = diff(nnp, tmp_path, [("conv/out0", "Conv2d", r, p)])
    x = pairs["conv/out0"]
    assert x["profile"]["sampled"] and x["profile"]["elements"] == 1 << 16
    assert x["profile"]["where"].startswith("all ")
    assert x["profile"]["where"].endswith("of a sample lie in axis 1 index 11 (channel 11)")
    assert kinds(x) == ["sign"]


def where_of(nnp, tmp_path, r, p, kind="Custom"):
    pairs, _ = diff(nnp, tmp_path, [("m/out0", kind, r, p)])
    return pairs["m/out0"]["profile"]


def test_an_error_everywhere_has_no_onset_along_a_long_axis(nnp, tmp_path):
    # noise everywhere: no index of an axis of thousands is "where the error starts", whether the
    # pair is read whole or sampled (the first indices a sample reads, or the first few whose
    # share is under 1e-3 of the total, used to be called the onset)
    for shape in [(2, 16384), (4, 1024, 1024)]:
        r = RNG.standard_normal(shape).astype(np.float32)
        p = r + 1e-3 * RNG.standard_normal(shape).astype(np.float32)
        prof = where_of(nnp, tmp_path, r, p)
        assert prof["sampled"] == (r.size > 1 << 16)
        assert prof["where"] == "the error is spread over every axis", shape


def test_scattered_failing_elements_have_no_onset(nnp, tmp_path):
    # a NaN every 997 elements: in a sample, none may lie before some index by chance
    r = RNG.standard_normal((2, 512, 1024)).astype(np.float32)
    p = r.copy()
    p.reshape(-1)[::997] = np.nan
    assert where_of(nnp, tmp_path, r, p)["where"] == "the error is spread over every axis"


def test_an_onset_in_a_sample_says_what_the_sample_did_not_read(nnp, tmp_path):
    r = RNG.standard_normal((4, 1024, 1024)).astype(np.float32)
    p = r.copy()
    p[:, 512:] += 0.01
    where = where_of(nnp, tmp_path, r, p)["where"]
    # the onset lies between the last index read before it and the first one read after it
    prefix = "the error lies along axis 1 from an index between "
    assert where.startswith(prefix) and where.endswith(" on (the sample read none between)")
    lo, hi = (int(v) for v in where[len(prefix):].split(" on")[0].split(" and "))
    assert lo <= 512 <= hi and hi - lo < 32


def test_a_sample_that_misses_the_failing_elements_says_so(nnp, tmp_path):
    # one channel of 1024 scaled: 128 runs of 512 elements seldom cross it, and what they read
    # agrees exactly; "spread over every axis" would be false
    r = RNG.standard_normal((4, 1024, 1024)).astype(np.float32)
    p = r.copy()
    p[:, 1] *= 1.3
    prof = where_of(nnp, tmp_path, r, p)
    assert prof["sampled"] and prof["fail"] == 0
    assert prof["where"] == ("the sample read (65536 of 4194304 elements) holds none of the "
                             "4096 failing elements")


def test_a_sample_region_keeps_only_the_axes_it_shows(nnp, tmp_path):
    # channel 1 of every batch scaled; the sample crosses channel 1 in one batch only, so it
    # shows the channel, not the batch
    r = RNG.standard_normal((8, 256, 2048)).astype(np.float32)
    p = r.copy()
    p[:, 1] *= 1.3
    prof = where_of(nnp, tmp_path, r, p)
    assert prof["sampled"] and prof["fail"] > 0
    assert prof["where"].endswith("of a sample lie in axis 1 index 1"), prof["where"]


def test_a_stretch_of_indices_is_named_by_its_ends(nnp, tmp_path):
    # tokens 20 to 39 zeroed: the error starts and ends along the token axis
    r = RNG.standard_normal((1, 64, 32)).astype(np.float32)
    p = r.copy()
    p[:, 20:40] = 0
    prof = where_of(nnp, tmp_path, r, p)
    assert prof["where"] == "the error lies along axis 1 in indices 20 to 39"
    # the first quarter zeroed: it ends, and a sample says between which indices it read
    r = RNG.standard_normal((4, 1024, 1024)).astype(np.float32)
    p = r.copy()
    p[:, :256] = 0
    where = where_of(nnp, tmp_path, r, p)["where"]
    prefix = "the error lies along axis 1 up to an index between "
    assert where.startswith(prefix) and where.endswith(" (the sample read none between)"), where
    lo, hi = (int(v) for v in where[len(prefix):].split(" (")[0].split(" and "))
    assert lo <= 255 <= hi and hi - lo < 32
