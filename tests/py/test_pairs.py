"""`nnparity run` without a rules file on two ports written apart from their references
(tests/pairs/: a ViT against torchvision's VisionTransformer, a ResNet-18 with BatchNorm folded
into its convolutions against torchvision's resnet18), each with planted porting bugs. The correct
port agrees; each bug is blamed on the culprit tests/pairs/expected.py names: a module of the port,
or code of a parent module that no module boundary covers. The reference's records that the port
never computes (folded away, or computed inside another module) are unmatched, not failures.

The material is checked too, so that a failure here is the pairing's, not the test's: with the
pairing written by hand (tests/pairs/*.rules) the correct port agrees on every record; and
against the correct port's own capture (the same names), each bug's first wrong value is where
expected.py says. tests/pairs/run_pairs.py prints the same cases as a table.

Every case runs the port twice (standard and injected); each pair's reference is captured once.
The 21 cases go two at a time."""
import json
import re
import subprocess
import sys

import pytest

from conftest import BIN, LIB, ROOT

PAIRS_DIR = ROOT / "tests" / "pairs"
sys.path.insert(0, str(PAIRS_DIR))
import report  # noqa: E402
import run_pairs  # noqa: E402
from expected import EXPECTED  # noqa: E402

CORRECT = run_pairs.CORRECT
BUGS = [(pair, bug) for pair in sorted(EXPECTED) for bug in EXPECTED[pair]]

# Bugs the pairing does not yet put where expected.py does: each says what the report names
# instead and why. strict: a case that starts to pass must leave this list.
KNOWN_MISSES = {}


def with_known_misses(cases):
    return [pytest.param(*c, marks=pytest.mark.xfail(strict=True, reason=KNOWN_MISSES[c]))
            if c in KNOWN_MISSES else c for c in cases]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(pair, bug) -> run_pairs.Case, for the correct port and every bug of both pairs."""
    for path in (BIN, LIB):
        if not path.exists():
            pytest.fail(f"{path} is not built")
    cases = [(pair, CORRECT) for pair in sorted(EXPECTED)] + BUGS
    return run_pairs.run_pairs(cases, tmp_path_factory.mktemp("pairs"), jobs=2)


def reference_without_partner(pair, doc):
    """The reference's records that the port, by its design, never computes: the convolutions'
    outputs and BatchNorms' inputs (the port folds each BN into its convolution) and the sum
    entering each block's second ReLU (the port's merge adds and rectifies in one module); the
    encoder's input, tokens before the position embedding (the port adds it in its patch
    embedding)."""
    if pair == "vit":
        return ["encoder/in0"]
    out = [r["ref"] for r in doc["records"]
           if (r["type"], r["role"]) in (("Conv2d", "out0"), ("BatchNorm2d", "in0"))
           or re.search(r"\.relu/in0#1$", r["ref"])]
    assert len(out) == 2 + 8 * 5 + 3 * 2  # stem; per block conv1, conv2, bn1, bn2, sum; shortcuts
    return out


def diff(*args):
    p = subprocess.run([str(BIN), "diff", "--json", *map(str, args)], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode in (0, 1), p.stderr
    return p.returncode, json.loads(p.stdout)


@pytest.mark.parametrize("pair", sorted(EXPECTED))
def test_every_bug_is_planted_and_expected(pair):
    port = __import__(f"{pair}_port")
    assert sorted(port.BUGS) == sorted(EXPECTED[pair])
    for bug, want in EXPECTED[pair].items():
        assert want["kind"] in ("module", "code"), bug
        assert want["kind"] == "module" or {"after", "before"} <= want.keys(), bug


@pytest.mark.parametrize("pair", sorted(EXPECTED))
def test_correct_port_agrees(runs, pair):
    case = runs[(pair, CORRECT)]
    assert case.doc is not None, case.stderr
    assert case.rc == 0 and case.doc["exit_code"] == 0, report.verdict_text(case.doc)
    assert report.first_divergence(case.doc) is None


@pytest.mark.parametrize("pair,bug", with_known_misses(BUGS))
def test_bug_is_blamed_on_its_culprit(runs, pair, bug):
    case = runs[(pair, bug)]
    assert case.doc is not None, case.stderr
    assert case.rc == 1 and case.doc["exit_code"] == 1
    got = report.culprit(case.doc)
    assert report.mismatch(EXPECTED[pair][bug], got) is None, \
        (report.describe(got), report.describe(EXPECTED[pair][bug]), report.verdict_text(case.doc))


# Bugs whose first wrong value equals a reference value other than its counterpart's (a ReLU
# skipped, a BatchNorm left unfolded) or has another shape (a stride moved): only the dataflow
# pairs it with what the counterpart reads or makes (docs/diff.md, "Dataflow").
DATAFLOW_CASES = [("cnn", "no-relu"), ("cnn", "shortcut-unfolded"), ("cnn", "stride-moved")]


@pytest.mark.parametrize("pair,bug", DATAFLOW_CASES)
def test_first_wrong_value_is_paired_on_the_dataflow(runs, pair, bug):
    first = report.first_divergence(runs[(pair, bug)].doc)
    assert first is not None and first["standard"]["evidence"] == "dataflow", first


@pytest.mark.parametrize("pair", sorted(EXPECTED))
def test_correct_port_has_no_dataflow_pair(runs, pair):
    doc = runs[(pair, CORRECT)].doc
    assert [r["ref"] for r in doc["records"]
            if (r.get("standard") or {}).get("evidence") == "dataflow"] == []


@pytest.mark.parametrize("pair", sorted(EXPECTED))
def test_records_without_partner_are_unmatched_not_failed(runs, pair):
    doc = runs[(pair, CORRECT)].doc
    lonely = reference_without_partner(pair, doc)
    unmatched, failed = set(report.unmatched_reference(doc)), set(report.failed_reference(doc))
    assert [r for r in lonely if r not in unmatched] == []
    assert [r for r in lonely if r in failed] == []


@pytest.mark.parametrize("pair", sorted(EXPECTED))
def test_hand_written_pairing_agrees(runs, pair):
    """The material: paired by hand, the correct port agrees with the reference on every record
    it computes, and the reference's records left without partner are those it never computes."""
    out = runs[(pair, CORRECT)].out
    rc, doc = diff("--rules", PAIRS_DIR / f"{pair}.rules", out / "ref.safetensors",
                   out / "port.safetensors")
    assert rc == 0 and doc["unmatched_port"] == []
    assert all(p["verdict"] == "pass" for p in doc["pairs"])
    assert set(reference_without_partner(pair, runs[(pair, CORRECT)].doc)) <= \
        set(doc["unmatched_ref"])


@pytest.mark.parametrize("pair,bug", BUGS)
def test_expectation_is_where_the_bug_shows(runs, pair, bug):
    """The material: against the correct port's capture, name for name, the buggy port's first
    wrong value is the culprit module's output, or the `before` record of culprit code, right
    after its `after` record, which is still right."""
    want = EXPECTED[pair][bug]
    correct, buggy = runs[(pair, CORRECT)].out, runs[(pair, bug)].out
    rc, doc = diff("--no-align", correct / "port.safetensors", buggy / "port.safetensors")
    assert rc == 1
    first = doc["pairs"][doc["first_divergence"]]["ref"]
    if want["kind"] == "module":
        assert first == want["port_module"] + "/out0"
        return
    assert first == want["before"]
    names = [p["ref"] for p in doc["pairs"]]
    assert names[names.index(first) - 1] == want["after"]
    assert doc["pairs"][names.index(first) - 1]["verdict"] == "pass"


@pytest.mark.parametrize("pair", sorted(EXPECTED))
def test_self_check(pair):
    """The port's own check: the correct port's output agrees with the reference's to float32
    noise, each bug's does not."""
    p = subprocess.run([sys.executable, str(PAIRS_DIR / f"{pair}_port.py"), "--check"],
                       env=run_pairs.clean_env(), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert len(p.stdout.splitlines()) == 1 + len(EXPECTED[pair])
