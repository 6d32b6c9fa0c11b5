"""The package's version: always the libnnparity version it was written against
(NNP_VERSION_STRING of include/nnparity.h), which tests/py/test_install.py checks. The bridge
loads a library of this major version and at least this minor one (_lib.check_version)."""
__version__ = "0.7.2"
