#!/usr/bin/python3
"""run_gpt_pair.py - `nnparity run` on the tiny GPT (gpt_ref.py, which re-runs the whole prefix
at every decode step) against its C port (gpt_port.c, one token a step with a KV cache, names and
module boundaries of its own), with no rules file: once with the port as it should be and once
with each bug it can plant, and a table of what nnparity found against expected_gpt.py.

    run_gpt_pair.py [--bug NAME] [--out DIR] [-j N] [--oracle] [--port PATH]

--bug runs one case ("none": the correct port); --out keeps each case's run directory (report,
captures) under DIR, else a temporary directory that is removed. --oracle runs against the
reference re-expressed in the port's names by the hand pairing of gpt_oracle.py instead of
against gpt_ref.py itself: the table then shows the truth that a pairing without rules has to
find. nnparity and its library are found as the tests find them: NNPARITY_BIN and NNPARITY_LIB,
else build/nnparity and build/libnnparity.so; the port beside them, in pairs/. Exits 0 when
every case is OK."""
import argparse
import concurrent.futures
import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
BIN = Path(os.environ.get("NNPARITY_BIN", ROOT / "build" / "nnparity")).resolve()
LIB = Path(os.environ.get("NNPARITY_LIB", ROOT / "build" / "libnnparity.so")).resolve()
PORT = BIN.parent / "pairs" / "gpt_port"
PYTHON = "/usr/bin/python3"  # the Python with torch
REFERENCE = f"{shlex.quote(PYTHON)} {shlex.quote(str(HERE / 'gpt_ref.py'))}"
NO_BUG = None

sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "python"))
from expected_gpt import EXPECTED  # noqa: E402


def clean_env(lib=LIB, **extra):
    """The environment without the caller's capture settings or bug choice, plus `extra`."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("NNPARITY_") and k != "NNP_PAIR_BUG"}
    env["NNPARITY_LIB"] = str(lib)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def write_weights(out, lib=LIB):
    """Runs the reference once to write its weights in the port's names; returns the path."""
    weights = Path(out) / "weights.safetensors"
    p = subprocess.run([PYTHON, str(HERE / "gpt_ref.py"), "--weights", str(weights)],
                       env=clean_env(lib), capture_output=True, text=True, timeout=120)
    if p.returncode != 0:
        raise RuntimeError(f"gpt_ref.py --weights failed: {p.stderr}")
    return weights


def port_command(weights, bug, port=PORT):
    prefix = f"NNP_PAIR_BUG={shlex.quote(bug)} " if bug else ""
    return prefix + " ".join(shlex.quote(str(a)) for a in (port, weights))


def run_case(out, weights, bug, reference=REFERENCE, bin=BIN, lib=LIB, port=PORT):
    """nnparity run on one case, no rules; returns (exit code, nnparity.run/1 report or None,
    stderr)."""
    p = subprocess.run([str(bin), "run", "-j", "1", "--ref", reference,
                        "--port", port_command(weights, bug, port), "--out", str(out), "--json"],
                       cwd=ROOT, env=clean_env(lib), capture_output=True, text=True,
                       errors="replace", timeout=300)
    try:
        doc = json.loads(p.stdout)
    except ValueError:
        doc = None
    return p.returncode, doc, p.stderr


def culprit_of(doc):
    """The culprit of the run report's first divergence, or None where the report names none:
    {"kind": "module", "port_module", "ref_module"} or {"kind": "code", "port_module" (the
    parent; "" the top level), "after", "before"}. The one place that knows where the report
    keeps it: beside the verdict, in the first divergence's object, or in its record."""
    if not doc:
        return None
    places = [doc.get("culprit")]
    for key in ("first_divergence", "verdict"):
        if isinstance(doc.get(key), dict):
            places.append(doc[key].get("culprit"))
    fd = doc.get("first_divergence")
    if isinstance(fd, int) and 0 <= fd < len(doc.get("records") or []):
        places.append(doc["records"][fd].get("culprit"))
    return next((c for c in places if isinstance(c, dict)), None)


def culprit_matches(expected, got):
    """Same kind and port module, and the same reference module where one is expected."""
    if not got or got.get("kind") != expected["kind"]:
        return False
    if got.get("port_module") != expected["port_module"]:
        return False
    return "ref_module" not in expected or got.get("ref_module") == expected["ref_module"]


def first_divergence(doc):
    """(reference record, port record or None, label) of the first divergence, or None."""
    fd = doc.get("first_divergence") if doc else None
    if not isinstance(fd, int):
        return None
    record = doc["records"][fd]
    return record["ref"], (record.get("standard") or {}).get("port"), record["label"]


def expected_label(expected):
    """A module's own error fails on the reference's inputs; a value that code outside every
    module got wrong is right once the module it enters is given the reference's inputs."""
    return "own" if expected["kind"] == "module" else "inherited"


def judge(bug, rc, doc, got):
    """(OK?, why not) for one case."""
    if bug is NO_BUG:
        return rc == 0, "" if rc == 0 else f"exit {rc}"
    if rc != 1:
        return False, f"exit {rc}"
    expected = EXPECTED[bug]
    if not culprit_matches(expected, got):
        return False, "culprit"
    fd = first_divergence(doc)
    if not fd or fd[2] != expected_label(expected):
        return False, "label"
    return True, ""


def describe(culprit):
    if not culprit:
        return "-"
    where = culprit.get("port_module")
    return f"{culprit.get('kind')} {where if where else '(top)'}"


# -- the hand pairing (--oracle) ---------------------------------------------------------------

def capture_both(out, weights, lib=LIB, port=PORT):
    """Captures the reference and the correct port (no injection) into OUT/ref.safetensors and
    OUT/port.safetensors, the names `nnparity run` gives them; returns the two paths."""
    out = Path(out)
    paths = []
    for name, cmd in (("ref", [PYTHON, str(HERE / "gpt_ref.py")]),
                      ("port", [str(port), str(weights)])):
        path = out / f"{name}.safetensors"
        p = subprocess.run(cmd, env=clean_env(lib, NNPARITY_CAPTURE=path), capture_output=True,
                           text=True, timeout=120)
        if p.returncode != 0:
            raise RuntimeError(f"capturing {name} failed: {p.stderr}")
        paths.append(path)
    return paths


def make_oracle(ref_capture, port_capture, oracle):
    """Writes the reference capture in the correct port's names (gpt_oracle.py) to `oracle`;
    returns the port's module nesting."""
    import nnparity
    import gpt_oracle
    port_dump = nnparity.load(str(port_capture))
    gpt_oracle.write_oracle(nnparity.load(str(ref_capture)), port_dump, oracle)
    return gpt_oracle.parents(port_dump)


def oracle_reference(oracle):
    """A --ref command that "captures" the oracle: run then injects it under the port's names."""
    return f"cp {shlex.quote(str(oracle))} \"$NNPARITY_CAPTURE\""


# -- the table ---------------------------------------------------------------------------------

def row(bug, rc, doc, got, ok, why):
    fd = first_divergence(doc)
    first = f"{fd[0]} -> {fd[1] or '(no partner)'}" if fd else "-"
    expected = describe(EXPECTED[bug]) if bug else "exit 0"
    verdict = doc.get("verdict") if doc else "(no report)"
    return (f"{bug or 'none':<15} {rc:>4}  {first:<48} {fd[2] if fd else '-':<9}  "
            f"{expected:<22} {describe(got):<22} {'OK' if ok else 'WRONG ' + why}\n"
            f"{'':<16}verdict: {verdict}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bug", help="one case: a bug name, or 'none' for the correct port")
    ap.add_argument("--out", help="keep the runs under this directory")
    ap.add_argument("-j", type=int, default=2, help="cases run at once (default 2)")
    ap.add_argument("--oracle", action="store_true",
                    help="run against the hand-paired reference (gpt_oracle.py)")
    ap.add_argument("--port", default=str(PORT), help=f"the port (default {PORT})")
    args = ap.parse_args()
    port = Path(args.port)
    for path in (BIN, LIB, port):
        if not path.exists():
            sys.exit(f"run_gpt_pair: {path} is not built (make)")
    bugs = [NO_BUG] + sorted(EXPECTED)
    if args.bug:
        if args.bug != "none" and args.bug not in EXPECTED:
            ap.error(f"unknown bug {args.bug!r}: none, {', '.join(sorted(EXPECTED))}")
        bugs = [None if args.bug == "none" else args.bug]

    tmp = None if args.out else tempfile.TemporaryDirectory(prefix="gpt-pair-")
    out = Path(args.out or tmp.name)
    out.mkdir(parents=True, exist_ok=True)
    weights = write_weights(out)
    reference, hand_culprit = REFERENCE, None
    if args.oracle:
        import gpt_oracle  # torch: only here
        oracle = out / "oracle.safetensors"
        parent_of = make_oracle(*capture_both(out, weights, port=port), oracle)
        reference = oracle_reference(oracle)

        def hand_culprit(doc):
            return gpt_oracle.hand_culprit(doc, parent_of)

    def one(bug):
        rc, doc, err = run_case(out / (bug or "none"), weights, bug, reference, port=port)
        got = hand_culprit(doc) if hand_culprit and doc else culprit_of(doc)
        if hand_culprit and bug and doc:
            fd = first_divergence(doc)
            if not fd or fd[1] != EXPECTED[bug]["first"]:
                return bug, rc, doc, got, False, "first"
        return (bug, rc, doc, got, *judge(bug, rc, doc, got))

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.j)) as pool:
        results = list(pool.map(one, bugs))
    print(f"{'bug':<15} {'exit':>4}  {'first divergence (reference -> port)':<48} {'label':<9}  "
          f"{'expected culprit':<22} {'culprit found':<22} result")
    for r in results:
        print(row(*r))
    failed = sum(1 for r in results if not r[4])
    print(f"{len(results) - failed} OK, {failed} WRONG" +
          (f"; runs kept in {out}" if args.out else ""))
    if tmp:
        tmp.cleanup()
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
