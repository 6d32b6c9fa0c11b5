"""nnparity's PyTorch bridge: capture every layer of a model into a dump, inject a reference's
layer inputs into a port, tap tensors inside forward code, load dumps back as tensors, and diff
two dumps into Python objects. Pure Python over libnnparity.so (ctypes); see python/README.md."""
from ._lib import NnparityError, NotFoundError
from ._version import __version__
from ._session import tap
from .auto import auto
from .capture import capture
from .dump import Dump, RecordInfo, load
from .inject import inject
from .results import DiffResult, Pair, diff

__all__ = ["capture", "inject", "auto", "tap", "load", "Dump", "RecordInfo", "NnparityError",
           "NotFoundError", "diff", "DiffResult", "Pair"]
