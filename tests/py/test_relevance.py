"""End-to-end tests of `nnparity relevance`: a small ViT built here taps its attention
probabilities with gradients through the PyTorch bridge; every method's relevance, patch map and
heatmap must match the same computation written independently in torch; the PNGs decode (with
the small reader below) to the expected sizes and colours; back-mapping through a pixel-shuffle
projector on a fake LLM attention record; and each bad input gives its one-line error and
exit code 2."""
import struct
import zlib

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as Fn

import nnparity
from conftest import read_safetensors, write_safetensors

pytestmark = pytest.mark.cli

DIM, HEADS, DEPTH, PATCH, IMAGE = 32, 4, 3, 4, 16  # 16 patches + CLS = 17 tokens


# ------------------------------------------------------------------------------------------------
# A small ViT that taps its attention maps

class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv, self.proj = nn.Linear(DIM, 3 * DIM), nn.Linear(DIM, DIM)

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, HEADS, c // HEADS).permute(2, 0, 3, 1, 4)
        attn = ((q @ k.transpose(-2, -1)) * (c // HEADS) ** -0.5).softmax(-1)
        attn = nnparity.tap("attn", attn, grad=True)
        # kept for the reference computation, independently of what the capture recorded
        attn.retain_grad()
        self.seen = attn
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(DIM), Attention()
        self.norm2 = nn.LayerNorm(DIM)
        self.mlp = nn.Sequential(nn.Linear(DIM, 2 * DIM), nn.GELU(), nn.Linear(2 * DIM, DIM))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Conv2d(3, DIM, PATCH, PATCH)
        self.cls = nn.Parameter(torch.randn(1, 1, DIM))
        self.pos = nn.Parameter(torch.randn(1, (IMAGE // PATCH) ** 2 + 1, DIM))
        self.blocks = nn.Sequential(*[Block() for _ in range(DEPTH)])
        self.head = nn.Linear(DIM, 10)

    def forward(self, img):
        x = self.embed(img).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1) + self.pos
        return self.head(self.blocks(x)[:, 0])


@pytest.fixture(scope="module")
def vit_capture(tmp_path_factory):
    """The capture of one forward and backward of the class logit, with the maps and gradients
    torch itself saw."""
    torch.manual_seed(0)
    model = TinyViT()
    img = torch.randn(1, 3, IMAGE, IMAGE)
    path = tmp_path_factory.mktemp("vit") / "vit.safetensors"
    with nnparity.capture(model, path):
        logits = model(img)
        logits[0, 3].backward()
    attns = [b.attn.seen.detach()[0].double() for b in model.blocks]
    grads = [b.attn.seen.grad[0].double() for b in model.blocks]
    return path, attns, grads


# ------------------------------------------------------------------------------------------------
# The methods, written from the papers' formulas

def discard_smallest(f, ratio):
    flat = f.flatten().clone()
    k = int(flat.numel() * ratio)
    if k:
        idx = flat.topk(k, largest=False).indices
        flat[idx[idx != 0]] = 0
    return flat.view_as(f)


def rollout_of(maps, q, discard=0.0, start=0):
    n = maps[0].shape[-1]
    eye = torch.eye(n, dtype=torch.float64)
    joint = eye
    for f in maps[start:]:
        a = 0.5 * discard_smallest(f, discard) + 0.5 * eye
        joint = (a / a.sum(-1, keepdim=True)) @ joint
    return joint[q]


def reference(method, attns, grads, q=0, fusion="mean", discard=0.0, start=0):
    if method == "rollout":
        fuse = {"mean": lambda a: a.mean(0), "max": lambda a: a.amax(0),
                "min": lambda a: a.amin(0)}[fusion]
        return rollout_of([fuse(a) for a in attns], q, discard, start)
    if method == "grad_rollout":
        return rollout_of([(g * a).mean(0).clamp(min=0) for a, g in zip(attns, grads)], q,
                          discard, start)
    abar = [(g * a).clamp(min=0).mean(0) for a, g in zip(attns, grads)]
    if method == "chefer_rollout":
        return rollout_of(abar, q, discard, start)
    n = attns[0].shape[-1]
    rel = torch.eye(n, dtype=torch.float64)
    for m in abar[start:]:
        rel = rel + m @ rel
    r = rel[q].clone()
    r[q] = 0
    return r


def minmax(x):
    lo, hi = x.min(), x.max()
    return (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)


# ------------------------------------------------------------------------------------------------
# PNG, with zlib and struct only

def png_encode(pixels, depth=8):
    """pixels [h, w, c]: c = 1 grey, 3 RGB, 4 RGBA; 8 or 16 bits."""
    h, w, c = pixels.shape
    kind = ">u2" if depth == 16 else "u1"
    raw = b"".join(b"\x00" + pixels[y].astype(kind).tobytes() for y in range(h))

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xffffffff))
    ihdr = struct.pack(">IIBBBBB", w, h, depth, {1: 0, 3: 2, 4: 6}[c], 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


def png_decode(path):
    """8-bit RGB, non-interlaced (what nnparity writes), all five row filters."""
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        assert zlib.crc32(kind + body) & 0xffffffff == struct.unpack(
            ">I", data[pos + 8 + n:pos + 12 + n])[0]
        if kind == b"IHDR":
            w, h, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert (depth, color, interlace) == (8, 2, 0)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    raw, stride = zlib.decompress(idat), w * 3
    out, prev = np.zeros((h, stride), np.int64), np.zeros(stride, np.int64)
    for y in range(h):
        f = raw[y * (stride + 1)]
        line = np.frombuffer(raw, np.uint8, stride, y * (stride + 1) + 1).astype(np.int64)
        cur = np.zeros(stride, np.int64)
        for x in range(stride):
            a = cur[x - 3] if x >= 3 else 0
            b, c = prev[x], prev[x - 3] if x >= 3 else 0
            if f == 0:
                p = 0
            elif f == 1:
                p = a
            elif f == 2:
                p = b
            elif f == 3:
                p = (a + b) // 2
            else:
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                p = a if pa <= pb and pa <= pc else b if pb <= pc else c
            cur[x] = (line[x] + p) & 0xff
        out[y], prev = cur, cur
    return out.reshape(h, w, 3)


def jet(v):
    """matplotlib's jet segment data, piecewise linear."""
    v = np.clip(v, 0, 1)
    r = np.interp(v, [0, .35, .66, .89, 1], [0, 0, 1, 1, .5])
    g = np.interp(v, [0, .125, .375, .64, .91, 1], [0, 0, 1, 1, 0, 0])
    b = np.interp(v, [0, .11, .34, .65, 1], [.5, 1, 1, 0, 0])
    return np.stack([r, g, b], -1)


def load_out(d):
    _, tensors = read_safetensors(d / "relevance.safetensors")
    out = {}
    for name, (dtype, shape, raw) in tensors.items():
        assert dtype == "F64"
        out[name] = np.frombuffer(raw, "<f8").reshape(shape)
    return out


# ------------------------------------------------------------------------------------------------
# Each method against torch

CASES = [
    ("rollout", []),
    ("rollout", ["--fusion", "max", "--discard", "0.3"]),
    ("rollout", ["--fusion", "min", "--start-layer", "1"]),
    ("grad_rollout", ["--discard", "0.1"]),
    ("chefer", []),
    ("chefer", ["--query-row", "5"]),
    ("chefer_rollout", []),
]


@pytest.mark.parametrize("method,extra", CASES)
def test_method_matches_torch(nnp, vit_capture, tmp_path, method, extra):
    path, attns, grads = vit_capture
    out = tmp_path / "out"
    p = nnp("relevance", path, "--attn", "/attn$", "--method", method, *extra, "--out", out,
            check=0)
    opts = dict(zip(extra[::2], extra[1::2]))
    q = int(opts.get("--query-row", 0))
    want = reference(method, attns, grads, q=q, fusion=opts.get("--fusion", "mean"),
                     discard=float(opts.get("--discard", 0)),
                     start=int(opts.get("--start-layer", 0))).numpy()
    got = load_out(out)
    assert got["relevance"].shape == (17,)
    np.testing.assert_allclose(got["relevance"], want, rtol=0, atol=1e-6)
    np.testing.assert_allclose(got["patches"], want[1:].reshape(4, 4), rtol=0, atol=1e-6)
    np.testing.assert_allclose(got["heatmap"], minmax(want[1:]).reshape(4, 4), rtol=0,
                               atol=1e-6)
    start = int(opts.get("--start-layer", 0))
    assert f"{method} over {DEPTH - start} of {DEPTH} layers, 17 tokens, 4 heads" in p.stdout
    assert "blocks.2.attn/attn" in p.stdout
    if method != "rollout":
        assert "grad blocks.0.attn/grad_attn" in p.stdout
        assert "reverse execution order" not in p.stdout
    # the top patch printed is the largest of the map
    best = int(np.argmax(want[1:]))
    assert f"top patches (row, col): ({best // 4}, {best % 4})" in p.stdout


def plain_maps(seed=3, layers=3, heads=2, n=5):
    """Attention maps (rows sum to 1) and gradients of a plain file's layers."""
    g = torch.Generator().manual_seed(seed)
    attns = [torch.softmax(torch.randn(heads, n, n, generator=g, dtype=torch.float64), -1)
             for _ in range(layers)]
    grads = [torch.randn(heads, n, n, generator=g, dtype=torch.float64) for _ in range(layers)]
    return attns, grads


def test_plain_file_gradients_pair_by_name(nnp, tmp_path):
    # a file written by hand, without nnparity's provenance, gradients in forward order: each
    # map's gradient is the one whose name is the map's less what the patterns matched
    attns, grads = plain_maps()
    tensors = {}
    for i, (a, g) in enumerate(zip(attns, grads)):
        tensors[f"blocks.{i}.attn.probs"] = a.numpy()
        tensors[f"blocks.{i}.attn.grad"] = g.numpy()
    path = tmp_path / "plain.safetensors"
    write_safetensors(path, tensors)
    out = tmp_path / "out"
    p = nnp("relevance", path, "--attn", "probs$", "--grad", "grad$", "--method", "chefer",
            "--out", out, check=0)
    want = reference("chefer", attns, grads).numpy()
    np.testing.assert_allclose(load_out(out)["relevance"], want, atol=1e-9, rtol=0)
    # the pairing read in reverse would give another map
    wrong = reference("chefer", attns, grads[::-1]).numpy()
    assert not np.allclose(want, wrong, atol=1e-6)
    assert "reverse execution order" not in p.stdout + p.stderr
    for i in range(3):
        assert f"blocks.{i}.attn.probs (seq {2 * i})  grad blocks.{i}.attn.grad" in p.stdout


def test_unnamed_gradients_pair_in_reverse_and_say_so(nnp, tmp_path):
    # gradient names that share nothing with the maps': backward's order is all there is, and
    # the user is told on stderr
    attns, grads = plain_maps(seed=4)
    tensors = {f"fwd.{i}.probs": a.numpy() for i, a in enumerate(attns)}
    tensors.update({f"bwd.step{k}": grads[len(grads) - 1 - k].numpy()
                    for k in range(len(grads))})
    path = tmp_path / "order.safetensors"
    write_safetensors(path, tensors)
    out = tmp_path / "out"
    p = nnp("relevance", path, "--attn", "probs$", "--grad", "^bwd", "--method", "chefer",
            "--out", out, check=0)
    want = reference("chefer", attns, grads).numpy()
    np.testing.assert_allclose(load_out(out)["relevance"], want, atol=1e-9, rtol=0)
    assert "note: no name pairs each map with one gradient matching '^bwd'" in p.stderr
    assert "paired in reverse execution order" in p.stderr
    assert "gradients paired in reverse execution order" in p.stdout


def test_gradient_pattern_and_norms(nnp, vit_capture, tmp_path):
    path, attns, grads = vit_capture
    out = tmp_path / "out"
    nnp("relevance", path, "--attn", "/attn$", "--grad", "grad_attn$", "--method", "chefer",
        "--norm", "max", "--clip-percentile", "90", "--out", out, check=0)
    want = reference("chefer", attns, grads).numpy()[1:]
    got = load_out(out)
    np.testing.assert_allclose(got["patches"].ravel(), want, atol=1e-6, rtol=0)
    capped = np.minimum(want, np.percentile(want, 90))
    np.testing.assert_allclose(got["heatmap"].ravel(), capped / capped.max(), atol=1e-6, rtol=0)


def test_heatmap_and_overlay_png(nnp, vit_capture, tmp_path):
    path, attns, grads = vit_capture
    rng = np.random.default_rng(1)
    picture = rng.integers(0, 256, (24, 40, 4))  # RGBA: the alpha channel is dropped
    (tmp_path / "img.png").write_bytes(png_encode(picture))
    out = tmp_path / "out"
    p = nnp("relevance", path, "--attn", "/attn$", "--out", out, "--image",
            tmp_path / "img.png", check=0)
    assert "overlay.png" in p.stdout
    heat = minmax(reference("rollout", attns, grads).numpy()[1:]).reshape(4, 4)
    # 4x4 patches at 64 pixels each: the longer side reaches 256 pixels
    hm = png_decode(out / "heatmap.png")
    assert hm.shape == (256, 256, 3)
    for y in range(4):
        for x in range(4):
            block = hm[y * 64:(y + 1) * 64, x * 64:(x + 1) * 64]
            want = np.rint(255 * jet(heat[y, x]))
            assert np.abs(block - want).max() <= 1, (y, x)
    ov = png_decode(out / "overlay.png")
    assert ov.shape == (24, 40, 3)
    up = Fn.interpolate(torch.from_numpy(heat)[None, None], size=(24, 40), mode="bilinear",
                        align_corners=False)[0, 0].numpy()
    want = 0.5 * picture[..., :3] + 0.5 * 255 * jet(up)
    assert np.abs(ov - want).max() <= 1
    # a 16-bit grey picture reads as its high bytes in all three channels
    grey = rng.integers(0, 65536, (24, 40, 1))
    (tmp_path / "grey.png").write_bytes(png_encode(grey, depth=16))
    nnp("relevance", path, "--attn", "/attn$", "--out", out, "--image", tmp_path / "grey.png",
        check=0)
    want = 0.5 * np.repeat(grey >> 8, 3, -1) + 0.5 * 255 * jet(up)
    assert np.abs(png_decode(out / "overlay.png") - want).max() <= 1
    # --scale sets the pixels per patch
    nnp("relevance", path, "--attn", "/attn$", "--out", out, "--scale", "3", check=0)
    assert png_decode(out / "heatmap.png").shape == (12, 12, 3)


# ------------------------------------------------------------------------------------------------
# Back-mapping through a pixel-shuffle projector: a fake LLM with 3 text tokens, 2 tiles of 4
# image tokens (4x4 ViT patches each) and 2 more text tokens.

N_LLM, SPAN = 13, (3, 11)


@pytest.fixture(scope="module")
def llm_dump(tmp_path_factory):
    rng = np.random.default_rng(7)
    maps = []
    for _ in range(2):
        a = rng.random((1, 2, N_LLM, N_LLM)) + np.tril(np.ones((N_LLM, N_LLM))) * 3
        maps.append((a / a.sum(-1, keepdims=True)).astype(np.float32))
    path = tmp_path_factory.mktemp("llm") / "llm.safetensors"
    write_safetensors(path, {"llm.layers.0.self_attn.probs": maps[0],
                             "llm.layers.0.mlp.out": np.zeros((N_LLM, 8), np.float32),
                             "llm.layers.1.self_attn.probs": maps[1]})
    return path, [torch.from_numpy(m[0]).double() for m in maps]


def backmap_ref(tokens, version, split):
    grid = np.zeros((len(tokens) // 4, 4, 4))
    for t, v in enumerate(tokens):
        tile, k = divmod(t, 4)
        i, j = divmod(k, 2) if version == 2 else divmod(k, 2)[::-1]
        grid[tile, 2 * i:2 * i + 2, 2 * j:2 * j + 2] = v / 4 if split else v
    return grid


@pytest.mark.parametrize("version,mode", [(2, "copy"), (1, "copy"), (2, "split")])
def test_backmap(nnp, llm_dump, tmp_path, version, mode):
    path, maps = llm_dump
    out = tmp_path / "out"
    p = nnp("relevance", path, "--attn", r"self_attn\.probs$", "--query-row", "last",
            "--backmap", f"v{version}", "--llm-span", f"{SPAN[0]}:{SPAN[1]}", "--tile-tokens",
            "4", "--grid", "4x4", "--backmap-mode", mode, "--tile", "1", "--norm", "max",
            "--out", out, check=0)
    assert "query row 12" in p.stdout and "2 tiles of 4" in p.stdout
    r = rollout_of([m.mean(0) for m in maps], N_LLM - 1).numpy()
    got = load_out(out)
    np.testing.assert_allclose(got["relevance"], r, atol=1e-6, rtol=0)
    want = backmap_ref(r[SPAN[0]:SPAN[1]], version, mode == "split")
    assert got["backmap"].shape == (2, 4, 4)
    np.testing.assert_allclose(got["backmap"], want, atol=1e-6, rtol=0)
    np.testing.assert_allclose(got["heatmap"], want[1] / want[1].max(), atol=1e-6, rtol=0)
    assert "patches" not in got
    assert png_decode(out / "heatmap.png").shape == (256, 256, 3)


def test_backmap_default_grid(nnp, llm_dump):
    # 4 tokens per tile: a 4x4 grid is inferred
    path, _ = llm_dump
    p = nnp("relevance", path, "--attn", "probs$", "--query-row", "last", "--backmap", "v2",
            "--llm-span", "3:11", "--tile-tokens", "4", check=0)
    assert "onto 4x4 patches" in p.stdout


# ------------------------------------------------------------------------------------------------
# Bad input: one line naming the problem, exit code 2

@pytest.fixture(scope="module")
def bad_dump(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    ok = np.full((2, 5, 5), 0.2, np.float32)
    nan = ok.copy()
    nan[1, 2, 3] = np.nan
    write_safetensors(d / "bad.safetensors", {
        "a.0.probs": ok, "a.1.probs": ok,
        "rect.probs": np.zeros((2, 5, 4), np.float32),
        "wide.probs": np.full((2, 6, 6), 1 / 6, np.float32),
        "int.probs": np.zeros((2, 5, 5), np.int32),
        "batch.probs": np.zeros((2, 2, 5, 5), np.float32),
        "nan.probs": nan,
        "g.0.dprobs": ok,
        "inf.probs": ok,
        "inf.grad": np.where(np.arange(50).reshape(2, 5, 5) == 21, np.inf, ok).astype(np.float32),
    })
    (d / "not.png").write_bytes(b"GIF89a not a png at all")
    return d


RUNTIME_ERRORS = [
    (["--attn", "nothing"], "no record matches the attention pattern 'nothing'"),
    (["--attn", "a[.]", "--method", "chefer", "--grad", "dprobs"],
     "1 record matches the gradient pattern 'dprobs' but 2 match the attention pattern"),
    (["--attn", "a[.]", "--method", "chefer"], "'a.0.probs' has no module and role"),
    (["--attn", "rect"], "'rect.probs' has shape [2, 5, 4]: attention maps are square"),
    (["--attn", "a[.]0|wide"], "'wide.probs' has shape [2, 6, 6] but the first layer 'a.0.probs'"),
    (["--attn", "int"], "'int.probs' is I32: relevance needs a float dtype"),
    (["--attn", "batch"], "one sample"),
    (["--attn", "nan"], "'nan.probs' holds a NaN or Inf at [1, 2, 3]"),
    (["--attn", "inf[.]probs", "--method", "chefer", "--grad", "inf[.]grad"],
     "relevance: gradient 'inf.grad' holds a NaN or Inf at [0, 4, 1]"),
    (["--attn", "(a"], "attention pattern '(a': bad regex"),
    (["--attn", "a[.]", "--query-row", "5"], "--query-row 5 but the maps have 5 tokens"),
    (["--attn", "a[.]", "--start-layer", "2"], "--start-layer 2 but 2 records match 'a[.]'"),
    (["--attn", "a[.]", "--grid", "2x3"], "--grid 2x3 after 1 prefix token needs 7 tokens"),
    (["--attn", "a[.]", "--prefix", "0"], "5 tokens - 0 prefix = 5 is not a square"),
    (["--attn", "a[.]", "--backmap", "v2", "--llm-span", "0:8"],
     "--llm-span 0:8 but the maps have 5 tokens"),
    (["--attn", "a[.]", "--backmap", "v2", "--llm-span", "0:3"],
     "holds 3 tokens: not a whole number of tiles of --tile-tokens 256"),
    (["--attn", "a[.]", "--backmap", "v2", "--llm-span", "1:5", "--tile-tokens", "4",
      "--grid", "2x4"], "--grid 2x4 pixel-shuffles into 2 tokens per tile"),
    (["--attn", "a[.]", "--backmap", "v2", "--llm-span", "1:5", "--tile-tokens", "4",
      "--grid", "4x3"], "--grid 4x3 pixel-shuffles into 2 tokens per tile, not --tile-tokens 4"),
    (["--attn", "a[.]", "--backmap", "v2", "--llm-span", "1:5", "--tile-tokens", "4",
      "--tile", "1"], "--tile 1 but the span holds 1 tile"),
    (["--attn", "a[.]", "--grid", "2x2", "--out", "{d}/o", "--image", "{d}/not.png"],
     "not.png: not a PNG file"),
    (["--attn", "a[.]", "--grid", "2x2", "--out", "{d}/not.png"],
     "cannot create the output directory"),
]


@pytest.mark.parametrize("args,message", RUNTIME_ERRORS)
def test_runtime_errors(nnp, bad_dump, args, message):
    args = [a.replace("{d}", str(bad_dump)) for a in args]
    p = nnp("relevance", bad_dump / "bad.safetensors", *args)
    assert p.returncode == 2, (p.stdout, p.stderr)
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("nnparity: "), p.stderr
    assert message in lines[0], lines[0]


def test_bad_image_leaves_no_output(nnp, bad_dump, tmp_path):
    # the picture is read before anything is written
    out = tmp_path / "out"
    p = nnp("relevance", bad_dump / "bad.safetensors", "--attn", "a[.]", "--grid", "2x2",
            "--out", out, "--image", bad_dump / "not.png")
    assert p.returncode == 2 and "not a PNG file" in p.stderr, p.stderr
    assert not out.exists()


def test_heatmap_too_large_leaves_no_output(nnp, tmp_path):
    # a 1x300 grid at 64 pixels a patch would be 19200 pixels wide: refused before writing
    write_safetensors(tmp_path / "long.safetensors",
                      {"a.probs": np.full((1, 301, 301), 1 / 301, np.float32)})
    out = tmp_path / "out"
    p = nnp("relevance", tmp_path / "long.safetensors", "--attn", "a[.]", "--grid", "1x300",
            "--scale", "64", "--out", out)
    assert p.returncode == 2, p.stderr
    assert "makes a 64x19200 image; at most 16384 a side (lower --scale)" in p.stderr
    assert len(p.stderr.splitlines()) == 1 and not out.exists()


def test_grad_records_in_attn_pattern(nnp, vit_capture):
    path, _, _ = vit_capture
    p = nnp("relevance", path, "--attn", "attn$")
    assert p.returncode == 2
    assert "matches the gradient record 'blocks.2.attn/grad_attn'" in p.stderr
    assert "anchor it" in p.stderr


USAGE_ERRORS = [
    ([], "no --attn PATTERN given"),
    (["--method", "lrp"], "--method takes rollout, grad_rollout, chefer or chefer_rollout, not 'lrp'"),
    (["--fusion", "median"], "--fusion takes mean, max or min, not 'median'"),
    (["--discard", "1"], "--discard takes a ratio R with 0 <= R < 1, not '1'"),
    (["--discard", "x"], "--discard takes a ratio"),
    (["--start-layer", "-1"], "--start-layer takes a layer number"),
    (["--query-row", "first"], "--query-row takes a row number from 0 or 'last', not 'first'"),
    (["--prefix", "two"], "--prefix takes a number of tokens"),
    (["--grid", "4by4"], "--grid takes HxW"),
    (["--grid", "0x4"], "--grid takes HxW"),
    (["--backmap", "v3", "--llm-span", "0:4"], "--backmap takes v1 or v2"),
    (["--backmap", "v2", "--llm-span", "5:3"], "--llm-span takes A:B with A < B"),
    (["--backmap", "v2", "--llm-span", "0:4", "--tile-tokens", "0"], "--tile-tokens takes"),
    (["--backmap", "v2", "--llm-span", "0:4", "--backmap-mode", "sum"],
     "--backmap-mode takes copy or split"),
    (["--norm", "l2"], "--norm takes min-max or max, not 'l2'"),
    (["--clip-percentile", "0"], "--clip-percentile takes P with 0 < P <= 100"),
    (["--scale", "0"], "--scale takes pixels per patch from 1 to 64"),
    (["-j", "0"], "-j takes a thread count"),
    (["--method", "chefer", "--fusion", "max"], "--fusion applies to --method rollout only"),
    (["--method", "chefer", "--discard", "0.1"], "--discard applies to the rollout methods"),
    (["--grad", "g"], "--grad applies to the gradient methods"),
    (["--llm-span", "0:4"], "need --backmap v1|v2"),
    (["--backmap", "v2"], "--backmap needs --llm-span A:B"),
    (["--backmap", "v2", "--llm-span", "0:4", "--prefix", "2"], "--prefix does not apply"),
    (["--image", "x.png"], "--image needs --out DIR"),
    (["--bogus"], "unknown option '--bogus'"),
]


@pytest.mark.parametrize("args,message", USAGE_ERRORS)
def test_usage_errors(nnp, bad_dump, args, message):
    attn = [] if not args else ["--attn", "a[.]"]
    p = nnp("relevance", bad_dump / "bad.safetensors", *attn, *args)
    assert p.returncode == 2, (p.stdout, p.stderr)
    first = p.stderr.splitlines()[0]
    assert first.startswith("nnparity relevance: ") and message in first, first
    assert p.stdout == ""


def test_help(nnp):
    p = nnp("help", "relevance", check=0)
    for opt in ("--attn", "--grad", "--method", "--fusion", "--discard", "--start-layer",
                "--query-row", "--prefix", "--grid", "--backmap", "--llm-span", "--tile-tokens",
                "--backmap-mode", "--tile", "--norm", "--clip-percentile", "--out", "--image",
                "--scale"):
        assert opt in p.stdout, opt
    assert "relevance" in nnp("--help", check=0).stdout
