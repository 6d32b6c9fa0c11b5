"""setup.py - what pyproject.toml cannot say: which libnnparity the built package will load.

- Built by `make install` (NNPARITY_LIBDIR set): the package records that directory in
  nnparity/_install.py and loads the library installed there.
- Built from a tree where `make` has run (the library in NNPARITY_BUILD, by default the
  repository's build/): the package carries a copy of libnnparity.so.MAJOR, so that a venv
  needs nothing else. Such a wheel is marked as platform-specific.
- Otherwise the package is pure Python and loads the system's library (ctypes.util).
NNPARITY_LIB still overrides all of these when the package is imported (nnparity/_lib.py).
Scratch files go to NNPARITY_BUILD/python rather than into this directory."""
import os
import re
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

HERE = Path(__file__).resolve().parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "nnparity" / "_version.py").read_text())[1]
SONAME = f"libnnparity.so.{VERSION.split('.')[0]}"
LIBDIR = os.environ.get("NNPARITY_LIBDIR")
BUILD = Path(os.environ.get("NNPARITY_BUILD") or HERE.parent / "build")


def library_to_carry():
    if LIBDIR:
        return None
    lib = BUILD / SONAME
    if lib.is_file():
        return lib
    if os.environ.get("NNPARITY_BUILD"):
        raise SystemExit(f"NNPARITY_BUILD={BUILD} holds no {SONAME}: run make first")
    return None


CARRIED = library_to_carry()


class BuildPy(build_py):
    """The package's files, then the library or the record of where it is installed."""

    def run(self):
        # start clean: a copy or a record from an earlier build must not slip into this one
        shutil.rmtree(Path(self.build_lib) / "nnparity", ignore_errors=True)
        super().run()
        target = Path(self.build_lib) / "nnparity"
        if LIBDIR:
            (target / "_install.py").write_text(
                '"""Where `make install` put libnnparity (written when the package was built)."""\n'
                f"LIBDIR = {LIBDIR!r}\n")
        if CARRIED:
            shutil.copy(CARRIED, target / SONAME)


class PlatformDistribution(Distribution):
    """A package that carries the library is a binary one (a wheel tagged for this platform)."""

    def has_ext_modules(self):
        return CARRIED is not None


scratch = {}
if BUILD.is_dir():
    (BUILD / "python").mkdir(exist_ok=True)
    scratch = {"build": {"build_base": str(BUILD / "python")},
               "egg_info": {"egg_base": str(BUILD / "python")}}

setup(cmdclass={"build_py": BuildPy}, distclass=PlatformDistribution, options=scratch)
