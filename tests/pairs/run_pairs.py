#!/usr/bin/python3
"""run_pairs.py - how the current build pairs independently written ports: `nnparity run` with no
rules file on the ViT and the ResNet-18 pair, for the correct port and each planted bug, and one
table of what the report says against what tests/pairs/expected.py says it should.

    run_pairs.py [--pair vit|cnn] [--bug NAME] [--bf16] [--brief] [--keep DIR] [-j N]

Per case: exit code, the first divergence (reference record -> port record [label]), the
verdict sentence, the culprit the report names and the one expected, then OK or WRONG. A correct
port is OK when the run exits 0; a bug when it exits 1 and names the expected culprit.
--brief prints one line a case; --keep DIR keeps every run's directory (report.html, captures).
--bf16 runs every port in bf16 end to end against the float32 reference, with the reference in
bf16 as the baseline (`nnparity run --baseline`): the correct port must agree within bf16 compute
noise and each bug be named as in float32, but for those smaller than that noise (BELOW_BF16),
which it hides: their runs must agree too.

Each pair's reference is captured once and every case's --ref command copies that capture
(the reference is seeded and single-threaded: each run would record the same values). Like the
tests, it runs from a clone: NNPARITY_BIN and NNPARITY_LIB name the build (default build/). Exits 0
when every case is OK, 1 otherwise, 2 when a run could not be made."""
import argparse
import collections
import concurrent.futures
import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import report  # noqa: E402
from expected import EXPECTED  # noqa: E402

ROOT = HERE.parents[1]
BIN = Path(os.environ.get("NNPARITY_BIN", ROOT / "build" / "nnparity")).resolve()
LIB = Path(os.environ.get("NNPARITY_LIB", ROOT / "build" / "libnnparity.so")).resolve()
PAIRS = {"vit": ("vit_ref.py", "vit_port.py"), "cnn": ("cnn_ref.py", "cnn_port.py")}
CORRECT = ""  # the bug name of the correct port
# Bugs smaller than bf16 compute noise: LayerNorm's and BatchNorm's eps (1e-5 against 1e-6 or
# 1e-3 on variances near 1), tanh-approximated GELU (2e-4 at the logits).
BELOW_BF16 = {"vit": {"ln-eps", "gelu-tanh"}, "cnn": {"bn-eps"}}
TIMEOUT = 300

# One case's run: exit code, report (None when stdout held none), stderr, the run's directory.
Case = collections.namedtuple("Case", "rc doc stderr out")


def clean_env(**extra):
    """The caller's environment without capture settings of its own, the library under test."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("NNPARITY_CAPTURE", "NNPARITY_INJECT", "NNPARITY_RULES", "NNP_PAIR_BUG")}
    env["NNPARITY_LIB"] = str(LIB)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def capture_reference(pair, path):
    """Record the pair's reference once into `path`."""
    p = subprocess.run([sys.executable, str(HERE / PAIRS[pair][0])], capture_output=True,
                       text=True, timeout=TIMEOUT, env=clean_env(NNPARITY_CAPTURE=path))
    if p.returncode != 0 or not Path(path).exists():
        raise RuntimeError(f"{PAIRS[pair][0]} exited {p.returncode}: {p.stderr.strip()}")
    return path


def run_case(pair, bug, reference, out, bf16=False):
    """`nnparity run --json` of one case into directory `out`, as a Case."""
    ref_cmd = f"cp -- {shlex.quote(str(reference))} \"$NNPARITY_CAPTURE\""
    port_cmd = f"NNP_PAIR_BUG={shlex.quote(bug)} " + ("NNP_PAIR_DTYPE=bf16 " if bf16 else "") + \
               f"{shlex.quote(sys.executable)} {shlex.quote(str(HERE / PAIRS[pair][1]))}"
    # the reference's capture is copied, so the baseline is the reference script itself
    baseline = ["--baseline", f"NNPARITY_BASELINE=bf16 {shlex.quote(sys.executable)} "
                              f"{shlex.quote(str(HERE / PAIRS[pair][0]))}"] if bf16 else []
    p = subprocess.run([str(BIN), "run", "-j", "1", "--ref", ref_cmd, "--port", port_cmd,
                        *baseline, "--out", str(out), "--json"], cwd=ROOT, env=clean_env(),
                       capture_output=True, text=True, errors="replace", timeout=TIMEOUT)
    try:
        doc = json.loads(p.stdout)
    except ValueError:
        doc = None
    return Case(p.returncode, doc, p.stderr, Path(out))


def run_pairs(cases, base, jobs=2, bf16=False):
    """{(pair, bug): Case} for each (pair, bug) of `cases` ('' the correct port), the runs'
    directories under `base` as PAIR/BUG (PAIR/correct), `jobs` runs at a time."""
    base = Path(base)
    pairs = sorted({pair for pair, _ in cases})
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        refs = {pair: pool.submit(capture_reference, pair, base / f"{pair}.reference.safetensors")
                for pair in pairs}
        refs = {pair: f.result() for pair, f in refs.items()}
        futures = {(pair, bug): pool.submit(run_case, pair, bug, refs[pair],
                                            base / pair / (bug or "correct"), bf16)
                   for pair, bug in cases}
        return {case: f.result() for case, f in futures.items()}


def judge(pair, bug, rc, doc, bf16=False):
    """(OK?, why not) for one case."""
    if doc is None:
        return False, f"no report (exit {rc})"
    if bug == CORRECT or (bf16 and bug in BELOW_BF16[pair]):
        if bf16 and "The port agrees with the reference within bf16 compute noise" \
                not in str(doc.get("verdict", "")):
            return False, "the port does not agree within bf16 compute noise"
        return (True, None) if rc == 0 else (False, "the correct port does not agree")
    if rc != 1:
        return False, f"exit {rc}, expected 1"
    why = report.mismatch(EXPECTED[pair][bug], report.culprit(doc))
    return why is None, why


def first_line(doc):
    first = report.first_divergence(doc)
    if first is None:
        return "no divergence"
    return f"{first['ref']} -> {report.port_record(first) or '(no partner)'} [{first['label']}]"


def print_case(pair, bug, case, brief, bf16=False):
    rc, doc = case.rc, case.doc
    ok, why = judge(pair, bug, rc, doc, bf16)
    head = f"{'OK' if ok else 'WRONG':5} {bug or '(correct)':17} rc {rc}  "
    if doc is None:
        tail = case.stderr.strip().splitlines()[-1:] or ["(no stderr)"]
        print(head + f"no report: {tail[0]}")
        return ok
    print(head + first_line(doc) + (f"  ({why})" if brief and why else ""))
    if brief:
        return ok
    print(f"{'':8}verdict:  {report.verdict_text(doc)}")
    if bug != CORRECT:
        print(f"{'':8}named:    {report.describe(report.culprit(doc))}")
        print(f"{'':8}expected: {report.describe(EXPECTED[pair][bug])}")
    elif why:
        print(f"{'':8}{why}")
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pair", choices=sorted(PAIRS), help="one pair only")
    ap.add_argument("--bug", help="one case only ('' or 'correct': the correct port)")
    ap.add_argument("--brief", action="store_true", help="one line a case")
    ap.add_argument("--bf16", action="store_true",
                    help="the ports in bf16, with the reference in bf16 as the baseline")
    ap.add_argument("--keep", metavar="DIR", help="keep the runs' directories under DIR")
    ap.add_argument("-j", type=int, default=2, metavar="N", help="runs at a time (default 2)")
    args = ap.parse_args()
    if not BIN.exists() or not LIB.exists():
        sys.exit(f"run_pairs.py: {BIN} or {LIB} is not built (make, or set NNPARITY_BIN and "
                 "NNPARITY_LIB)")
    pairs = [args.pair] if args.pair else sorted(PAIRS)
    bug = None if args.bug is None else "" if args.bug == "correct" else args.bug
    if bug and not any(bug in EXPECTED[p] for p in pairs):
        ap.error(f"no pair of {', '.join(pairs)} has a bug {bug!r}")
    cases = [(p, b) for p in pairs for b in [CORRECT, *EXPECTED[p]]
             if bug is None or b == bug]

    with tempfile.TemporaryDirectory(prefix="nnp-pairs-") as tmp:
        base = Path(args.keep) if args.keep else Path(tmp)
        base.mkdir(parents=True, exist_ok=True)
        try:
            results = run_pairs(cases, base, max(1, args.j), args.bf16)
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            sys.exit(f"run_pairs.py: {e}")
    summary, all_ok, made = [], True, True
    for pair in pairs:
        mine = [(b, results[(p, b)]) for p, b in cases if p == pair]
        if not mine:
            continue
        ref_records = next((len(c.doc["records"]) for _, c in mine if c.doc), "?")
        print(f"== {pair}: {PAIRS[pair][1]} against {PAIRS[pair][0]} "
              f"({ref_records} reference records)")
        oks = sum(print_case(pair, b, c, args.brief, args.bf16) for b, c in mine)
        made &= all(c.doc is not None for _, c in mine)
        all_ok &= oks == len(mine)
        summary.append(f"{pair} {oks}/{len(mine)} OK")
    print("== " + ", ".join(summary))
    sys.exit(0 if all_ok else 1 if made else 2)


if __name__ == "__main__":
    main()
