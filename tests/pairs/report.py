"""report.py - what run_pairs.py and tests/py/test_pairs.py read from an `nnparity run --json`
report (schema nnparity.run/1), and how a named culprit is held against tests/pairs/expected.py.
Each fact is read in one function here, so that a change of the report's layout is adapted once."""


def culprit(doc):
    """The culprit the report names for its first divergence, or None:
        {"kind": "module", "port_module": ..., "ref_module": ...}
        {"kind": "code", "port_module": ... ('' for the root), "after": ..., "before": ...}
    It belongs to the verdict / first divergence: taken from the verdict when that is an object,
    else from the report's top level, else from the first divergence's record."""
    verdict = doc.get("verdict")
    if isinstance(verdict, dict) and "culprit" in verdict:
        return verdict["culprit"]
    if "culprit" in doc:
        return doc["culprit"]
    first = first_divergence(doc)
    return first.get("culprit") if first else None


def verdict_text(doc):
    """The verdict sentence, as the text report's verdict line says it."""
    verdict = doc.get("verdict")
    if isinstance(verdict, dict):
        return verdict.get("text") or verdict.get("sentence") or ""
    return verdict or ""


def first_divergence(doc):
    """The reference record of the first divergence, or None."""
    i = doc.get("first_divergence")
    return doc["records"][i] if isinstance(i, int) else None


def port_record(record, scenario="standard"):
    """The port record paired with a reference record in a scenario, or None."""
    pair = record.get(scenario)
    return pair["port"] if pair else None


def unmatched_reference(doc):
    """Names of the reference's records that have no partner in the port's capture."""
    return [r["ref"] for r in doc["records"] if r.get("standard") is None]


def failed_reference(doc):
    """Names of the reference's records whose pair fails in either scenario."""
    return [r["ref"] for r in doc["records"]
            if any(r.get(s) and r[s]["verdict"] == "fail" for s in ("standard", "injected"))]


def describe(expected):
    """An expected (or named) culprit in one line."""
    if not expected:
        return "none"
    where = expected.get("port_module")
    where = "the root" if where == "" else where
    if expected.get("kind") == "code":
        return f"code of {where} after {expected.get('after')}, before {expected.get('before')}"
    ref = f" (ref {expected['ref_module']})" if expected.get("ref_module") else ""
    return f"module {where}{ref}"


def mismatch(expected, got):
    """Why a named culprit does not answer the expectation, or None when it does: kind and
    port_module always count, after, before and ref_module where the expectation gives them."""
    if got is None:
        return "the report names no culprit"
    for key in ("kind", "port_module", "after", "before", "ref_module"):
        if key in expected and got.get(key) != expected[key]:
            return f"{key} {got.get(key)!r}, expected {expected[key]!r}"
    return None
