"""diff(): compare two dumps from Python through the library calls `nnparity diff` makes
(nnp_rules_load/_parse, nnp_dump_open_both, nnp_diff_dumps and the nnp_diff_* accessors), and
return what the diff found as plain Python objects: pairs with their metrics, verdicts, profiles
and hints, the first divergence, the culprit, what stayed unmatched. Everything the library
allocated is released before diff() returns; the result holds copies only.

DiffResult.to_dict() is the JSON report of `nnparity diff --json` (schema nnparity.diff/1,
docs/report-schema.md), field for field."""
import ctypes
import math
import os
from dataclasses import dataclass, field, fields
from typing import List, Optional

from . import _lib

SCHEMA = "nnparity.diff/1"
# The metrics in the order and under the names of the JSON report.
_METRIC_COUNTS = ("count", "finite", "nan_ref", "nan_port", "inf_ref", "inf_port", "nan_new",
                  "inf_new", "allclose_fail")
_METRIC_FLOATS = ("allclose_fail_pct", "mse", "rmse", "mean_abs", "max_abs")
_METRIC_FLOATS_AFTER = ("ref_at_max", "port_at_max", "rel_l2", "nmse", "snr_db", "cosine", "pcc")
_MISMATCH = ("shape", "dtype")
_CULPRIT_KINDS = {1: "module", 2: "code"}


def _number(v):
    """A float as the JSON report writes it: NaN and infinities are null."""
    return v if math.isfinite(v) else None


def _text(b):
    return b.decode("utf-8", "surrogateescape") if b is not None else None


class _Fields:
    """to_dict() of a result dataclass: its fields by name, as the JSON report names them."""

    def to_dict(self):
        return _as_dict(self)


def _as_dict(obj):
    out = {}
    for f in fields(obj):
        v = getattr(obj, f.name)
        if isinstance(v, float):
            v = _number(v)
        elif hasattr(v, "to_dict"):
            v = v.to_dict()
        elif isinstance(v, list):
            v = [x.to_dict() if hasattr(x, "to_dict") else
                 _number(x) if isinstance(x, float) else x for x in v]
        out[f.name] = v
    return out


@dataclass(frozen=True)
class Metrics(_Fields):
    """The metrics of one compared pair (nnp_metrics); max_index is the worst element's
    coordinates in the shape the pair was compared at. Floats keep NaN and infinities, which
    to_dict() writes as None, as the JSON report does."""
    count: int
    finite: int
    nan_ref: int
    nan_port: int
    inf_ref: int
    inf_port: int
    nan_new: int
    inf_new: int
    allclose_fail: int
    allclose_fail_pct: float
    mse: float
    rmse: float
    mean_abs: float
    max_abs: float
    max_index: List[int]
    ref_at_max: float
    port_at_max: float
    rel_l2: float
    nmse: float
    snr_db: float
    cosine: float
    pcc: float


@dataclass(frozen=True)
class Hint(_Fields):
    """A simple explanation that fits a failing pair (nnp_hint): kind ("scale", "sign",
    "offset", ...), fit in [0, 1], the axes it acts along (None: none), its value, one line of
    text."""
    kind: str
    fit: float
    axis: Optional[int]
    axis2: Optional[int]
    value: float
    text: str

    def __str__(self):
        return f"{self.text} (fit {self.fit:.3f})"


@dataclass(frozen=True)
class AxisProfile(_Fields):
    """One axis of a failing pair's profile: its name ("channel", "token", "axis 2"), size,
    each index's share of the squared error and count of elements outside tolerance."""
    name: str
    size: int
    sq_share: List[float]
    fail: List[int]


@dataclass(frozen=True)
class Profile(_Fields):
    """Where a failing pair's error lies (nnp_profile): the one-line `where`, the elements read
    (all, or a sample), how many of them fail, and the profile of every axis."""
    where: str
    elements: int
    sampled: bool
    fail: int
    axes: List[AxisProfile]


@dataclass(frozen=True)
class Culprit(_Fields):
    """Who makes the first divergence (nnp_diff_culprit): kind "module" (a port module computes
    a wrong value from values that agree) or "code" (code no module boundary covers); `after`
    and `before` are port record names (None where the library gives none)."""
    kind: str
    port_module: str
    ref_module: str
    after: Optional[str]
    before: Optional[str]


@dataclass(frozen=True)
class Collision(_Fields):
    """A port record that the rules renamed onto a name another port record had taken."""
    port: str
    name: str
    taken_by: str


@dataclass(frozen=True, repr=False)
class Pair:
    """A reference record and its port record(s), as compared. ref/port are the record names;
    ref_index/port_index their indices in the dumps; metrics is None where the pair was not
    compared (verdict "shape" or "dtype"); profile and hints are those of a failing pair."""
    index: int
    ref: str
    port: str
    ref_index: int
    port_index: int
    ref_seq: int
    port_seq: int
    type: str
    component: str
    verdict: str
    evidence: str
    confidence: float
    aligned: bool
    atol: float
    rtol: float
    ref_dtype: str
    port_dtype: str
    ref_shape: List[int]
    port_shape: List[int]
    adapters: Optional[str]
    problem: Optional[str]
    port_parts: List[str]
    metrics: Optional[Metrics]
    profile: Optional[Profile]
    hints: List[Hint] = field(default_factory=list)

    @property
    def failed(self):
        """The pair diverges: it fails, or it could not be compared."""
        return self.verdict in ("fail",) + _MISMATCH

    def to_dict(self):
        """The pair as the JSON report writes it."""
        d = {"ref": self.ref, "port": self.port, "ref_seq": self.ref_seq,
             "port_seq": self.port_seq, "type": self.type, "verdict": self.verdict,
             "ref_dtype": self.ref_dtype, "port_dtype": self.port_dtype, "atol": self.atol,
             "rtol": self.rtol, "aligned": self.aligned, "ref_shape": list(self.ref_shape),
             "port_shape": list(self.port_shape), "adapters": self.adapters,
             "problem": self.problem, "evidence": self.evidence,
             "confidence": self.confidence}
        if len(self.port_parts) > 1:
            d["port_parts"] = list(self.port_parts)
        if self.metrics is not None:
            d["metrics"] = self.metrics.to_dict()
        d["profile"] = self.profile.to_dict() if self.profile else None
        d["hints"] = [h.to_dict() for h in self.hints]
        return d

    def __repr__(self):
        names = self.ref if self.ref == self.port else f"{self.ref} ~ {self.port}"
        rel = (f" rel_l2={self.metrics.rel_l2:.3g}" if self.metrics else
               f" {self.problem}" if self.problem else "")
        hint = f" hint: {self.hints[0].text}" if self.hints else ""
        return f"<Pair {self.index} {names}: {self.verdict}{rel}{hint}>"


@dataclass(frozen=True, repr=False)
class DiffResult:
    """What nnparity.diff found. `pairs` in the reference's execution order; first_divergence,
    order_violation and nonfinite_origin are Pairs (None: none), their *_index the pair's index;
    unmatched_ref/unmatched_port are record names; components the per-component statistics of
    the text and JSON reports. result["name"] is the pair of reference record "name"."""
    ref: str
    port: str
    agree: bool
    pairs: List[Pair]
    first_divergence_index: Optional[int]
    order_violation_index: Optional[int]
    nonfinite_origin_index: Optional[int]
    culprit: Optional[Culprit]
    unmatched_ref: List[str]
    unmatched_port: List[str]
    aligned: int
    collisions: List[Collision]
    components: dict

    def _pair(self, i):
        return None if i is None else self.pairs[i]

    @property
    def first_divergence(self):
        return self._pair(self.first_divergence_index)

    @property
    def order_violation(self):
        return self._pair(self.order_violation_index)

    @property
    def nonfinite_origin(self):
        return self._pair(self.nonfinite_origin_index)

    @property
    def exit_code(self):
        """The exit code `nnparity diff` gives: 0 agree, 1 a divergence found."""
        return 0 if self.agree else 1

    def failing(self):
        """The pairs that diverge, in execution order."""
        return [p for p in self.pairs if p.failed]

    def __len__(self):
        return len(self.pairs)

    def __iter__(self):
        return iter(self.pairs)

    def __getitem__(self, key):
        """A pair by its index, or by its reference record's name (KeyError: no such pair)."""
        if isinstance(key, int):
            return self.pairs[key]
        for p in self.pairs:
            if p.ref == key:
                return p
        raise KeyError(key)

    def _seq(self, i):
        return None if i is None else self.pairs[i].ref_seq

    def to_dict(self):
        """The report of `nnparity diff --json`, field for field (schema nnparity.diff/1)."""
        return {
            "schema": SCHEMA, "components": {k: dict(v) for k, v in self.components.items()},
            "nonfinite_origin": self.nonfinite_origin_index, "ref": self.ref, "port": self.port,
            "agree": self.agree, "first_divergence": self.first_divergence_index,
            "order_violation": self.order_violation_index,
            "pairs": [p.to_dict() for p in self.pairs], "unmatched_ref": list(self.unmatched_ref),
            "unmatched_port": list(self.unmatched_port), "aligned": self.aligned,
            "collisions": [c.to_dict() for c in self.collisions],
            "first_divergence_seq": self._seq(self.first_divergence_index),
            "order_violation_seq": self._seq(self.order_violation_index),
            "nonfinite_origin_seq": self._seq(self.nonfinite_origin_index),
        }

    def __repr__(self):
        counts = {}
        for p in self.pairs:
            counts[p.verdict] = counts.get(p.verdict, 0) + 1
        tally = ", ".join(f"{counts[v]} {v}" for v in ("pass", "warn", "fail", "shape", "dtype")
                          if v in counts) or "none"
        lines = [f"<DiffResult {'agree' if self.agree else 'differ'}: {len(self.pairs)} pairs "
                 f"({tally}), unmatched {len(self.unmatched_ref)} ref / "
                 f"{len(self.unmatched_port)} port"]
        first = self.first_divergence
        if first is not None:
            lines.append(f"  first divergence: {first!r}")
            if first.profile is not None:
                lines.append(f"    where: {first.profile.where}")
            for h in first.hints:
                lines.append(f"    hint: {h}")
        if self.culprit is not None:
            c = self.culprit
            lines.append(f"  culprit: {c.kind} {c.port_module or '(top level)'}")
        if self.order_violation is not None:
            lines.append(f"  order differs at: {self.order_violation.ref}")
        return "\n".join(lines) + ">"


def _is_rules_text(rules):
    """A str is rules text when it has several lines, or spaces and names no file: a rule line
    always has a keyword and an argument, a path usually neither."""
    if "\n" in rules:
        return True
    return not os.path.exists(rules) and len(rules.split()) > 1


def _load_rules(L, rules):
    if rules is None:
        return None
    handle = ctypes.c_void_p()
    if isinstance(rules, str) and _is_rules_text(rules):
        _lib.check(L.nnp_rules_parse(rules.encode("utf-8"), b"<rules>", ctypes.byref(handle)))
    else:
        _lib.check(L.nnp_rules_load(os.fsencode(os.fspath(rules)), ctypes.byref(handle)))
    return handle


def _floats(ptr, n):
    return [ptr[i] for i in range(n)]


def _shape(ptr, n):
    return [int(ptr[i]) for i in range(n)]


def _metrics(p):
    m = p.metrics
    # the worst element's coordinates in the shape compared (row-major), as the report gives them
    idx, flat = [], m.max_index
    for k in reversed(range(min(p.ref_ndim, 64))):
        size = p.ref_shape[k]
        idx.append(flat % size if size else 0)
        flat = flat // size if size else 0
    kw = {n: int(getattr(m, n)) for n in _METRIC_COUNTS}
    kw.update({n: float(getattr(m, n)) for n in _METRIC_FLOATS + _METRIC_FLOATS_AFTER})
    return Metrics(max_index=idx[::-1], **kw)


def _profile(L, d, i):
    pr = L.nnp_diff_profile(d, i)
    if not pr:
        return None
    pr = pr.contents
    axes = []
    for a in range(pr.ndim):
        ax = pr.axes[a]
        axes.append(AxisProfile(_text(ax.name), int(ax.size), _floats(ax.sq_share, ax.size),
                                [int(x) for x in ax.fail[:ax.size]]))
    return Profile(_text(pr.where), int(pr.elements), bool(pr.sampled), int(pr.fail), axes)


def _hints(L, d, i):
    out = []
    for k in range(L.nnp_diff_hint_count(d, i)):
        h = L.nnp_diff_hint_at(d, i, k).contents
        out.append(Hint(_text(L.nnp_hint_kind_name(h.kind)), float(h.fit),
                        None if h.axis < 0 else int(h.axis),
                        None if h.axis2 < 0 else int(h.axis2), float(h.value), _text(h.text)))
    return out


def _record(L, dump, i):
    return L.nnp_dump_record(dump, i).contents


def _pairs(L, ref, port, d, rules):
    out = []
    for i in range(L.nnp_diff_pair_count(d)):
        p = L.nnp_diff_pair_at(d, i).contents
        r, q = _record(L, ref, p.ref), _record(L, port, p.port)
        verdict = _text(L.nnp_verdict_name(p.verdict))
        out.append(Pair(
            index=i, ref=_text(r.name), port=_text(q.name), ref_index=int(p.ref),
            port_index=int(p.port), ref_seq=int(r.seq), port_seq=int(q.seq),
            type=_text(r.module_type),
            component=_text(L.nnp_component_name(
                L.nnp_component_kind_of(rules, r.name, r.module_type))),
            verdict=verdict, evidence=_text(L.nnp_evidence_name(p.evidence)),
            confidence=float(p.confidence), aligned=bool(p.aligned), atol=float(p.atol),
            rtol=float(p.rtol), ref_dtype=_text(L.nnp_dtype_name(p.ref_dtype)),
            port_dtype=_text(L.nnp_dtype_name(p.port_dtype)),
            ref_shape=_shape(p.ref_shape, p.ref_ndim),
            port_shape=_shape(p.port_shape, p.port_ndim), adapters=_text(p.adapters),
            problem=_text(p.problem),
            port_parts=[_text(_record(L, port, p.parts[k]).name) for k in range(p.nparts)]
            if p.nparts > 1 else [_text(q.name)],
            metrics=None if verdict in _MISMATCH else _metrics(p),
            profile=_profile(L, d, i), hints=_hints(L, d, i)))
    return out


def _fmin(a, b):
    # C's fmin: a NaN operand is ignored
    return b if math.isnan(a) else a if math.isnan(b) else min(a, b)


def _fmax(a, b):
    return b if math.isnan(a) else a if math.isnan(b) else max(a, b)


def _components(pairs):
    """Per-component statistics over the compared pairs, as `nnparity diff` reports them."""
    stats = {}
    for p in pairs:
        c = stats.setdefault(p.component, {"pairs": 0, "compared": 0, "pass": 0, "warn": 0,
                                           "fail": 0, "rel": [math.inf, -math.inf, 0.0],
                                           "abs": -math.inf, "cos": math.inf})
        c["pairs"] += 1
        c["pass" if p.verdict == "pass" else "warn" if p.verdict == "warn" else "fail"] += 1
        m = p.metrics
        if m is None or m.finite == 0:
            continue
        c["compared"] += 1
        c["rel"] = [_fmin(c["rel"][0], m.rel_l2), _fmax(c["rel"][1], m.rel_l2),
                    c["rel"][2] + m.rel_l2]
        c["abs"] = _fmax(c["abs"], m.max_abs)
        c["cos"] = _fmin(c["cos"], m.cosine)
    out = {}
    # in the order of nnp_component_kind, as the report lists them
    for name in ("embedding", "attention", "mlp", "normalization", "head", "other"):
        if name not in stats:
            continue
        c = stats[name]
        n = c["compared"]
        out[name] = {"pairs": c["pairs"], "compared": n, "pass": c["pass"], "warn": c["warn"],
                     "fail": c["fail"],
                     "rel_l2_min": _number(c["rel"][0]) if n else None,
                     "rel_l2_mean": _number(c["rel"][2] / n) if n else None,
                     "rel_l2_max": _number(c["rel"][1]) if n else None,
                     "max_abs": _number(c["abs"]) if n else None,
                     "cosine_min": _number(c["cos"]) if n else None}
    return out


def _index(i):
    return None if i < 0 else int(i)


def _culprit(L, port, d):
    c = L.nnp_diff_culprit(d)
    if not c:
        return None
    c = c.contents

    def name(i):
        return None if i < 0 else _text(_record(L, port, i).name)

    return Culprit(_CULPRIT_KINDS.get(c.kind, "module"), _text(c.port_module) or "",
                   _text(c.ref_module) or "", name(c.after), name(c.before))


def _result(L, ref, port, d, rules):
    pairs = _pairs(L, ref, port, d, rules)
    first = _index(L.nnp_diff_first_divergence(d))
    reorder = _index(L.nnp_diff_order_violation(d))
    collisions = []
    for k in range(L.nnp_diff_collision_count(d)):
        c = L.nnp_diff_collision_at(d, k).contents
        collisions.append(Collision(_text(_record(L, port, c.port).name), _text(c.name),
                                    _text(_record(L, port, c.taken_by).name)))
    return DiffResult(
        ref=_text(L.nnp_dump_path(ref)), port=_text(L.nnp_dump_path(port)),
        agree=first is None and reorder is None, pairs=pairs, first_divergence_index=first,
        order_violation_index=reorder,
        nonfinite_origin_index=_index(L.nnp_diff_nonfinite_origin(d)),
        culprit=_culprit(L, port, d),
        unmatched_ref=[_text(_record(L, ref, L.nnp_diff_unmatched_ref_at(d, k)).name)
                       for k in range(L.nnp_diff_unmatched_ref_count(d))],
        unmatched_port=[_text(_record(L, port, L.nnp_diff_unmatched_port_at(d, k)).name)
                        for k in range(L.nnp_diff_unmatched_port_count(d))],
        aligned=int(L.nnp_diff_aligned_count(d)), collisions=collisions,
        components=_components(pairs))


def diff(ref, port, rules=None, atol=None, rtol=None, align=True, threads=0, explain=True):
    """Compare the dump at `port` with the reference dump at `ref`, as `nnparity diff` does,
    and return a DiffResult.

    rules: a rules file (a path), or rules text (a str of several lines, or one rule line;
    docs/rules.md). atol/rtol: the tolerances of every pair (None: by dtype; one given, the
    other is 0, as on the command line); a rule's tolerance wins. align=False: leave what names
    do not pair unmatched (--no-align). threads: 0 for one per CPU. explain=False: no profiles
    or hints (the diff reads each pair once).

    Raises NnparityError with the library's message (naming the file) on a missing or malformed
    dump or rules file."""
    L = _lib.lib()
    _lib.check_diff_layouts(L)
    if (atol is None) != (rtol is None):
        atol, rtol = atol or 0.0, rtol or 0.0
    opts = _lib.DiffOptions()
    L.nnp_diff_options_init(ctypes.byref(opts))
    opts.atol = -1.0 if atol is None else float(atol)
    opts.rtol = -1.0 if rtol is None else float(rtol)
    opts.threads = int(threads)
    opts.no_align = not align
    opts.no_explain = not explain
    rules_h = ref_h = port_h = diff_h = None
    try:
        rules_h = _load_rules(L, rules)
        opts.rules = rules_h
        ref_h, port_h = ctypes.c_void_p(), ctypes.c_void_p()
        _lib.check(L.nnp_dump_open_both(os.fsencode(os.fspath(ref)), os.fsencode(os.fspath(port)),
                                        ctypes.byref(ref_h), ctypes.byref(port_h)))
        # as the CLI: the diff checks what it reads as it reads it, and the rest is checked
        # before any result is trusted
        L.nnp_dump_defer_checks(ref_h)
        L.nnp_dump_defer_checks(port_h)
        diff_h = ctypes.c_void_p()
        _lib.check(L.nnp_diff_dumps(ref_h, port_h, ctypes.byref(opts), ctypes.byref(diff_h)))
        _lib.check(L.nnp_dump_finish_checks(ref_h))
        _lib.check(L.nnp_dump_finish_checks(port_h))
        return _result(L, ref_h, port_h, diff_h, rules_h)
    finally:
        L.nnp_diff_free(diff_h)
        L.nnp_dump_close(port_h)
        L.nnp_dump_close(ref_h)
        L.nnp_rules_free(rules_h)
