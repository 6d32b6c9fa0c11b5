"""Outputs are created safely: the temporary files a dump or a report is built in are created
exclusively and never through a symbolic link planted under their name (its target would be
truncated), and the final rename replaces only a regular file or nothing (a capture to a FIFO or
a device must not replace the node). Each refusal is one line naming the file and why, exit
status 2, and nothing else touched."""
import json
import os
import subprocess

import numpy as np
import pytest

from conftest import BIN, write_safetensors

pytestmark = pytest.mark.cli

TINY = BIN.parent / "examples" / "tiny_mlp"


def run(*args, env=None):
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, errors="replace",
                          timeout=60, env=env)


def one_line(p, prefix):
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    lines = p.stderr.splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith(prefix), lines[0]
    return lines[0][len(prefix):]


@pytest.fixture
def victim(tmp_path):
    v = tmp_path / "victim"
    v.write_bytes(b"precious")
    return v


def capture(out, env_var=False):
    """tiny_mlp recording into out, by argument or through NNPARITY_CAPTURE."""
    if env_var:
        return run(TINY, env=dict(os.environ, NNPARITY_CAPTURE=str(out))), "nnparity: "
    return run(TINY, out), "tiny_mlp: "


@pytest.mark.parametrize("suffix", [".partial", ".journal"])
def test_capture_does_not_follow_a_planted_link(tmp_path, victim, suffix):
    out = tmp_path / "x.safetensors"
    link = tmp_path / ("x.safetensors" + suffix)
    os.symlink(victim, link)
    p, prefix = capture(out)
    assert one_line(p, prefix + f"{link}: ") == \
        "exists and is a symbolic link, not a file an earlier capture left: not replaced " \
        "(remove it)"
    assert victim.read_bytes() == b"precious"
    assert os.path.islink(link) and not out.exists()
    # the writer's other file was its own, and is gone with the refused capture
    assert sorted(os.listdir(tmp_path)) == sorted(["victim", link.name])


@pytest.mark.parametrize("env_var", [False, True], ids=["argument", "environment"])
@pytest.mark.parametrize("how", ["fifo", "link_to_fifo"])
def test_capture_to_a_fifo_is_refused_not_replaced(tmp_path, env_var, how):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    out = fifo if how == "fifo" else tmp_path / "out.safetensors"
    if how == "link_to_fifo":
        os.symlink(fifo, out)
    p, prefix = capture(out, env_var)
    assert one_line(p, prefix + f"{out}: ") == \
        "not a regular file (a FIFO); a dump is written to a regular file and renamed over it: " \
        "not replaced"
    assert not (tmp_path / (out.name + ".partial")).exists()
    assert not (tmp_path / (out.name + ".journal")).exists()
    import stat
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    if how == "link_to_fifo":
        assert os.path.islink(out)


def test_capture_to_a_device_is_refused(tmp_path):
    # a device node of our own when this runs as root; /dev/null through a link otherwise
    dev = tmp_path / "null"
    try:
        os.mknod(dev, 0o666 | 0o020000, os.makedev(1, 3))
    except (PermissionError, OSError):
        os.symlink("/dev/null", dev)
    before = os.stat(dev)
    p, prefix = capture(dev)
    assert "not a regular file (a character device)" in one_line(p, prefix + f"{dev}: ")
    after = os.stat(dev)
    assert (before.st_ino, before.st_rdev) == (after.st_ino, after.st_rdev)


def test_stale_regular_partial_is_replaced(tmp_path):
    out = tmp_path / "x.safetensors"
    (tmp_path / "x.safetensors.partial").write_bytes(b"left by a killed run")
    p, _ = capture(out)
    assert p.returncode == 0, p.stderr
    assert out.exists() and not (tmp_path / "x.safetensors.partial").exists()


def test_hard_linked_partial_is_not_truncated(tmp_path, victim):
    out = tmp_path / "x.safetensors"
    os.link(victim, tmp_path / "x.safetensors.partial")
    p, prefix = capture(out)
    assert "it has other names (hard links)" in one_line(
        p, prefix + f"{tmp_path / 'x.safetensors.partial'}: ")
    assert victim.read_bytes() == b"precious"


def test_convert_does_not_follow_a_planted_partial(tmp_path, victim):
    src = tmp_path / "in.safetensors"
    write_safetensors(src, {"a": np.ones(2, np.float32)})
    out = tmp_path / "out.safetensors"
    os.symlink(victim, tmp_path / "out.safetensors.partial")
    p = run(BIN, "convert", src, out)
    one_line(p, f"nnparity: {tmp_path / 'out.safetensors.partial'}: ")
    assert victim.read_bytes() == b"precious" and not out.exists()


def test_report_temporary_is_not_a_planted_link(tmp_path, victim):
    d = tmp_path / "d.safetensors"
    write_safetensors(d, {"a": np.ones(2, np.float32)})
    report = tmp_path / "r.json"
    # the fixed temporary name earlier versions used: a link there must not be written through
    os.symlink(victim, tmp_path / "r.json.tmp")
    p = run(BIN, "diff", d, d, "--json-file", report)
    assert p.returncode == 0, p.stderr
    assert victim.read_bytes() == b"precious"
    assert json.loads(report.read_text())["schema"].startswith("nnparity.")
    assert sorted(os.listdir(tmp_path)) == ["d.safetensors", "r.json", "r.json.tmp", "victim"]


def test_report_through_a_link_replaces_its_target(tmp_path):
    d = tmp_path / "d.safetensors"
    write_safetensors(d, {"a": np.ones(2, np.float32)})
    target = tmp_path / "target.json"
    os.symlink(target, tmp_path / "r.json")
    p = run(BIN, "diff", d, d, "--json-file", tmp_path / "r.json")
    assert p.returncode == 0, p.stderr
    assert os.path.islink(tmp_path / "r.json")
    assert json.loads(target.read_text())["schema"].startswith("nnparity.")


def test_report_mode_follows_umask(tmp_path):
    d = tmp_path / "d.safetensors"
    write_safetensors(d, {"a": np.ones(2, np.float32)})
    p = run("sh", "-c", f'umask 022 && exec "{BIN}" diff "{d}" "{d}" --json-file '
                        f'"{tmp_path / "r.json"}"')
    assert p.returncode == 0, p.stderr
    assert os.stat(tmp_path / "r.json").st_mode & 0o777 == 0o644
