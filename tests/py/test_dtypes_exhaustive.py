"""Every 8- and 16-bit pattern of F16, BF16, F8_E4M3 and F8_E5M2 converted by libnnparity,
against an independent computation: numpy's float16, torch's bfloat16, and the fp8 formulas
evaluated here with exact rational arithmetic."""
import ctypes
from fractions import Fraction

import numpy as np
import pytest
import torch

from conftest import LIB

DTYPE = {"F16": 3, "BF16": 4, "F8_E4M3": 5, "F8_E5M2": 6}  # enum nnp_dtype


@pytest.fixture(scope="module")
def lib():
    if not LIB.exists():
        pytest.fail(f"{LIB} is not built")
    lib = ctypes.CDLL(str(LIB))
    lib.nnp_convert_to_f64.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t,
                                       ctypes.c_void_p]
    lib.nnp_convert_to_f32.argtypes = lib.nnp_convert_to_f64.argtypes
    lib.nnp_dtype_name.restype = ctypes.c_char_p
    for name, value in DTYPE.items():
        assert lib.nnp_dtype_name(value).decode() == name
    return lib


def convert(lib, dtype, bits):
    out64 = np.empty(bits.size, np.float64)
    out32 = np.empty(bits.size, np.float32)
    lib.nnp_convert_to_f64(DTYPE[dtype], bits.ctypes.data, bits.size, out64.ctypes.data)
    lib.nnp_convert_to_f32(DTYPE[dtype], bits.ctypes.data, bits.size, out32.ctypes.data)
    return out64, out32


def assert_same(got, want):
    nan = np.isnan(want)
    assert np.array_equal(np.isnan(got), nan)
    # bit-exact, signed zeros included
    assert np.array_equal(got[~nan].view(np.uint64), want[~nan].view(np.uint64))


def test_f16_all_patterns(lib):
    bits = np.arange(65536, dtype=np.uint16)
    got64, got32 = convert(lib, "F16", bits)
    want = bits.view(np.float16).astype(np.float64)
    assert_same(got64, want)
    assert_same(got32.astype(np.float64), want)
    assert np.isnan(want).sum() == 2046 and np.isinf(want).sum() == 2


def test_bf16_all_patterns(lib):
    bits = np.arange(65536, dtype=np.uint16)
    got64, got32 = convert(lib, "BF16", bits)
    want = torch.from_numpy(bits.view(np.int16)).view(torch.bfloat16).to(torch.float64).numpy()
    assert_same(got64, want)
    assert_same(got32.astype(np.float64), want)


def fp8_formula(b, exp_bits, man_bits, bias, ieee_specials):
    sign = -1 if b >> 7 else 1
    e = (b >> man_bits) & ((1 << exp_bits) - 1)
    m = b & ((1 << man_bits) - 1)
    if ieee_specials and e == (1 << exp_bits) - 1:
        return sign * float("inf") if m == 0 else float("nan")
    if not ieee_specials and e == (1 << exp_bits) - 1 and m == (1 << man_bits) - 1:
        return float("nan")
    if e == 0:
        v = Fraction(m, 1 << man_bits) * Fraction(2) ** (1 - bias)
    else:
        v = (1 + Fraction(m, 1 << man_bits)) * Fraction(2) ** (e - bias)
    return float(sign * v) if v != 0 else (-0.0 if sign < 0 else 0.0)


@pytest.mark.parametrize("dtype,exp_bits,man_bits,bias,ieee", [
    ("F8_E4M3", 4, 3, 7, False), ("F8_E5M2", 5, 2, 15, True)])
def test_fp8_all_patterns(lib, dtype, exp_bits, man_bits, bias, ieee):
    bits = np.arange(256, dtype=np.uint8)
    got64, got32 = convert(lib, dtype, bits)
    want = np.array([fp8_formula(int(b), exp_bits, man_bits, bias, ieee) for b in bits])
    assert_same(got64, want)
    assert_same(got32.astype(np.float64), want)
    if dtype == "F8_E4M3":
        assert np.flatnonzero(np.isnan(want)).tolist() == [0x7f, 0xff]
        assert np.nanmax(want) == 448.0
    else:
        assert np.nanmax(want[np.isfinite(want)]) == 57344.0


def nnp_convert(lib, x, to):
    lib.nnp_convert.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int,
                                ctypes.c_void_p]
    out = np.empty(x.size, np.uint16)
    assert lib.nnp_convert(1, x.ctypes.data, x.size, DTYPE[to], out.ctypes.data) == 0
    return out


def test_rounding_to_f16_and_bf16(lib):
    """Doubles to F16 and BF16 round to nearest even straight from double, as numpy's float16
    does; BF16 against torch on values exact in float32 (torch rounds through float)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(200_000) * 10.0 ** rng.integers(-9, 6, 200_000)
    edges = [65504, 65519.99, 65520, 1e9, -1e9, 0.0, -0.0, np.inf, -np.inf, 5.96e-8, 2.98e-8,
             2.9802322387695312e-08, 1e-40, 3.4e38, 3.4e39, 1.0009765625, 1.00048828125]
    x = np.concatenate([x, edges])
    with np.errstate(over="ignore"):
        want16 = x.astype(np.float16).view(np.uint16)
        x32 = x.astype(np.float32).astype(np.float64)
    assert np.array_equal(nnp_convert(lib, x, "F16"), want16)
    want_bf = torch.from_numpy(x32.astype(np.float32)).to(torch.bfloat16).view(torch.int16)
    assert np.array_equal(nnp_convert(lib, x32, "BF16"), want_bf.numpy().view(np.uint16))
    # every half value survives the round trip through double
    bits = np.arange(65536, dtype=np.uint16)
    as64, _ = convert(lib, "F16", bits)
    back = nnp_convert(lib, as64, "F16")
    finite = ~np.isnan(as64)
    assert np.array_equal(back[finite], bits[finite])
    assert np.all(np.isnan(bits[~finite].view(np.float16)))
    assert np.all((back[~finite] & 0x7e00) == 0x7e00)  # NaN stays a quiet NaN
