"""The command line's one convention (docs/cli.md), checked on every command: --json prints JSON
on stdout and takes no value; files are written by named options and replace only what nnparity
wrote as the same kind of file (--force for the rest), so a dump passed as an output survives;
text follows the terminal's width (--width N); records are numbered by seq, from 0, everywhere;
usage errors are one line and a pointer to the help, with the closest real command or option;
foreign formats are refused by name; an unfinished capture points to `nnparity recover`."""
import fcntl
import json
import os
import pickle
import pty
import re
import shlex
import struct
import subprocess
import sys
import termios
import zipfile

import numpy as np
import pytest

from conftest import BIN, EXAMPLES, LIB, ROOT, write_safetensors

pytestmark = pytest.mark.cli

COMMANDS = ["ls", "stats", "diff", "run", "weights", "convert", "recover", "relevance"]
WITH_JSON = ["ls", "stats", "diff", "run", "weights"]
WITH_WIDTH = ["ls", "stats", "diff", "run", "weights"]
READS = "nnparity reads safetensors, npy/npz, PyTorch checkpoints and GGUF"
TINY = shlex.quote(str(EXAMPLES / "tiny_mlp"))


def nnp(*args, cwd=None, env=None):
    return subprocess.run([str(BIN), *map(str, args)], capture_output=True, text=True,
                          errors="replace", timeout=300, cwd=cwd, env=env)


def one_line(p, *needles, code=2):
    """Exit `code`, nothing on stdout, one line on stderr holding every needle."""
    assert p.returncode == code and p.stdout == "", (p.returncode, p.stdout, p.stderr)
    lines = p.stderr.splitlines()
    assert len(lines) == 1, p.stderr
    for n in needles:
        assert str(n) in lines[0], (n, lines[0])
    return lines[0]


def usage_error(p, cmd, *needles):
    """A usage error: the reason on one line, then where the help is; nothing else."""
    assert p.returncode == 2 and p.stdout == "", (p.returncode, p.stdout, p.stderr)
    lines = p.stderr.splitlines()
    assert len(lines) == 2, p.stderr
    where = f"nnparity {cmd}" if cmd else "nnparity"
    assert lines[1] == f"see '{where} --help'", lines
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def dumps(tmp_path_factory):
    """The reference and a port with the LayerNorm bug (examples/tiny_mlp), rules that rename
    nothing, and a small attention dump for `relevance`."""
    d = tmp_path_factory.mktemp("conv")
    subprocess.run([str(EXAMPLES / "tiny_mlp"), str(d / "ref.safetensors")], check=True)
    subprocess.run([str(EXAMPLES / "tiny_mlp"), str(d / "port.safetensors"), "--bad-eps"],
                   check=True)
    (d / "same.rules").write_text("# nothing to rename\n")
    rng = np.random.default_rng(0)
    maps = {}
    for layer in range(2):
        a = rng.random((2, 5, 5))
        maps[f"blocks.{layer}/attn"] = (a / a.sum(-1, keepdims=True)).astype(np.float32)
    write_safetensors(d / "attn.safetensors", maps)
    return d


def run_args(out, *extra):
    return ["run", "--ref", TINY, "--port", f"{TINY} --bad-eps", "--out", out, *extra]


# ---- --json: a flag, JSON on stdout ----

@pytest.mark.parametrize("cmd", WITH_JSON)
def test_json_is_a_flag_that_prints_json_on_stdout(dumps, tmp_path, cmd):
    ref, port = dumps / "ref.safetensors", dumps / "port.safetensors"
    args = {"ls": [ref], "stats": [ref], "diff": [ref, port], "weights": [ref, ref],
            "run": run_args(tmp_path / "out")[1:]}[cmd]
    p = nnp(cmd, "--json", *args)
    assert p.returncode in (0, 1), p.stderr
    doc = json.loads(p.stdout)   # the whole of stdout is the one document
    assert doc["schema"] == f"nnparity.{cmd}/1"


@pytest.mark.parametrize("cmd", ["diff", "weights"])
def test_json_with_a_file_after_it_is_refused_and_writes_nothing(dumps, tmp_path, cmd):
    """`diff --json ref2.safetensors REF PORT` once replaced ref2 with JSON."""
    ref2 = tmp_path / "ref2.safetensors"
    ref2.write_bytes((dumps / "ref.safetensors").read_bytes())
    before = ref2.read_bytes()
    p = nnp(cmd, "--json", ref2, dumps / "ref.safetensors", dumps / "port.safetensors")
    usage_error(p, cmd, "--json takes no FILE", "--json-file FILE")
    assert ref2.read_bytes() == before
    usage_error(nnp(cmd, "--json=out.json", dumps / "ref.safetensors",
                    dumps / "port.safetensors", cwd=tmp_path), cmd,
                "option '--json' takes no value")
    usage_error(nnp(cmd, "--json-file", "-", dumps / "ref.safetensors",
                    dumps / "port.safetensors"), cmd, "--json prints")
    assert not (tmp_path / "out.json").exists()


def test_run_json_with_a_file_is_refused_before_running(tmp_path):
    marker = tmp_path / "ran"
    p = nnp("run", "--ref", f"touch {marker}", "--port", "true", "--out", tmp_path / "o",
            "--json", tmp_path / "r.json")
    usage_error(p, "run", "--json takes no FILE")
    assert not marker.exists()


@pytest.mark.parametrize("cmd", ["convert", "recover", "relevance"])
def test_commands_without_json_say_so(cmd):
    usage_error(nnp(cmd, "--json", "x", "y"), cmd, "unknown option '--json'")


# ---- files: only nnparity's own are replaced ----

def outputs(d, tmp_path):
    """(command line with OUT for the file, the kind's name in messages, what makes a file of
    that kind) for every file a command writes by name."""
    ref, port, rules = d / "ref.safetensors", d / "port.safetensors", d / "same.rules"
    return [
        (lambda o: ["diff", "--json-file", o, ref, port], "a JSON report"),
        (lambda o: ["diff", "--markdown", o, ref, port], "a Markdown report"),
        (lambda o: ["diff", "--rules", rules, "--emit-rules", o, ref, port], "a rules file"),
        (lambda o: ["weights", "--json-file", o, ref, port], "a JSON report"),
        (lambda o: ["weights", "--markdown", o, ref, port], "a Markdown report"),
        (lambda o: run_args(tmp_path / "run", "--json-file", o), "a JSON report"),
        (lambda o: run_args(tmp_path / "run", "--markdown", o), "a Markdown report"),
        (lambda o: run_args(tmp_path / "run", "--plot", f"{o}.svg"), "an SVG plot"),
        (lambda o: run_args(tmp_path / "run", "--plot", f"{o}.png"), "a PNG image"),
        (lambda o: ["convert", ref, o], "a safetensors file"),
    ]


def out_path(argv, o):
    """The file a command line writes: o, or o.svg / o.png for --plot."""
    for a in argv:
        if str(a).startswith(str(o)):
            return type(o)(str(a))
    raise AssertionError(argv)


@pytest.mark.parametrize("case", range(10))
def test_a_dump_passed_as_an_output_survives(dumps, tmp_path, case):
    make, kind = outputs(dumps, tmp_path)[case]
    o = tmp_path / "out"
    target = out_path(make(o), o)
    # a dump where the file should go: kept, one line, exit 2, before any work. A checkpoint
    # another tool wrote, and for a report also a capture (convert replaces the safetensors
    # files nnparity wrote: captures, earlier conversions)
    foreign = tmp_path / "foreign.safetensors"
    write_safetensors(foreign, {"w": np.ones(3, np.float32)}, {"format": "pt"})
    sources = [foreign] + ([dumps / "ref.safetensors"] if kind != "a safetensors file" else [])
    for source in sources:
        target.write_bytes(source.read_bytes())
        before = target.read_bytes()
        line = one_line(nnp(*make(o)), f"{target}: exists and is a tensor file (safetensors), "
                                       f"not {kind} nnparity wrote", "--force")
        assert target.read_bytes() == before, line
        assert not (tmp_path / "run" / "report.html").exists()
    # any other file the same way
    target.write_text("my notes\n")
    one_line(nnp(*make(o)), f"{target}: exists and is a file, not {kind} nnparity wrote")
    assert target.read_text() == "my notes\n"
    # --force replaces it
    p = nnp(*make(o), "--force")
    assert p.returncode in (0, 1), p.stderr
    assert target.read_bytes() != b"my notes\n"
    # and what nnparity wrote is replaced without it
    os.utime(target, (0, 0))
    p = nnp(*make(o))
    assert p.returncode in (0, 1), p.stderr
    assert target.stat().st_mtime > 0


def test_run_keeps_a_report_html_it_did_not_write(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.html").write_text("<html>mine</html>\n")
    marker = tmp_path / "ran"
    p = nnp("run", "--ref", f"touch {marker}", "--port", "true", "--out", out)
    one_line(p, "report.html: exists and is a file, not an HTML report nnparity wrote", "--force")
    assert (out / "report.html").read_text() == "<html>mine</html>\n" and not marker.exists()
    p = nnp(*run_args(out), "--force")
    assert p.returncode == 1, p.stderr
    html = (out / "report.html").read_text()
    assert '<meta name="generator" content="nnparity">' in html
    assert nnp(*run_args(out)).returncode == 1   # its own report is replaced


def test_relevance_keeps_files_it_did_not_write(dumps, tmp_path):
    out = tmp_path / "rel"
    args = ["relevance", "--attn", "attn$", "--out", out, dumps / "attn.safetensors"]
    p = nnp(*args)
    assert p.returncode == 0, p.stderr
    assert b"tEXtSoftware\0nnparity" in (out / "heatmap.png").read_bytes()[:128]
    assert nnp(*args).returncode == 0   # its own files are replaced
    for name in ("heatmap.png", "relevance.safetensors"):
        keep = out / name
        keep.write_bytes(b"\x89PNG\r\n\x1a\n not nnparity's")
        one_line(nnp(*args), f"{keep}: exists and is a file, not a", "--force")
        assert keep.read_bytes() == b"\x89PNG\r\n\x1a\n not nnparity's"
        assert nnp(*args, "--force").returncode == 0
        assert keep.read_bytes() != b"\x89PNG\r\n\x1a\n not nnparity's"


def test_never_a_device_a_directory_or_an_input(dumps, tmp_path):
    ref, port = dumps / "ref.safetensors", dumps / "port.safetensors"
    for dev in ("/dev/null",):
        one_line(nnp("diff", "--force", "--json-file", dev, ref, port),
                 f"{dev}: not a regular file")
    one_line(nnp("diff", "--force", "--markdown", tmp_path, ref, port), "is a directory")
    copy = tmp_path / "port.safetensors"
    copy.write_bytes(port.read_bytes())
    one_line(nnp("diff", "--force", "--json-file", copy, ref, copy),
             "an input of this diff; write the report elsewhere")
    assert copy.read_bytes() == port.read_bytes()
    one_line(nnp("weights", "--force", "--markdown", copy, ref, copy), "an input of this check")
    one_line(nnp("diff", "--json-file", tmp_path / "no" / "r.json", ref, port),
             "cannot write", "is not a directory")


def test_a_report_through_a_link_replaces_the_target(dumps, tmp_path):
    target = tmp_path / "reports" / "r.json"
    target.parent.mkdir()
    link = tmp_path / "latest.json"
    link.symlink_to(target)
    nnp("diff", "--json-file", link, dumps / "ref.safetensors", dumps / "port.safetensors")
    assert link.is_symlink() and json.loads(target.read_text())["schema"] == "nnparity.diff/1"


# ---- width ----

def on_terminal(args, cols):
    """Run nnparity with stdout on a pseudo-terminal `cols` wide; its output."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, cols, 0, 0))
    env = dict(os.environ, NO_COLOR="1")
    p = subprocess.Popen([str(BIN), *map(str, args)], stdout=slave, stderr=subprocess.PIPE,
                         env=env)
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:   # EIO once the child closed its end
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    p.wait(timeout=120)
    return b"".join(chunks).decode().replace("\r\n", "\n")


@pytest.fixture(scope="module")
def long_names(tmp_path_factory):
    """Two dumps whose names are as long as a ViT's, the port off from the third record on."""
    d = tmp_path_factory.mktemp("long")
    names = [f"encoder.layers.encoder_layer_{i}.self_attention/out0" for i in range(4)]
    ref = {n: np.full(8, i + 1.0, np.float32) for i, n in enumerate(names)}
    port = {n: v * (1.5 if i >= 2 else 1) for i, (n, v) in enumerate(ref.items())}
    write_safetensors(d / "ref.safetensors", ref)
    write_safetensors(d / "port.safetensors", port)
    return d, names


def rows_with(text, name):
    return [line for line in text.splitlines() if name in line]


def test_names_stay_on_their_row_on_a_wide_terminal(long_names):
    d, names = long_names
    ref, port = d / "ref.safetensors", d / "port.safetensors"
    wide = on_terminal(["diff", ref, port], 200)
    (row,) = [line for line in wide.splitlines() if line.lstrip().startswith("2  fail")][-1:]
    assert row.endswith(names[2]) and len(row) <= 200
    narrow = on_terminal(["diff", ref, port], 80)
    assert all(len(line) <= 80 for line in narrow.splitlines()), narrow
    assert f"\n        {names[2]}\n" in narrow   # whole, on a line of its own
    # not a terminal: 80 columns, --width chooses
    assert nnp("diff", ref, port).stdout == narrow
    assert nnp("diff", "--width", "200", ref, port).stdout == wide
    # ls and stats give their name column the room
    for cmd in ("ls", "stats"):
        text = on_terminal([cmd, ref], 200)
        header = text.splitlines()[1]
        assert header.index("dtype") == header.index("name") + len(names[0]) + 2
        assert nnp(cmd, "--width", "200", ref).stdout == text


@pytest.mark.parametrize("cmd", WITH_WIDTH)
def test_width_takes_a_column_count(cmd):
    for bad in ("0", "39", "1001", "wide"):
        usage_error(nnp(cmd, "--width", bad, "x", "y"), cmd, "--width takes a column count "
                    f"from 40 to 1000, not '{bad}'")


def test_run_and_weights_text_fit_the_width(dumps, tmp_path):
    p = nnp(*run_args("o"), cwd=tmp_path)
    assert p.returncode == 1 and all(len(line) <= 80 for line in p.stdout.splitlines()), p.stdout
    assert nnp(*run_args("o", "--width", "120"), cwd=tmp_path).returncode == 1
    # a destination name that does not fit after its source's goes below it
    rules = tmp_path / "long.rules"
    rules.write_text("rename ^a_destination_name_long_enough_to_wrap\\. block.\n")
    _, tensors = __import__("conftest").read_safetensors(dumps / "ref.safetensors")
    dst = {f"a_destination_name_long_enough_to_wrap.{k[len('block.'):]}":
           (d, s, b) for k, (d, s, b) in tensors.items()}
    write_safetensors(tmp_path / "dst.safetensors", dst)
    p = nnp("weights", "--all", "--rules", rules, dumps / "ref.safetensors",
            tmp_path / "dst.safetensors")
    assert p.returncode == 0, p.stderr
    rows = [line for line in p.stdout.splitlines() if line.startswith("  ")]
    assert all(len(line) <= 80 for line in rows), p.stdout
    assert "  equal     block.norm/out0#1\n            <- a_destination_name" in p.stdout
    assert "  equal     block.fc1/in0 <- a_destination_name" in p.stdout
    p = nnp("weights", "--all", "--width", "200", "--rules", rules, dumps / "ref.safetensors",
            tmp_path / "dst.safetensors")
    assert re.search(r"^  equal +block\.norm/in0 <- a_destination_name", p.stdout, re.M)
    # a different tensor's worst element and error: one line when it fits, else two
    ref, port = dumps / "ref.safetensors", dumps / "port.safetensors"
    narrow = nnp("weights", ref, port).stdout
    assert all(len(line) <= 80 for line in narrow.splitlines() if line.startswith("  "))
    assert "(source -2.083627, destination -2.087954),\n            rel-L2 0.00167" in narrow
    wide = nnp("weights", "--width", "200", ref, port).stdout
    assert "(source -2.083627, destination -2.087954), rel-L2 0.00167" in wide


# ---- one numbering: seq ----

def test_every_report_numbers_records_by_seq(tmp_path):
    """The reference's first two records have no partner, so the first divergence is pair 1 but
    seq 3: every output says 3, as `ls` does."""
    ref = {"input/out0": np.zeros(4, np.float32), "extra/out0": np.ones(4, np.float32),
           "a/out0": np.arange(4, dtype=np.float32), "b/out0": np.arange(4, dtype=np.float32)}
    port = {"a/out0": ref["a/out0"], "b/out0": ref["b/out0"] + 1}
    write_safetensors(tmp_path / "ref.safetensors", ref)
    write_safetensors(tmp_path / "port.safetensors", port)
    r, q = tmp_path / "ref.safetensors", tmp_path / "port.safetensors"
    assert re.search(r"^\s+3  b/out0 ", nnp("ls", r).stdout, re.M)
    p = nnp("diff", "--no-align", "--markdown", tmp_path / "r.md", "--json-file",
            tmp_path / "r.json", r, q)
    assert p.returncode == 1
    assert "First divergence in execution order, at seq 3:\n  b/out0" in p.stdout
    assert re.search(r"^\s+3  fail .* b/out0$", p.stdout, re.M)
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["first_divergence"] == 1 and doc["pairs"][1]["ref_seq"] == 3
    assert doc["first_divergence_seq"] == 3
    assert "**First divergence:** seq 3, `b/out0`" in (tmp_path / "r.md").read_text()
    for text in (p.stdout, (tmp_path / "r.md").read_text()):
        assert not re.search(r"\b(pair|record) \d+ of \d+", text)


def test_run_numbers_records_by_seq(tmp_path):
    out = tmp_path / "o"
    p = nnp(*run_args(out, "--json-file", tmp_path / "r.json", "--markdown", tmp_path / "r.md"))
    assert p.returncode == 1
    doc = json.loads((tmp_path / "r.json").read_text())
    first = doc["records"][doc["first_divergence"]]
    assert first["seq"] == doc["first_divergence"] == 1 and first["ref"] == "block.norm/out0"
    assert "block.norm/out0 [LayerNorm], seq 1: own" in p.stdout
    assert "First divergence: seq 1, <code>block.norm/out0</code>" in \
        (out / "report.html").read_text()
    assert "**First divergence:** seq 1, `block.norm/out0`" in (tmp_path / "r.md").read_text()
    assert re.search(r"^\s+1  own ", p.stdout, re.M)
    assert re.search(r"^\s+1  block.norm/out0 ", nnp("ls", out / "ref.safetensors").stdout, re.M)
    for text in (p.stdout, (out / "report.html").read_text()):
        assert not re.search(r"\b(pair|record) \d+ of \d+", text)


# ---- usage errors ----

def long_options(cmd):
    """The long options a command's help lists."""
    text = nnp(cmd, "--help").stdout
    return sorted(set(re.findall(r"^\s+(?:-\w, )?--([a-z][a-z-]+)", text, re.M)))


def distance(a, b):
    d = [[i + j if i * j == 0 else 0 for j in range(len(b) + 1)] for i in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1]))
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
    return d[-1][-1]


@pytest.mark.parametrize("cmd", COMMANDS)
def test_usage_errors_are_short_and_suggest(cmd):
    usage_error(nnp(cmd, "--bogus", "x"), cmd, f"nnparity {cmd}: unknown option '--bogus'")
    opts = long_options(cmd)
    for opt in opts:
        typo = opt[:len(opt) // 2] + "q" + opt[len(opt) // 2 + 1:]
        if any(o.startswith(typo) for o in opts):
            continue   # an abbreviation getopt would take
        line = usage_error(nnp(cmd, f"--{typo}", "x"), cmd, f"unknown option '--{typo}'; "
                           "did you mean '--")
        near = re.search(r"did you mean '--([a-z-]+)'\?", line).group(1)
        assert near in opts and distance(typo, near) <= 1, (typo, near)
    # the help ends with examples of the command
    help_lines = nnp(cmd, "--help").stdout.rstrip("\n").splitlines()
    at = help_lines.index("examples:")
    examples = [line for line in help_lines[at + 1:] if line.startswith("  nnparity ")]
    assert 2 <= len(examples) <= 3 and all(e.startswith(f"  nnparity {cmd} ") for e in examples)


def test_every_command_is_checked_here():
    text = nnp("--help").stdout
    listed = re.findall(r"^  ([a-z]+) ", text.split("commands:\n")[1].split("\n\n")[0], re.M)
    assert sorted(set(listed) - {"help"}) == sorted(COMMANDS)


def test_command_and_top_level_errors():
    for cmd in COMMANDS:
        typo = cmd[:-1] if len(cmd) > 2 else cmd + "s"
        usage_error(nnp(typo, "x"), None, f"unknown command '{typo}'; did you mean '{cmd}'?")
    usage_error(nnp("help", "dif"), None, "no command 'dif'; did you mean 'diff'?")
    usage_error(nnp("frobnicate"), None, "unknown command 'frobnicate'")
    usage_error(nnp("--verison"), None, "did you mean '--version'?")
    p = nnp()
    assert p.returncode == 2 and p.stderr.splitlines()[-1] == "see 'nnparity --help'"
    assert len(p.stderr.splitlines()) == 2
    for flag in ("-V", "--version"):
        p = nnp(flag)
        assert p.returncode == 0 and re.fullmatch(r"nnparity \d+\.\d+\.\d+\n", p.stdout)


def test_option_error_kinds():
    usage_error(nnp("diff", "--atol"), "diff", "option '--atol' needs a value")
    usage_error(nnp("stats", "x", "-j"), "stats", "option '-j' needs a value")
    usage_error(nnp("diff", "--a", "1", "x", "y"), "diff", "option '--a' is ambiguous: --atol, --all")
    usage_error(nnp("ls", "-json", "x"), "ls", "unknown option '-json'; did you mean '--json'?")
    usage_error(nnp("diff", "--output", "r.json", "x", "y"), "diff",
                "reports are written with --json-file FILE and --markdown FILE")


# ---- inputs ----

def onnx_bytes(graph_only=False):
    """A ModelProto as protobuf serializes it: ir_version 8, producer, graph, opset_import."""
    def field(tag, payload):
        n, v = len(payload), b""
        while True:
            v += bytes([(n & 0x7f) | (0x80 if n > 0x7f else 0)])
            n >>= 7
            if not n:
                break
        return bytes([tag]) + v + payload
    node = field(0x0a, field(0x0a, b"x") + field(0x12, b"y") + field(0x22, b"Relu"))
    graph = field(0x3a, node + field(0x12, b"g"))
    head = b"\x08\x08" + (b"" if graph_only else field(0x12, b"pytorch") + field(0x1a, b"2.1.0"))
    return head + graph + field(0x42, field(0x10, b"\x11"))


def foreign_files(d):
    """{file: the words its refusal must hold}, each made the way its tools make it."""
    files = {}
    (d / "model.onnx").write_bytes(onnx_bytes())
    files["model.onnx"] = "this is an ONNX model (from pytorch 2.1.0)"
    (d / "graph.onnx").write_bytes(onnx_bytes(graph_only=True))
    files["graph.onnx"] = "this is an ONNX model"
    (d / "weights.h5").write_bytes(b"\x89HDF\r\n\x1a\n\x00\x00\x00\x00\x00\x08\x08\x00" + bytes(80))
    files["weights.h5"] = "this is an HDF5 file"
    with zipfile.ZipFile(d / "model.keras", "w") as z:
        z.writestr("metadata.json", "{}")
        z.writestr("config.json", "{}")
        z.writestr("model.weights.h5", b"\x89HDF\r\n\x1a\n")
    files["model.keras"] = "this is a Keras 3 model archive"
    (d / "saved").mkdir()
    (d / "saved" / "saved_model.pb").write_bytes(b"\x08\x01\x12\xc4\x13\x0a\x8a\x02\x0a\x05serve"
                                                 + bytes(64))
    (d / "saved" / "variables").mkdir()
    files["saved"] = "this is a TensorFlow SavedModel"
    files["saved/saved_model.pb"] = "this is a TensorFlow SavedModel"
    for proto in (2, 4, 5):
        with open(d / f"p{proto}.pt", "wb") as f:
            pickle.dump({"weight": [1.0, 2.0]}, f, protocol=proto)
        files[f"p{proto}.pt"] = "this is a bare Python pickle, not a torch.save checkpoint"
    (d / "page.html").write_text("<!DOCTYPE html>\n<html><body>report</body></html>\n")
    files["page.html"] = "this is an HTML page"
    (d / "port.rules").write_text("rename ^blk\\.(\\d+) blocks.\\1\n")
    files["port.rules"] = "this is a text file (it starts \"rename ^blk\\.(\\d+) blocks.\\1\")"
    return files


def test_foreign_formats_are_refused_by_name(dumps, tmp_path):
    files = foreign_files(tmp_path)
    nnp("diff", "--json-file", tmp_path / "r.json", "--markdown", tmp_path / "r.md",
        dumps / "ref.safetensors", dumps / "port.safetensors")
    files["r.json"] = "this is an nnparity report (JSON, schema nnparity.diff/1), not a dump"
    files["r.md"] = "this is an nnparity report (Markdown), not a dump"
    for name, words in files.items():
        f = tmp_path / name
        one_line(nnp("ls", f), f"nnparity: {f}: {words}", READS)
        one_line(nnp("diff", dumps / "ref.safetensors", f), f"{f}: {words}")
        one_line(nnp("stats", f), f"{f}: {words}")


def test_torch_onnx_export_is_refused(tmp_path):
    torch = pytest.importorskip("torch")
    f = tmp_path / "m.onnx"
    try:
        torch.onnx.export(torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU()),
                          torch.zeros(1, 4), str(f))
    except Exception as e:   # an exporter that needs the onnx package
        pytest.skip(f"torch.onnx.export: {e}")
    one_line(nnp("ls", f), "this is an ONNX model (from pytorch", READS)


def test_safetensors_is_never_taken_for_a_foreign_format(tmp_path):
    """Header lengths whose bytes start like an ONNX model (08 07 12 ...), like a pickle's
    PROTO opcode (80 02 .. 80 05) or hold text: the file is still read as safetensors."""
    for hlen in (0x120708, 0x3a0708, 0x7b2020, 0x280, 0x5ff, 0x10380):
        meta = {"note": "x"}
        body = json.dumps({"__metadata__": meta, "a": {"dtype": "F32", "shape": [1],
                                                       "data_offsets": [0, 4]}}).encode()
        header = body.ljust(hlen)
        f = tmp_path / f"h{hlen:x}.safetensors"
        f.write_bytes(struct.pack("<Q", hlen) + header + b"\0\0\0\0")
        p = nnp("ls", f)
        assert p.returncode == 0 and "safetensors, 1 record" in p.stdout, p.stderr


@pytest.mark.parametrize("cmd", ["ls", "stats", "diff", "weights", "convert", "relevance"])
def test_an_unfinished_capture_points_to_recover(dumps, tmp_path, cmd):
    cap = tmp_path / "cap.safetensors"
    (tmp_path / "cap.safetensors.partial").write_bytes(b"\0" * 64)
    (tmp_path / "cap.safetensors.journal").write_text('{"nnparity.journal":1,"room":48}\n')
    args = {"ls": [cap], "stats": [cap], "diff": [dumps / "ref.safetensors", cap],
            "weights": [cap, dumps / "ref.safetensors"], "convert": [cap, tmp_path / "o"],
            "relevance": ["--attn", "x", cap]}[cmd]
    one_line(nnp(cmd, *args), f"{cap}: the capture into it did not finish",
             f"'nnparity recover {cap}' finishes it")


def test_stats_takes_one_file_and_a_pattern(dumps):
    ref, port = dumps / "ref.safetensors", dumps / "port.safetensors"
    usage_error(nnp("stats", ref, port), "stats", f"'{port}' is a file, not a PATTERN",
                f"nnparity diff {ref} {port} compares two files")
    assert nnp("stats", ref, "norm").returncode == 0


CAPTURE_TO_A_PATH = """
import sys, torch
sys.path.insert(0, sys.argv[1])
import nnparity
model = torch.nn.Sequential(torch.nn.Linear(2, 2))
with torch.no_grad(), nnparity.capture(model, sys.argv[2]):
    model(torch.ones(1, 2))
"""


def test_run_says_to_use_auto_when_a_script_captures_elsewhere(tmp_path):
    pytest.importorskip("torch")
    if not LIB.exists():
        pytest.skip(f"{LIB} is not built")
    script = tmp_path / "model.py"
    script.write_text(CAPTURE_TO_A_PATH)
    cmd = f"{sys.executable} {script} {ROOT / 'python'} {tmp_path / 'elsewhere.safetensors'}"
    env = dict(os.environ, NNPARITY_LIB=str(LIB))
    p = nnp("run", "--ref", cmd, "--port", cmd, "--out", tmp_path / "o", env=env)
    assert p.returncode == 2 and (tmp_path / "elsewhere.safetensors").exists()
    assert "the reference command captured nothing" in p.stderr
    assert "`with nnparity.auto(model):`" in p.stderr


def test_emitted_rules_can_be_extended_in_place(dumps, tmp_path):
    ref, port = dumps / "ref.safetensors", dumps / "port.safetensors"
    mine = tmp_path / "mine.rules"
    mine.write_text("# written by hand\n")
    one_line(nnp("diff", "--rules", mine, "--emit-rules", mine, ref, port),
             "not a rules file nnparity wrote", "--force")
    assert mine.read_text() == "# written by hand\n"
    emitted = tmp_path / "emitted.rules"
    assert nnp("diff", "--rules", mine, "--emit-rules", emitted, ref, port).returncode == 1
    assert nnp("diff", "--rules", emitted, "--emit-rules", emitted, ref, port).returncode == 1
    text = emitted.read_text()
    assert text.startswith("# written by nnparity diff --emit-rules") and "# written by hand" in text
