"""`make install` and what an installed nnparity offers its users: the C library through
pkg-config (shared and static) and through CMake's find_package, the Python package in a venv
and under the prefix, the CLI, its man pages and its bash completion; DESTDIR staging, and
`make uninstall` leaving nothing behind.

The tree is installed once per session from the build the other tests use (BUILD, else the
directory of NNPARITY_BIN), into a temporary prefix. Every installed program runs with an
environment that holds no LD_LIBRARY_PATH, PYTHONPATH or NNPARITY_* variable: it must find
the library by itself. Not marked `cli`: once per `make check` is enough."""
import os
import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import BIN, ROOT

BUILD = (ROOT / os.environ["BUILD"]).resolve() if os.environ.get("BUILD") else BIN.parent
PYTHON = "/usr/bin/python3"  # the interpreter Debian's packages (torch, setuptools) are for

# An environment without anything that would find the library for a program.
CLEAN_ENV = {k: v for k, v in os.environ.items()
             if not k.startswith(("NNPARITY_", "LD_", "PYTHON", "PKG_CONFIG", "MAKE", "MFLAGS",
                                  "CMAKE_"))}


def header_version():
    text = (ROOT / "include" / "nnparity.h").read_text()
    return tuple(int(re.search(rf"^#define NNP_VERSION_{k} (\d+)$", text, re.M)[1])
                 for k in ("MAJOR", "MINOR", "PATCH"))


def sh(args, cwd=None, env=None, timeout=300, **kw):
    """Run a command; fail the test with its output when it fails."""
    p = subprocess.run([str(a) for a in args], cwd=cwd, env=env or CLEAN_ENV, text=True,
                       capture_output=True, timeout=timeout, **kw)
    assert p.returncode == 0, f"{' '.join(map(str, args))}: exit {p.returncode}\n" \
                              f"{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p


def make(*targets, **variables):
    return sh(["make", "--no-print-directory", "-C", ROOT, f"BUILD={BUILD}", *targets,
               *(f"{k}={v}" for k, v in variables.items())])


def files_under(top):
    """Every file and link under `top`, relative to it (compiled Python left out)."""
    top = Path(top)
    return {str(p.relative_to(top)) for p in top.rglob("*")
            if (p.is_file() or p.is_symlink()) and "__pycache__" not in p.parts}


def python_dir(prefix):
    """Where `make install` puts the Python package for a prefix other than /usr/local."""
    return sh([PYTHON, "-c", "import sysconfig, sys; print(sysconfig.get_path('purelib', "
               "'posix_prefix', {'base': sys.argv[1], 'platbase': sys.argv[1]}))", prefix]
              ).stdout.strip()


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    if not (BUILD / "nnparity").exists():
        pytest.fail(f"{BUILD} is not built")
    tmp = tmp_path_factory.mktemp("install")
    prefix = tmp / "prefix"
    log = make("install", PREFIX=prefix).stdout
    major, minor, patch = header_version()
    return SimpleNamespace(tmp=tmp, prefix=prefix, log=log, major=major, minor=minor,
                           version=f"{major}.{minor}.{patch}",
                           pydir=Path(python_dir(prefix)))


def commands():
    """The commands `nnparity --help` lists (its "commands:" block), `help` left out."""
    out = sh([BIN, "--help"]).stdout
    block = out.split("\ncommands:\n", 1)[1].split("\n\n", 1)[0]
    return [m[1] for m in re.finditer(r"^  (\S+)\s", block, re.M) if m[1] != "help"]


def leading_options(text):
    """The option names at the start of an entry: '-j, --threads N  threads' -> -j, --threads."""
    names = []
    for word in text.split():
        if not word.startswith("-"):
            break
        names.append(word.rstrip(","))
    return names


def help_options(command):
    """Every option of a command's --help entries (lines "  -x, --name ARG  description")."""
    out = sh([BIN, command, "--help"]).stdout
    return {o for line in out.splitlines() if re.match(r"^  -", line)
            for o in leading_options(line)}


# --- what is installed where ------------------------------------------------------------------

def test_installs_library_headers_cli_and_integration_files(installed):
    p, major = installed.prefix, installed.major
    expected = {
        "bin/nnparity", f"lib/libnnparity.so.{major}", "lib/libnnparity.so", "lib/libnnparity.a",
        "include/nnparity.h", "lib/pkgconfig/nnparity.pc",
        "lib/cmake/nnparity/nnparityConfig.cmake",
        "lib/cmake/nnparity/nnparityConfigVersion.cmake",
        "share/bash-completion/completions/nnparity", "share/man/man1/nnparity.1",
        *(f"share/man/man1/nnparity-{c}.1" for c in commands()),
    }
    if (ROOT / "include" / "nnparity.hpp").exists():
        expected.add("include/nnparity.hpp")
    if (BUILD / "libnnparity_mpi.so").exists():
        expected.add("lib/nnparity/libnnparity_mpi.so")
    pyrel = str(installed.pydir.relative_to(p))
    got = files_under(p)
    assert {f for f in got if not f.startswith(pyrel + "/")} == expected
    assert {f"{pyrel}/nnparity/__init__.py", f"{pyrel}/nnparity/_install.py",
            f"{pyrel}/nnparity-{installed.version}.dist-info/METADATA"} <= got
    # the development link names the soname, which the library carries
    assert os.readlink(p / "lib" / "libnnparity.so") == f"libnnparity.so.{major}"
    dyn = sh(["readelf", "-d", p / "lib" / f"libnnparity.so.{major}"]).stdout
    assert f"Library soname: [libnnparity.so.{major}]" in dyn
    # the installed CLI needs nothing from the environment (it links the static library)
    assert sh([p / "bin" / "nnparity", "--version"], cwd=installed.tmp).stdout.strip() == \
        f"nnparity {installed.version}"


def test_destdir_stages_the_final_paths_and_uninstall_removes_everything(tmp_path):
    stage = tmp_path / "stage"
    before = files_under(ROOT / "python")
    make("install", DESTDIR=stage, PREFIX="/usr/local")
    assert [p.name for p in stage.iterdir()] == ["usr"]
    assert [p.name for p in (stage / "usr").iterdir()] == ["local"]
    local = stage / "usr" / "local"
    # the files name where they will be, not where they were staged
    pc = (local / "lib" / "pkgconfig" / "nnparity.pc").read_text()
    assert "prefix=/usr/local\n" in pc and str(stage) not in pc
    cmake = (local / "lib" / "cmake" / "nnparity" / "nnparityConfig.cmake").read_text()
    assert '"/usr/local/lib"' in cmake and str(stage) not in cmake
    record = next(local.rglob("nnparity/_install.py")).read_text()
    assert "LIBDIR = '/usr/local/lib'" in record
    # building the Python package left nothing in the source tree
    assert files_under(ROOT / "python") == before

    make("uninstall", DESTDIR=stage, PREFIX="/usr/local")
    assert files_under(stage) == set()


def test_system_libdir_gets_no_rpath(tmp_path):
    """Under /usr the dynamic linker finds the library itself: no rpath in what links it."""
    make("install", DESTDIR=tmp_path, PREFIX="/usr", INSTALL_PYTHON="no")
    pc = (tmp_path / "usr" / "lib" / "pkgconfig" / "nnparity.pc").read_text()
    assert "Libs: -L${libdir} -lnnparity\n" in pc
    cmake = (tmp_path / "usr" / "lib" / "cmake" / "nnparity" / "nnparityConfig.cmake").read_text()
    assert 'set(_nnparity_rpath "")' in cmake
    make("uninstall", DESTDIR=tmp_path, PREFIX="/usr", INSTALL_PYTHON="no")
    assert files_under(tmp_path) == set()


# --- C and C++ consumers --------------------------------------------------------------------

CONSUMER = ROOT / "tests" / "install"


def pkg_config_env(prefix):
    return dict(CLEAN_ENV, PKG_CONFIG_PATH=str(prefix / "lib" / "pkgconfig"))


def test_pkg_config_links_the_shared_library(installed):
    env, out = pkg_config_env(installed.prefix), installed.tmp / "pc-shared"
    out.mkdir()
    assert sh(["pkg-config", "--modversion", "nnparity"], env=env).stdout.strip() == \
        installed.version
    flags = sh(["pkg-config", "--cflags", "--libs", "nnparity"], env=env).stdout.split()
    sh(["cc", "-std=c11", "-Wall", "-Werror", CONSUMER / "consumer.c", *flags, "-o",
        out / "consumer"], env=env)
    dyn = sh(["readelf", "-d", out / "consumer"]).stdout
    assert f"[libnnparity.so.{installed.major}]" in dyn
    runpath = re.search(r"\(RUNPATH\).*", dyn)
    assert runpath and f"{installed.prefix}/lib" in runpath[0], dyn
    run = sh([out / "consumer", out], cwd=out)
    assert run.stdout == f"nnparity {installed.version}: 2 records, a/out0 [2, 3] ok\n"


def test_pkg_config_static_flags_link_a_static_program(installed):
    """--static adds what libnnparity.a needs (Libs.private, Requires.private)."""
    env, out = pkg_config_env(installed.prefix), installed.tmp / "pc-static"
    out.mkdir()
    flags = sh(["pkg-config", "--static", "--cflags", "--libs", "nnparity"], env=env).stdout.split()
    sh(["cc", "-static", "-std=c11", CONSUMER / "consumer.c", *flags, "-o", out / "consumer"],
       env=env)
    assert "NEEDED" not in sh(["readelf", "-d", out / "consumer"]).stdout
    run = sh([out / "consumer", out], cwd=out)
    assert run.stdout == f"nnparity {installed.version}: 2 records, a/out0 [2, 3] ok\n"


def test_cmake_find_package_builds_cpp_and_static_consumers(installed):
    build, inst = installed.tmp / "cmake-build", installed.tmp / "cmake-inst"
    sh(["cmake", "-S", CONSUMER, "-B", build, f"-DCMAKE_PREFIX_PATH={installed.prefix}",
        f"-DNNPARITY_VERSION={installed.major}.{installed.minor}"])
    sh(["cmake", "--build", build, "-j2"])
    assert sh([build / "consumer_cpp", build], cwd=build).stdout == \
        f"nnparity {installed.version} from C++: 1 records ok\n"
    assert sh([build / "consumer_static", build], cwd=build).stdout == \
        f"nnparity {installed.version}: 2 records, a/out0 [2, 3] ok\n"
    # installed elsewhere, the program still finds the library (the target's rpath)
    sh(["cmake", "--install", build, "--prefix", inst])
    assert "1 records ok" in sh([inst / "bin" / "consumer_cpp", build], cwd=build).stdout


def test_cmake_version_rule_is_same_major(installed):
    major, minor = installed.major, installed.minor
    wants = {f"{major}.0": True, f"{major}.{minor}": True, installed.version: True,
             f"{major}.{minor + 1}": False, f"{major + 1}.0": False,
             f"{major}.0...{major + 1}.0": True, f"{major}.0...<{installed.version}": False}
    project = installed.tmp / "cmake-version"
    project.mkdir()
    (project / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.19)\nproject(v C)\n" + "".join(
            f'find_package(nnparity {w} QUIET)\nmessage(STATUS "{w}: ${{nnparity_FOUND}}")\n'
            "unset(nnparity_FOUND)\n" for w in wants))
    out = sh(["cmake", "-S", project, "-B", project / "b",
              f"-DCMAKE_PREFIX_PATH={installed.prefix}"]).stdout
    found = dict(re.findall(r"^-- (\S+): (\d)$", out, re.M))
    assert {w: found[w] == "1" for w in wants} == wants


def test_cpp_port_example_builds_and_runs_against_the_installed_package(installed):
    """examples/cpp_port, a C++ engine on nnparity.hpp, as its README builds it."""
    example = ROOT / "examples" / "cpp_port"
    if not (example / "CMakeLists.txt").exists():
        pytest.skip("examples/cpp_port is not in this tree")
    build = installed.tmp / "cpp-port"
    sh(["cmake", "-S", example, "-B", build, f"-DCMAKE_PREFIX_PATH={installed.prefix}"])
    sh(["cmake", "--build", build, "-j2"])
    program = build / "cpp_port"
    assert f"[libnnparity.so.{installed.major}]" in sh(["readelf", "-d", program]).stdout
    sh([program, "--out", "ref.safetensors"], cwd=build)
    sh([program, "--bad", "--out", "bad.safetensors"], cwd=build)
    sh([program, "--diff", "ref.safetensors", "ref.safetensors"], cwd=build)
    bad = subprocess.run([program, "--diff", "ref.safetensors", "bad.safetensors"], cwd=build,
                         env=CLEAN_ENV, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1, (bad.stdout, bad.stderr)


# --- Python -----------------------------------------------------------------------------------

def test_python_package_version_is_the_library_version():
    text = (ROOT / "python" / "nnparity" / "_version.py").read_text()
    assert re.search(r'__version__ = "([^"]+)"', text)[1] == "%d.%d.%d" % header_version(), \
        "python/nnparity/_version.py must follow NNP_VERSION_* of include/nnparity.h"


def test_pip_install_in_a_venv_finds_its_library(tmp_path):
    """The package built from a built tree carries the library: the venv needs nothing else."""
    venv = tmp_path / "venv"
    before = files_under(ROOT / "python")
    # Debian's pip, run by the venv's interpreter, installs into the venv as a copy of its own
    # would; making that copy (ensurepip) takes seconds.
    sh([PYTHON, "-m", "venv", "--system-site-packages", "--without-pip", venv])
    # NNPARITY_BUILD names this build when it is not the repository's build/ (build time only)
    sh([venv / "bin" / "python", "-m", "pip", "install", "--no-build-isolation", "--no-index",
        "--disable-pip-version-check", "--quiet", ROOT / "python"],
       env=dict(CLEAN_ENV, NNPARITY_BUILD=str(BUILD)))
    assert files_under(ROOT / "python") == before
    code = ("import torch, nnparity, nnparity._lib as L\n"
            "m = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU())\n"
            "with torch.no_grad(), nnparity.capture(m, 'm.safetensors'):\n"
            "    m(torch.ones(1, 2))\n"
            "print(nnparity.__version__, L.lib().nnp_version().decode(), len(nnparity.load("
            "'m.safetensors')), L.lib().path)\n")
    out = sh([venv / "bin" / "python", "-c", code], cwd=tmp_path).stdout.split()
    version = "%d.%d.%d" % header_version()
    assert out[:2] == [version, version]
    assert int(out[2]) >= 4  # in and out of the Sequential, the Linear, the ReLU
    site = sh([venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_path("
               "'platlib'))"]).stdout.strip()
    assert out[3] == f"{site}/nnparity/libnnparity.so.{header_version()[0]}"


def test_installed_python_package_loads_the_installed_library(installed):
    code = ("import sys; sys.path.insert(0, sys.argv[1])\n"
            "import nnparity, nnparity._lib as L\n"
            "print(nnparity.__file__, nnparity.__version__, L.lib().path)\n")
    out = sh([PYTHON, "-c", code, installed.pydir], cwd=installed.tmp).stdout.split()
    assert out == [str(installed.pydir / "nnparity" / "__init__.py"), installed.version,
                   str(installed.prefix / "lib" / f"libnnparity.so.{installed.major}")]


# --- man pages and completion -----------------------------------------------------------------

def rendered(page, width=200):
    env = dict(CLEAN_ENV, MANWIDTH=str(width), LC_ALL="C.UTF-8")
    return sh(["man", "-l", "-P", "cat", page], env=env).stdout


def section(text, name):
    """A rendered man page's section: from its heading to the next one."""
    m = re.search(rf"^{name}\n(.*?)(?=^\S|\Z)", text, re.M | re.S)
    return m[1] if m else ""


def test_man_pages_render_and_list_the_options_of_help(installed):
    man1 = installed.prefix / "share" / "man" / "man1"
    for command in commands():
        page = man1 / f"nnparity-{command}.1"
        warnings = sh(["groff", "-man", "-Tutf8", "-ww", "-z", page]).stderr
        assert warnings == "", f"{page.name}: {warnings}"
        text = rendered(page)
        assert re.search(rf"^NAME\n\s+nnparity-{command} - \S", text, re.M), text[:300]
        assert f"nnparity {command}" in section(text, "SYNOPSIS")
        in_man = {o for line in section(text, "OPTIONS").splitlines()
                  if re.match(r"^ {7}-", line) for o in leading_options(line)}
        assert in_man == help_options(command), page.name
    top = rendered(man1 / "nnparity.1")
    for command in commands():
        assert f"nnparity-{command}(1)" in section(top, "SEE ALSO")
        assert re.search(rf"^ {{7}}{command}\b", section(top, "COMMANDS"), re.M)
    # found by name under the prefix's man directory
    env = dict(CLEAN_ENV, MANWIDTH="100")
    assert "nnparity-diff" in sh(["man", "-M", installed.prefix / "share" / "man", "-P", "cat",
                                  "nnparity-diff"], env=env).stdout


def test_bash_completion_offers_commands_and_each_commands_options(installed):
    script = installed.prefix / "share" / "bash-completion" / "completions" / "nnparity"
    sh(["bash", "-n", script])
    cmds = commands()
    probe = ['source "$1"', "complete_words() {",
             '  COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMPREPLY=(); _nnparity',
             '  echo "${COMPREPLY[*]}"', "}", "complete_words nnparity ''",
             "complete_words nnparity help ''"]
    probe += [f"complete_words nnparity {c} -" for c in cmds]
    out = sh(["bash", "-c", "\n".join(probe), "probe", script]).stdout.splitlines()
    assert set(out[0].split()) >= set(cmds) | {"help", "--help", "--version"}
    assert set(out[1].split()) == set(cmds)
    for command, line in zip(cmds, out[2:]):
        assert set(line.split()) == help_options(command) | {"-h", "--help"}, command


@pytest.mark.skipif(not shutil.which("mpirun") or not (BUILD / "libnnparity_mpi.so").exists(),
                    reason="no mpirun, or the MPI plugin is not built (no mpicc)")
def test_installed_cli_finds_its_mpi_plugin(installed):
    # `diff --mpi` from the installed CLI loads PREFIX/lib/nnparity/libnnparity_mpi.so, with
    # nothing in the environment naming it
    import numpy as np
    from conftest import write_safetensors
    d = installed.tmp / "mpi"
    d.mkdir()
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    write_safetensors(d / "r.safetensors", {"a/out0": x})
    write_safetensors(d / "p.safetensors", {"a/out0": x})
    env = {k: v for k, v in os.environ.items() if not k.startswith("NNPARITY")}
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1")
    p = subprocess.run([shutil.which("mpirun"), "--oversubscribe", "-np", "2",
                        str(installed.prefix / "bin" / "nnparity"), "diff", "--mpi",
                        d / "r.safetensors", d / "p.safetensors"],
                       capture_output=True, text=True, timeout=120, env=env, cwd=d)
    assert p.returncode == 0, p.stderr
    assert "the port agrees with the reference" in p.stdout
