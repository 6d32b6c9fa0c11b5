"""`nnparity run` with no rules file on a reference and a port written apart: the tiny GPT of
tests/pairs/gpt_ref.py, which runs the whole prefix again at every decode step (records
[1, t, ...] at step t), against its C port tests/pairs/gpt_port.c, which decodes one token a step
with a KV cache (records [1, 1, ...]) under names and module boundaries of its own.

- With no bug the port generates the reference's tokens, and the run agrees.
- Each bug the port can plant is found where tests/pairs/expected_gpt.py says: the first
  divergence is the port record where the bug first shows, the culprit is the module (labelled
  own: the port taps its modules' inputs, so injection gives them the reference's) or the
  parent's code between two taps (the first wrong value, labelled inherited).
- The expectations themselves are checked first, against a hand pairing (tests/pairs/
  gpt_oracle.py: the reference's values under the port's names), so that a wrong entry in
  expected_gpt.py cannot pass for a fault of nnparity's pairing.

Every case runs the reference (a torch import) and the port twice; cases go two at a time."""
import concurrent.futures
import subprocess
import sys

import pytest

from conftest import BIN, LIB, ROOT

sys.path.insert(0, str(ROOT / "tests" / "pairs"))
import gpt_oracle  # noqa: E402
import run_gpt_pair as pair  # noqa: E402
from expected_gpt import EXPECTED  # noqa: E402

PORT = BIN.parent / "pairs" / "gpt_port"
BUGS = sorted(EXPECTED)

# Bugs the pairing does not yet put where expected_gpt.py does, and why. strict: a case that
# starts to pass must leave this list.
KNOWN_MISSES = {}


def with_known_misses(bugs):
    return [pytest.param(b, marks=pytest.mark.xfail(strict=True, reason=KNOWN_MISSES[b]))
            if b in KNOWN_MISSES else b for b in bugs]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    for path in (BIN, LIB, PORT):
        if not path.exists():
            pytest.fail(f"{path} is not built")
    return pair.write_weights(tmp_path_factory.mktemp("gpt"), lib=LIB)


def run_cases(base, weights, reference):
    """bug (None: no bug) -> (run directory, exit code, report)"""
    def one(bug):
        out = base / (bug or "none")
        rc, doc, err = pair.run_case(out, weights, bug, reference, bin=BIN, lib=LIB, port=PORT)
        assert doc is not None, (bug, rc, err)
        return out, rc, doc
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        cases = [pair.NO_BUG] + BUGS
        return dict(zip(cases, pool.map(one, cases)))


@pytest.fixture(scope="module")
def runs(weights, tmp_path_factory):
    return run_cases(tmp_path_factory.mktemp("gpt_run"), weights, pair.REFERENCE)


@pytest.fixture(scope="module")
def hand(weights, tmp_path_factory):
    """The runs against the hand-paired reference (its --ref command only copies a file), and
    the port's module nesting."""
    base = tmp_path_factory.mktemp("gpt_hand")
    oracle = base / "oracle.safetensors"
    captures = pair.capture_both(base, weights, lib=LIB, port=PORT)
    parent_of = pair.make_oracle(*captures, oracle)
    return run_cases(base, weights, pair.oracle_reference(oracle)), parent_of


def printed(cmd):
    """(tokens, logits) as a side prints them."""
    p = subprocess.run(cmd, env=pair.clean_env(LIB), capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    lines = dict(line.split(":", 1) for line in p.stdout.splitlines())
    return [int(t) for t in lines["tokens"].split()], [float(v) for v in lines["logits"].split()]


def test_port_generates_the_reference_tokens(weights):
    ref_tokens, ref_logits = printed([pair.PYTHON, str(ROOT / "tests" / "pairs" / "gpt_ref.py")])
    tokens, logits = printed([str(PORT), str(weights)])
    assert tokens == ref_tokens
    # the seed gives tokens that vary, so that a step's mistake can change the next token
    assert len(tokens) == 4 and len(set(tokens)) > 1
    assert len(logits) == len(ref_logits) == 64
    # printed with 6 decimals: float32 noise is below their last digit
    assert max(abs(a - b) for a, b in zip(logits, ref_logits)) <= 2e-6


def test_every_bug_has_an_expected_culprit():
    p = subprocess.run([str(PORT), "--bug", "list"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert sorted(line.split()[0] for line in p.stdout.splitlines()) == BUGS
    p = subprocess.run([str(PORT), "--bug", "no-such-bug"], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 2 and "unknown bug 'no-such-bug'" in p.stderr


def test_hand_pairing_agrees_with_the_correct_port(hand):
    cases, _ = hand
    out, rc, doc = cases[pair.NO_BUG]
    assert rc == 0 and doc["agree"] is True, doc["verdict"]
    # every record of the port has its reference value: nothing is left unpaired or uninjected
    assert doc["unmatched_port"] == [] and doc["unmatched_injected"] == []
    assert {r["label"] for r in doc["records"]} == {"ok"}


@pytest.mark.parametrize("bug", BUGS)
def test_expected_culprit_holds_under_the_hand_pairing(hand, bug):
    cases, parent_of = hand
    out, rc, doc = cases[bug]
    expected = EXPECTED[bug]
    assert rc == 1, doc["verdict"]
    _, port_record, label = pair.first_divergence(doc)
    assert port_record == expected["first"]
    assert label == pair.expected_label(expected)
    culprit = gpt_oracle.hand_culprit(doc, parent_of)
    assert pair.culprit_matches(expected, culprit), culprit


def test_correct_port_agrees_without_rules(runs):
    out, rc, doc = runs[pair.NO_BUG]
    assert rc == 0 and doc["exit_code"] == 0 and doc["agree"] is True, doc["verdict"]
    assert pair.first_divergence(doc) is None


@pytest.mark.parametrize("bug", with_known_misses(BUGS))
def test_bug_found_with_the_expected_culprit(runs, bug):
    out, rc, doc = runs[bug]
    expected = EXPECTED[bug]
    assert rc == 1 and doc["exit_code"] == 1 and doc["agree"] is False, doc["verdict"]
    culprit = pair.culprit_of(doc)
    assert pair.culprit_matches(expected, culprit), (culprit, doc["verdict"])
    _, port_record, label = pair.first_divergence(doc)
    # the port taps every module's inputs: a module that errs fails on the reference's inputs
    # too (own); a value that a parent's code got wrong is right once injected (inherited)
    assert label == pair.expected_label(expected), doc["verdict"]
    if expected["kind"] == "module":
        assert gpt_oracle.split_name(port_record)[0] == expected["port_module"]
    else:
        assert culprit.get("before") == port_record, culprit


@pytest.mark.parametrize("bug", with_known_misses(BUGS))
def test_first_divergence_is_where_the_bug_shows(runs, bug):
    """The port record where the hand pairing first sees the bug, found without it."""
    out, rc, doc = runs[bug]
    fd = pair.first_divergence(doc)
    assert fd is not None and fd[1] == EXPECTED[bug]["first"], (fd, doc["verdict"])
