"""Rules whose regexes would backtrack without end, or that the rule language refuses: the diff
stops with exit code 2 and one line naming the rule, never a crash or a hang."""
import time

import numpy as np
import pytest

from conftest import write_safetensors

pytestmark = pytest.mark.cli

def write(path, tensors):
    """write_safetensors, with metadata padded so that the header's length does not start with
    0x80, the byte that marks a pickle."""
    for k in range(16):
        write_safetensors(path, tensors, {"pad": "x" * k})
        if path.read_bytes()[0] != 0x80:
            return
    raise AssertionError("no padding helps")


NAMES = ["a" * 40 + "!/out0"] + [f"blk.{i}.attn_q/out0" for i in range(11)]


@pytest.fixture
def dumps(tmp_path):
    tensors = {n: np.ones(4, np.float32) for n in NAMES}
    write(tmp_path / "ref.safetensors", tensors)
    write(tmp_path / "port.safetensors", tensors)
    return tmp_path / "ref.safetensors", tmp_path / "port.safetensors"


@pytest.mark.parametrize("rule", [
    "ignore (a+)+$",
    "rename (a|aa)+$ x",
    "ref ignore (a|a?)+$",
    "component (.*a){12}$ mlp",
])
def test_a_regex_that_reaches_a_limit_stops_the_diff(nnp, tmp_path, dumps, rule):
    rules = tmp_path / "slow.rules"
    rules.write_text("# a pattern that backtracks without end\n" + rule + "\n")
    start = time.monotonic()
    p = nnp("diff", "--rules", rules, *dumps)
    assert time.monotonic() - start < 30
    assert p.returncode == 2, (p.stdout, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    regex = rule.split()[2 if rule.startswith("ref") else 1]
    assert f"slow.rules: line 2: regex '{regex}' on 'a" in lines[0]
    assert "limit" in lines[0]


def test_back_references_are_refused(nnp, tmp_path, dumps):
    rules = tmp_path / "backref.rules"
    rules.write_text("ignore (a*)*\\1\n")
    p = nnp("diff", "--rules", rules, *dumps)
    assert p.returncode == 2, (p.stdout, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "backref.rules: line 1, column 8" in lines[0], p.stderr
    assert "back-references" in lines[0]


def test_alternation_takes_the_longest(nnp, tmp_path):
    """POSIX semantics: of the alternatives that match at the leftmost place, the longest wins
    (attn_q over attn, though attn is written first)."""
    port = {f"blk.{i}.attn_q/out0": np.full(4, i, np.float32) for i in range(12)}
    ref = {f"L{i}.attn_q./out0": np.full(4, i, np.float32) for i in range(12)}
    write(tmp_path / "ref.safetensors", ref)
    write(tmp_path / "port.safetensors", port)
    rules = tmp_path / "alt.rules"
    rules.write_text("rename ^blk\\.([0-9]+)\\.(attn|attn_q) L\\1.\\2.\n")
    p = nnp("diff", "--no-align", "--rules", rules, tmp_path / "ref.safetensors",
            tmp_path / "port.safetensors")
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert "_q/" not in p.stdout, p.stdout


def test_rules_file_past_the_size_cap(nnp, tmp_path, dumps):
    rules = tmp_path / "huge.rules"
    with open(rules, "w") as f:
        f.write("# padding\n" * (2 << 20))
    p = nnp("diff", "--rules", rules, *dumps)
    assert p.returncode == 2, (p.stdout, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert "huge.rules: 20971520 bytes, more than a rules file may hold (16777216)" in lines[0]
