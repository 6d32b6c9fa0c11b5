#!/usr/bin/env python3
"""fs_hostile.py - every read-side command of nnparity over hostile file systems.

Builds a sandbox of what a user's disk can hold besides good files: symlinks to /dev/zero, to
directories, dangling and in loops; FIFOs; device nodes (mknod, as root; skipped otherwise);
files of /proc and /sys whose size lies; empty and sparse files; shard directories, indexes
and rank captures that mix these in; a capture path that two writers race for and a partial
capture whose journal is a FIFO; and files that another process truncates and restores while
nnparity reads them. Then it runs `ls`, `stats`, `diff`, `convert`, `weights`, `relevance`
and `recover` over them (meant for the AddressSanitizer + UBSan build) and checks, for every
run, the property:

  - it ends within a time bound with exit 0 or 1, or with exit 2 and one line on stderr that
    starts "nnparity: ";
  - no sanitizer report;
  - no file outside the command's requested output is created, removed or changed (the
    sandbox, the output directory, the working directory and TMPDIR are compared entry by
    entry before and after, links and FIFOs by lstat, never followed or opened);
  - its peak resident size stays under a bound.

The short mode (what `make check` runs) points six commands at each entry, every command at
every other entry or more, in about half a minute under the sanitizers. The long mode (`make
fuzz`) points every command at every entry, then runs random commands over random entries for
--seconds, while a mutator thread renames hostile entries over good ones and back (a file replaced by a FIFO or a
link between the check and the use) and truncates files under the readers.

    /usr/bin/python3 tests/fs_hostile.py --bin build/asan/nnparity --lib build/libnnparity.so
    /usr/bin/python3 tests/fs_hostile.py --long --seconds 600 --seed 7 --bin ... --lib ...

The last line is "fs_hostile: N passed, N failed"; the exit code is 0 when none failed.
"""
import argparse
import json
import os
import random
import shutil
import stat
import struct
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFORMANCE = Path(os.environ.get("NNP_CONFORMANCE", ROOT / "tests" / "conformance"))

SANITIZER_WORDS = ("AddressSanitizer", "LeakSanitizer", "UndefinedBehaviorSanitizer",
                   "runtime error:", "ThreadSanitizer")
SHRANK = "shrank while it was being read"

# A capture through the C API that records one tensor, says so, and waits to be killed.
WRITER = textwrap.dedent("""
    import ctypes, sys
    lib = ctypes.CDLL(sys.argv[1])
    lib.nnp_capture_open.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
    lib.nnp_tap.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint32,
                            ctypes.POINTER(ctypes.c_uint64), ctypes.c_void_p]
    ok = lib.nnp_capture_open(sys.argv[2].encode(), None) == 0
    shape = (ctypes.c_uint64 * 1)(4)
    buf = (ctypes.c_float * 4)(1, 2, 3, 4)
    ok = ok and lib.nnp_tap(b"layer", b"out0", 2, 1, shape, buf) == 0
    print("ready" if ok else "refused", flush=True)
    sys.stdin.read()
""")


# ---- files ----

def safetensors_bytes(tensors):
    """{name: (dtype, shape, raw bytes)} laid out as the reference writer does."""
    header, blobs, off = {}, [], 0
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - (8 + len(text)) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def f32(values):
    return struct.pack(f"<{len(values)}f", *values)


def attention(n, heads, seed):
    """[1, heads, n, n] rows that sum to 1, for relevance."""
    rng = random.Random(seed)
    vals = []
    for _ in range(heads * n):
        row = [rng.random() + 0.01 for _ in range(n)]
        s = sum(row)
        vals += [v / s for v in row]
    return ("F32", [1, heads, n, n], f32(vals))


def good_dump(seed=0):
    return safetensors_bytes({
        "blocks.0.attn/attn_probs": attention(5, 2, seed),
        "blocks.1.attn/attn_probs": attention(5, 2, seed + 1),
        "w": ("F32", [4, 4], f32([float(i) for i in range(16)])),
    })


def sparse_dump(path, tensors, mib):
    """A valid safetensors file of `tensors` float32 tensors of `mib` MiB each, all zeros, as a
    hole: it costs no disk and reads as fast as pages can be mapped."""
    n = mib << 20
    header = {f"t{i}": {"dtype": "F32", "shape": [n // 4], "data_offsets": [i * n, (i + 1) * n]}
              for i in range(tensors)}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - (8 + len(text)) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        f.truncate(8 + len(text) + tensors * n)


class Sandbox:
    """The hostile directory tree; `inputs` lists what commands are pointed at."""

    def __init__(self, base, lib, long_mode):
        self.s = base / "s"
        self.out = base / "out"
        self.s.mkdir()
        self.out.mkdir()
        self.lib = lib
        self.long = long_mode
        self.notes = []
        self.writers = []
        self.inputs = []
        self.shrinking = []  # files the truncation thread changes

    def link(self, name, target):
        os.symlink(target, self.s / name)
        return self.s / name

    def fifo(self, name):
        os.mkfifo(self.s / name)
        return self.s / name

    def build(self):
        s = self.s
        (s / "good.safetensors").write_bytes(good_dump())
        (s / "good2.safetensors").write_bytes(good_dump(seed=5))
        shutil.copy(CONFORMANCE / "numpy" / "stored.npz", s / "good.npz")
        shutil.copy(CONFORMANCE / "torch" / "state_dict.pt", s / "good.pt")
        self.good = s / "good.safetensors"
        (s / "dirs" / "sub").mkdir(parents=True)
        (s / "dirs" / "sub" / "inside.safetensors").write_bytes(good_dump(seed=9))
        (s / "dir.safetensors").mkdir()
        (s / "empty.safetensors").write_bytes(b"")
        huge = s / "sparse_1tib.safetensors"
        with open(huge, "wb") as f:
            f.truncate(1 << 40)  # a header length of 0 then a terabyte of holes
        entries = [
            self.link("to_zero.safetensors", "/dev/zero"),
            self.link("to_null.npz", "/dev/null"),
            self.link("to_urandom.pt", "/dev/urandom"),
            self.link("to_dir.safetensors", "dirs/sub"),
            self.link("to_root", "/"),
            self.link("dangling.safetensors", "nowhere/at/all.safetensors"),
            self.link("loop_a.safetensors", "loop_b.safetensors"),
            self.link("loop_b.safetensors", "loop_a.safetensors"),
            self.link("self_loop.pt", "self_loop.pt"),
            self.fifo("fifo.safetensors"),
            self.link("to_fifo.pt", "fifo.safetensors"),
            self.link("proc_status.safetensors", "/proc/self/status"),
            self.link("proc_mem.pt", "/proc/self/mem"),
            s / "dir.safetensors", s / "empty.safetensors", huge, s / "dirs",
        ]
        for sysfile in ("/sys/kernel/mm/transparent_hugepage/enabled", "/sys/power/state"):
            if os.path.exists(sysfile):
                entries.append(self.link("sys_file.safetensors", sysfile))
                break
        if os.geteuid() == 0:
            for name, kind, major, minor in (("chr_zero.safetensors", stat.S_IFCHR, 1, 5),
                                             ("chr_null.npz", stat.S_IFCHR, 1, 3),
                                             ("blk_loop.pt", stat.S_IFBLK, 7, 0)):
                try:
                    os.mknod(s / name, kind | 0o600, os.makedev(major, minor))
                    entries.append(s / name)
                except OSError as e:
                    self.notes.append(f"mknod {name}: {e.strerror}; device nodes skipped")
                    break
        else:
            self.notes.append("not root: no device nodes (mknod) made")
        entries += self.shard_dirs()
        entries += self.indexes()
        entries += self.captures()
        entries += self.shrinkers()
        self.inputs = entries

    def shard_dirs(self):
        s = self.s
        dirs = []
        d = s / "shards_fifo"
        d.mkdir()
        (d / "model-00001-of-00002.safetensors").write_bytes(good_dump())
        os.mkfifo(d / "model-00002-of-00002.safetensors")
        dirs.append(d)
        d = s / "shards_links"
        d.mkdir()
        (d / "a.safetensors").write_bytes(good_dump())
        os.symlink("/dev/zero", d / "b.safetensors")
        os.symlink("gone.safetensors", d / "c.safetensors")
        os.symlink("d.safetensors", d / "d.safetensors")
        (d / "e.safetensors").mkdir()
        dirs.append(d)
        d = s / "shards_loop"
        d.mkdir()
        os.symlink("..", d / "up")
        os.symlink("up/shards_loop/x.safetensors", d / "x.safetensors")
        dirs.append(d)
        d = s / "ranks"
        d.mkdir()
        (d / "rank-0-of-2.safetensors").write_bytes(good_dump())
        os.symlink("/dev/zero", d / "rank-1-of-2.safetensors")
        dirs.append(d)
        d = s / "ranks_fifo"
        d.mkdir()
        (d / "rank-0-of-2.safetensors").write_bytes(good_dump())
        os.mkfifo(d / "rank-1-of-2.safetensors")
        dirs.append(d)
        return dirs

    def indexes(self):
        s = self.s
        d = s / "idx"
        d.mkdir()
        (d / "ok.safetensors").write_bytes(safetensors_bytes(
            {"a": ("F32", [2], f32([1, 2]))}))
        os.mkfifo(d / "fifo.safetensors")
        os.symlink("/dev/zero", d / "zero.safetensors")
        os.symlink("loop.safetensors", d / "loop.safetensors")
        (d / "sub.safetensors").mkdir()
        out = []
        for name, shard in (("fifo", "fifo.safetensors"), ("zero", "zero.safetensors"),
                            ("loop", "loop.safetensors"), ("dir", "sub.safetensors"),
                            ("escape", "../good.safetensors"), ("absolute", "/etc/passwd"),
                            ("proc", "/proc/self/status"), ("missing", "none.safetensors")):
            index = d / f"{name}.safetensors.index.json"
            index.write_text(json.dumps({"metadata": {}, "weight_map": {
                "a": "ok.safetensors", "b": shard}}))
            out.append(index)
        os.mkfifo(d / "fifo_index.safetensors.index.json")
        out.append(d / "fifo_index.safetensors.index.json")
        os.symlink("/dev/zero", d / "zero_index.safetensors.index.json")
        out.append(d / "zero_index.safetensors.index.json")
        return out

    def start_writer(self, path):
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("NNPARITY_", "ASAN_", "UBSAN_", "LSAN_"))}
        p = subprocess.Popen([sys.executable, "-c", WRITER, str(self.lib), str(path)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.writers.append(p)
        return p

    def captures(self):
        """Two writers race for one capture path (the second is refused, or is first); a capture
        killed mid-way whose journal then becomes a FIFO, a link to /dev/zero, a directory."""
        s = self.s
        out = []
        d = s / "cap"
        d.mkdir()
        target = d / "x.safetensors"
        a, b = self.start_writer(target), self.start_writer(target)
        said = sorted([a.stdout.readline().strip(), b.stdout.readline().strip()])
        if said != ["ready", "refused"]:
            raise SystemExit(f"fs_hostile: two writers to one path said {said}, not one ready "
                             "and one refused")
        out += [target, d / "x.safetensors.partial", d / "x.safetensors.journal"]
        for kind in ("fifo", "zero", "dir"):
            d = s / f"killed_{kind}"
            d.mkdir()
            p = self.start_writer(d / "y.safetensors")
            if p.stdout.readline().strip() != "ready":
                raise SystemExit("fs_hostile: a capture could not start")
            p.kill()
            p.wait()
            journal = d / "y.safetensors.journal"
            journal.unlink()
            if kind == "fifo":
                os.mkfifo(journal)
            elif kind == "zero":
                os.symlink("/dev/zero", journal)
            else:
                journal.mkdir()
            out += [d / "y.safetensors", d / "y.safetensors.partial"]
        return out

    def shrinkers(self):
        s = self.s
        big = s / "shrinking.safetensors"
        sparse_dump(big, 4, 16 if not self.long else 64)
        npz = s / "shrinking.npz"
        shutil.copy(s / "good.npz", npz)
        pt = s / "shrinking.pt"
        shutil.copy(s / "good.pt", pt)
        self.shrinking = [big, npz, pt]
        return list(self.shrinking)

    def close(self):
        for p in self.writers:
            p.kill()
            p.wait()


# ---- snapshots ----

def entry(path):
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        return ("link", os.readlink(path))
    if stat.S_ISREG(st.st_mode):
        return ("file", st.st_ino, st.st_size, st.st_mtime_ns, st.st_mode)
    if stat.S_ISDIR(st.st_mode):
        return ("dir", st.st_ino, st.st_mode)
    return ("other", st.st_ino, st.st_rdev, st.st_mode)


def snapshot(roots, skip=()):
    """Every entry under the roots by path, without following links."""
    out = {}
    for root in roots:
        stack = [Path(root)]
        while stack:
            p = stack.pop()
            try:
                out[str(p)] = entry(p)
            except FileNotFoundError:
                continue
            if out[str(p)][0] == "dir":
                try:
                    stack += [Path(e.path) for e in os.scandir(p)]
                except OSError:
                    pass
    return {k: v for k, v in out.items() if k not in skip}


def allowed(path, outputs, shrank):
    for o in outputs:
        o = str(o)
        if path == o or path.startswith(o + "/"):
            return True
        # an output not yet renamed into place when a file shrank under the reader (SIGBUS)
        if shrank and path.startswith(o + ".") and path.endswith(".tmp"):
            return True
    return False


# ---- runs ----

class Runner:
    def __init__(self, args, box, workdir, tmpdir):
        self.bin = args.bin
        self.box = box
        self.cwd = workdir
        self.tmpdir = tmpdir
        self.timeout = args.timeout
        self.max_rss = args.max_rss_mib
        self.passed = 0
        self.failed = 0
        self.peak_rss = 0
        self.slowest = 0.0
        self.lock = threading.Lock()
        self.env = dict(os.environ)
        self.env["TMPDIR"] = str(tmpdir)
        # a sanitizer report ends the run with these codes, whatever the environment said
        self.env["ASAN_OPTIONS"] = (self.env.get("ASAN_OPTIONS", "") +
                                    ":detect_leaks=1:abort_on_error=0:exitcode=86").lstrip(":")
        self.env["UBSAN_OPTIONS"] = (self.env.get("UBSAN_OPTIONS", "") +
                                     ":print_stacktrace=1:halt_on_error=1:exitcode=87").lstrip(":")
        self.env.pop("NO_COLOR", None)
        self.logdir = Path(tempfile.mkdtemp(prefix="fs_hostile_log_"))

    def short_commands(self, x, n, k):
        """Six of them for entry k: every command, with its variants taken in turn."""
        every = self.commands(x, n)
        return [every[k % 2], every[2], every[3 + k % 2], every[5], every[6 + k % 2], every[8]]

    def commands(self, x, n):
        """The read-side commands over input x; outputs under the output directory."""
        out = self.box.out / f"o{n}"
        good = self.box.good
        return [
            (["ls", x], []),
            (["ls", "--json", "--meta", x], []),
            (["stats", "-j", "2", x], []),
            (["diff", "-j", "2", good, x], []),
            (["diff", x, good], []),
            (["convert", x, f"{out}.safetensors"], [f"{out}.safetensors"]),
            (["weights", x, good], []),
            (["relevance", "--attn", "attn_probs$", "--grid", "2x2", "--out", out, x], [out]),
            (["recover", x], recover_outputs(x)),
        ]

    def run(self, argv, outputs, skip=()):
        roots = [self.box.s, self.box.out, self.cwd, self.tmpdir]
        before = snapshot(roots, skip)
        argv = [str(a) for a in argv]
        with open(self.logdir / "out", "w+b") as out, open(self.logdir / "err", "w+b") as err:
            t0 = time.monotonic()
            p = subprocess.Popen([self.bin] + argv, stdin=subprocess.DEVNULL, stdout=out,
                                 stderr=err, cwd=self.cwd, env=self.env)
            timer = threading.Timer(self.timeout, p.kill)
            timer.start()
            _, status, usage = os.wait4(p.pid, 0)
            timer.cancel()
            p.returncode = os.waitstatus_to_exitcode(status)  # reaped here, with its rusage
            took = time.monotonic() - t0
            err.seek(0)
            stderr = err.read().decode("utf-8", "replace")
        rc = p.returncode
        rss = usage.ru_maxrss // 1024
        after = snapshot(roots, skip)
        problems = []
        if took >= self.timeout:
            problems.append(f"no end within {self.timeout} s (killed)")
        elif rc < 0:
            problems.append(f"killed by signal {-rc}")
        elif rc not in (0, 1, 2):
            problems.append(f"exit {rc}")
        if any(w in stderr for w in SANITIZER_WORDS):
            problems.append("sanitizer report")
        if rc == 2:
            lines = stderr.splitlines()
            if len(lines) != 1 or not lines[0].startswith("nnparity: "):
                problems.append("exit 2 without exactly one 'nnparity: ' line on stderr")
        if rss > self.max_rss:
            problems.append(f"peak RSS {rss} MiB over {self.max_rss} MiB")
        shrank = SHRANK in stderr
        changed = sorted(k for k in before.keys() | after.keys()
                         if before.get(k) != after.get(k) and not allowed(k, outputs, shrank))
        if changed:
            problems.append("changed outside its output: " + ", ".join(changed[:5]))
        with self.lock:
            self.peak_rss = max(self.peak_rss, rss)
            self.slowest = max(self.slowest, took)
            if problems:
                self.failed += 1
                print(f"FAIL nnparity {' '.join(argv)}\n  " + "\n  ".join(problems) +
                      f"\n  exit {rc}, {took:.2f} s, {rss} MiB; stderr:\n    " +
                      "\n    ".join(stderr.splitlines()[:20]), flush=True)
            else:
                self.passed += 1
        # outputs of this run go, so that later runs start from the same tree
        for o in outputs:
            o = Path(o)
            if o.is_dir() and not o.is_symlink() and str(o).startswith(str(self.box.out)):
                shutil.rmtree(o)
            elif str(o).startswith(str(self.box.out)):
                o.unlink(missing_ok=True)
        for leftover in self.box.out.glob("*.tmp"):
            leftover.unlink()
        return rc


def recover_outputs(x):
    x = str(x)
    final = x[:-len(".partial")] if x.endswith(".partial") else x
    return [final, final + ".partial", final + ".journal"]


class Mutator(threading.Thread):
    """Truncates the shrinking files and restores them, over and over; in the long mode also
    renames hostile entries over good ones and back."""

    def __init__(self, box, rng, swap):
        super().__init__(daemon=True)
        self.box = box
        self.rng = rng
        self.swap = swap
        self.stop = threading.Event()
        self.sizes = {p: p.stat().st_size for p in box.shrinking}
        self.saved = {p: p.read_bytes() for p in box.shrinking if p.stat().st_size < 1 << 20}

    def run(self):
        while not self.stop.is_set():
            p = self.rng.choice(self.box.shrinking)
            size = self.sizes[p]
            os.truncate(p, self.rng.randrange(0, size))
            self.stop.wait(self.rng.uniform(0.001, 0.03))
            if p in self.saved:
                p.write_bytes(self.saved[p])
            else:
                os.truncate(p, size)  # a hole again: the same zeros
            if self.swap:
                self.swap_once()
            self.stop.wait(self.rng.uniform(0.001, 0.03))
        for p in self.box.shrinking:
            if p in self.saved:
                p.write_bytes(self.saved[p])
            else:
                os.truncate(p, self.sizes[p])

    def swap_once(self):
        """A good file replaced by a hostile entry for a moment (rename is atomic)."""
        s = self.box.s
        victim = s / "swap.safetensors"
        if not victim.exists():
            victim.write_bytes(good_dump())
        hostile = s / "swap_hostile"
        kind = self.rng.choice(["fifo", "zero", "dir", "loop"])
        if kind == "fifo":
            os.mkfifo(hostile)
        elif kind == "zero":
            os.symlink("/dev/zero", hostile)
        elif kind == "dir":
            hostile.mkdir()
        else:
            os.symlink("swap_hostile", hostile)
        keep = s / "swap.keep"
        os.replace(victim, keep)
        os.replace(hostile, victim) if kind != "dir" else os.rename(hostile, victim)
        self.stop.wait(self.rng.uniform(0.001, 0.02))
        if victim.is_dir() and not victim.is_symlink():
            victim.rmdir()
        else:
            victim.unlink()
        os.replace(keep, victim)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=str(ROOT / "build" / "asan" / "nnparity"))
    ap.add_argument("--lib", default=str(ROOT / "build" / "libnnparity.so"))
    ap.add_argument("--long", action="store_true", help="random runs for --seconds after the cases")
    ap.add_argument("--seconds", type=float, default=600)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--timeout", type=float, default=60, help="seconds a run may take")
    ap.add_argument("--max-rss-mib", type=int, default=1024)
    args = ap.parse_args()
    args.bin, args.lib = (str(Path(f).resolve()) for f in (args.bin, args.lib))
    for f in (args.bin, args.lib):
        if not os.path.exists(f):
            print(f"fs_hostile: {f} is missing; build it first", file=sys.stderr)
            print("fs_hostile: 0 passed, 1 failed")
            return 1
    seed = args.seed if args.seed is not None else int(time.time())
    rng = random.Random(seed)
    base = Path(tempfile.mkdtemp(prefix="fs_hostile_"))
    box = Sandbox(base, args.lib, args.long)
    runner = None
    try:
        box.build()
        workdir, tmpdir = base / "cwd", base / "tmp"
        workdir.mkdir()
        tmpdir.mkdir()
        runner = Runner(args, box, workdir, tmpdir)
        for note in box.notes:
            print(f"fs_hostile: {note}")
        t0 = time.monotonic()
        # every command over every entry, each once; the shrinking files under the mutator
        mutator = Mutator(box, rng, swap=False)
        mutator.start()
        skip = {str(p) for p in box.shrinking}
        n = 0
        for k, x in enumerate(box.inputs):
            every = runner.commands(x, n) if args.long else runner.short_commands(x, n, k)
            for argv, outputs in every:
                runner.run(argv, outputs, skip)
                n += 1
        mutator.stop.set()
        mutator.join()
        # the first writer is gone: its capture recovers, into its own path only
        box.close()
        cap = box.s / "cap" / "x.safetensors"
        if runner.run(["recover", cap], recover_outputs(cap)) != 0:
            runner.failed += 1
            print(f"FAIL recover of {cap} after its writer died did not succeed")
        short_s = time.monotonic() - t0
        if args.long:
            mutator = Mutator(box, rng, swap=True)
            mutator.start()
            skip |= {str(box.s / n) for n in ("swap.safetensors", "swap.keep", "swap_hostile")}
            inputs = box.inputs + [box.s / "swap.safetensors"]
            end = time.monotonic() + args.seconds
            while time.monotonic() < end:
                x = rng.choice(inputs)
                argv, outputs = rng.choice(runner.commands(x, n))
                runner.run(argv, outputs, skip)
                n += 1
            mutator.stop.set()
            mutator.join()
        print(f"fs_hostile: seed {seed}, {len(box.inputs)} entries, {n} runs "
              f"(cases {short_s:.1f} s), slowest run {runner.slowest:.2f} s, peak RSS "
              f"{runner.peak_rss} MiB")
    finally:
        box.close()
        shutil.rmtree(base, ignore_errors=True)
        if runner:
            shutil.rmtree(runner.logdir, ignore_errors=True)
    print(f"fs_hostile: {runner.passed} passed, {runner.failed} failed")
    return 1 if runner.failed else 0


if __name__ == "__main__":
    sys.exit(main())
