"""Names with control characters, backticks, pipes and markup, as each output prints them: text
escapes control characters (a name can neither run a terminal's escape sequence nor fake a line
of a table), Markdown keeps its code spans closed and its tables' columns, HTML and SVG escape
markup. Ordinary names print as they are (the other tests pin their bytes)."""
import json
import re

import numpy as np
import pytest
import xml.etree.ElementTree as ET

from conftest import write_safetensors

pytestmark = pytest.mark.cli

# module names: a terminal colour, a carriage return and a line feed that fake a table row, a
# backtick pair, a pipe, markup, and one ordinary name
MODULES = ["blk\x1b[31m.red", "a\rfake", "b\n     9  pass  fake", "tick`x`", "pipe|cell",
           "lt<b>x</b>", "café.ok", "plain"]
NAMES = [f"{m}/out0" for m in MODULES]
CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f\x80-\x9f]")  # all but the line breaks


def write_dump(path, offset, meta_extra=None):
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    meta = {"nnparity.format": "dump/1", "nnparity.records": json.dumps(
        [{"tensor": n, "module": m, "role": "out0", "seq": i, "type": "Lin\x1bear"}
         for i, (n, m) in enumerate(zip(NAMES, MODULES))])}
    meta.update(meta_extra or {})
    # every record but the ordinary one differs, so that each hostile name is in every table
    write_safetensors(path, {n: x + offset * (n != "plain/out0") for n in NAMES}, meta)


@pytest.fixture
def dumps(tmp_path):
    write_dump(tmp_path / "ref.st", 0, {"note\x1b]0;title\x07": "v\r\nfake: line"})
    write_dump(tmp_path / "port.st", 1)
    return tmp_path


def assert_plain_text(out):
    """No control character but the line breaks; each hostile name shows escaped."""
    assert not CONTROL.search(out), repr(CONTROL.search(out))
    assert "\\x1b[31m" in out
    assert "a\\rfake/out0" in out
    assert "b\\n     9  pass  fake/out0" in out
    assert "     9  pass  fake" not in out.replace("\\n     9  pass  fake", "")


def test_text_outputs_escape_control_characters(nnp, dumps):
    ls = nnp("ls", "--meta", dumps / "ref.st", check=0).stdout
    assert_plain_text(ls)
    assert "  note\\x1b]0;title\\x07: v\\r\\nfake: line" in ls
    assert "Lin\\x1bear" in ls
    # one line a record, header and metadata lines apart
    assert len([l for l in ls.splitlines() if re.match(r"\s+\d+  ", l)]) == len(NAMES)
    # an ordinary and a non-ASCII name print as they are
    assert "  plain/out0 " in ls and "  café.ok/out0 " in ls
    assert_plain_text(nnp("stats", dumps / "ref.st", check=0).stdout)
    diff = nnp("diff", "--all", dumps / "ref.st", dumps / "port.st", check=1)
    assert_plain_text(diff.stdout)
    w = nnp("weights", "--all", dumps / "ref.st", dumps / "port.st", check=1)
    assert_plain_text(w.stdout)
    assert not CONTROL.search(w.stderr + diff.stderr)


def test_errors_stay_one_line(nnp, tmp_path):
    bad = tmp_path / "x\x1b[2J\nfake"
    p = nnp("ls", bad, check=2)
    assert not CONTROL.search(p.stderr) and len(p.stderr.splitlines()) == 1
    assert "x\\x1b[2J" in p.stderr  # (the library's messages already turn line breaks to spaces)


def code_spans(line):
    """The code spans of one line as CommonMark reads them; asserts none is left open."""
    spans, i = [], 0
    while i < len(line):
        if line[i] == "\\" and (i + 1 < len(line)) and line[i + 1] != "`":
            i += 2
            continue
        if line[i] != "`":
            i += 1
            continue
        run = len(line[i:]) - len(line[i:].lstrip("`"))
        end = re.compile(r"(?<!`)" + "`" * run + r"(?!`)").search(line, i + run)
        assert end, f"code span left open: {line!r}"
        body = line[i + run:end.start()]
        if len(body) > 2 and body[0] == " " and body[-1] == " ":
            body = body[1:-1]
        spans.append(body)
        i = end.end()
    return spans


def cells(row):
    """A table row's cells: split on each '|' not escaped by a backslash."""
    return re.split(r"(?<!\\)\|", row.strip().strip("|"))


def check_markdown(text):
    assert not CONTROL.search(text)
    lines = text.splitlines()
    width = None
    for line in lines:
        code_spans(line)
        if line.startswith("|"):
            width = len(cells(line)) if width is None else width
            assert len(cells(line)) == width, line
        else:
            width = None
    spans = [s.replace("\\|", "|") for l in lines for s in code_spans(l)]
    assert "tick`x`/out0" in spans
    return spans


def test_markdown_code_spans_and_tables(nnp, dumps):
    nnp("diff", dumps / "ref.st", dumps / "port.st", "--markdown", dumps / "d.md", check=1)
    text = (dumps / "d.md").read_text()
    spans = check_markdown(text)
    assert "pipe|cell/out0" in spans and "blk\\x1b[31m.red/out0" in spans
    assert "| `pipe\\|cell/out0` |" in text and "``tick`x`/out0``" in text
    assert "Lin\\\\x1bear" in text or "Lin\\x1bear" in text
    # ordinary names keep their bytes
    assert "`café.ok/out0`" in text
    nnp("weights", dumps / "ref.st", dumps / "port.st", "--markdown", dumps / "w.md", check=1)
    check_markdown((dumps / "w.md").read_text())


def test_run_text_markdown_html_and_svg(dumps):
    from test_run import nnp_run
    ref = f'cp {dumps}/ref.st "$NNPARITY_CAPTURE"'
    port = f'cp {dumps}/port.st "$NNPARITY_CAPTURE"; printf "\\033[31mred\\n" >&2'
    out = dumps / "out"
    p, doc = nnp_run(out, ref, port, "--all", "--markdown", dumps / "r.md", "--plot",
                     dumps / "p.svg", check=1)
    assert doc["records"][0]["ref"] == NAMES[0]  # JSON keeps the name exact
    assert_plain_text(p.stdout)  # (stderr is the commands' own, passed through)
    check_markdown((dumps / "r.md").read_text())
    page = (out / "report.html").read_text()
    assert "<b>x</b>" not in page and "lt&lt;b&gt;x&lt;/b&gt;/out0" in page
    assert "\x1b" not in page and "blk\\x1b[31m.red/out0" in page
    ET.parse(dumps / "p.svg")  # still well-formed XML: no control character in it
    readme = (out / "repro" / "README.md").read_text()  # the first own error's reproducer
    assert not CONTROL.search(readme)
    for line in readme.splitlines():
        code_spans(line)
    assert "`blk\\x1b[31m.red/out0`" in readme
