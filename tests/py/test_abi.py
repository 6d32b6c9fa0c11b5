"""The library's ABI as a binding sees it: the soname carries the major version, the bridge
checks the library's version and the layouts of the structs it declares when it loads it, and
refuses a library built from another header."""
import ctypes
import subprocess

import pytest

import nnparity
from nnparity import _lib
from conftest import LIB, ROOT


def header_version():
    text = (ROOT / "include" / "nnparity.h").read_text()
    parts = {}
    for key in ("MAJOR", "MINOR", "PATCH"):
        line = next(l for l in text.splitlines() if l.startswith(f"#define NNP_VERSION_{key} "))
        parts[key] = int(line.split()[-1])
    return parts["MAJOR"], parts["MINOR"], parts["PATCH"]


def test_version_number_matches_header_and_string():
    major, minor, patch = header_version()
    L = _lib.lib()
    assert L.nnp_version_number() == major * 10000 + minor * 100 + patch
    assert L.nnp_version().decode() == f"{major}.{minor}.{patch}"
    assert (_lib.API_MAJOR, _lib.API_MINOR) == (major, minor)


def test_soname_carries_the_major_version():
    major = header_version()[0]
    out = subprocess.run(["readelf", "-d", LIB], capture_output=True, text=True, check=True).stdout
    assert f"Library soname: [libnnparity.so.{major}]" in out


def test_only_public_symbols_are_exported_in_a_version_node():
    out = subprocess.run(["nm", "-D", "--defined-only", LIB], capture_output=True, text=True,
                         check=True).stdout
    names = [line.split()[-1] for line in out.splitlines() if " T " in line]
    assert names and all(n.startswith("nnp_") and not n.startswith("nnp__") for n in names)
    major = header_version()[0]
    assert all(n.endswith(f"@@NNPARITY_{major}") for n in names), names[:5]


@pytest.mark.parametrize("struct", [_lib.Record, _lib.TapDesc, _lib.CaptureOptions])
def test_bridge_structs_match_the_library(struct):
    # check_layout raises when a field's offset or the size differs
    _lib.check_layout(_lib.lib(), struct)


def test_a_struct_that_drifted_is_refused():
    class Drifted(ctypes.Structure):
        _c_name = "nnp_capture_options"
        _fields_ = [("size", ctypes.c_size_t), ("inject_path", ctypes.c_char_p),
                    ("expected_records", ctypes.c_size_t), ("rules_path", ctypes.c_char_p),
                    ("rank", ctypes.c_int), ("world_size", ctypes.c_int)]

    with pytest.raises(nnparity.NnparityError, match=r"nnp_capture_options differs .*"
                                                     r"expected_records 16 != 24"):
        _lib.check_layout(_lib.lib(), Drifted)


def test_an_unknown_field_is_refused():
    class Unknown(ctypes.Structure):
        _c_name = "nnp_record"
        _fields_ = [("no_such_field", ctypes.c_int)]

    with pytest.raises(nnparity.NnparityError, match=r"does not know nnp_record\.no_such_field"):
        _lib.check_layout(_lib.lib(), Unknown)


class _FakeLib:
    def __init__(self, number):
        self.path = "/fake/libnnparity.so.0"
        self.number = number

        class Dll:
            nnp_version_number = True
        self.dll = Dll()

    def nnp_version_number(self):
        return self.number


@pytest.mark.parametrize("number", [10000, 100, 0])
def test_another_major_or_an_older_minor_is_refused(number):
    with pytest.raises(nnparity.NnparityError, match=r"/fake/libnnparity.so.0 is libnnparity"):
        _lib.check_version(_FakeLib(number))


def test_a_later_minor_is_accepted():
    _lib.check_version(_FakeLib(_lib.API_MAJOR * 10000 + (_lib.API_MINOR + 1) * 100))
