"""Verdicts that see small tensors: a layer whose values all lie far below the float32 atol
(layer scales of 1e-6, small initializations multiplied through a network) must still fail when
it is 1% off, while float32 rounding noise, an all-zero reference and a user's own tolerances
keep their meaning."""
import json

import numpy as np

from conftest import write_safetensors

RNG = np.random.default_rng(11)


def pair(nnp, tmp_path, ref, port, *extra):
    write_safetensors(tmp_path / "ref.safetensors", {"x/out0": ref})
    write_safetensors(tmp_path / "port.safetensors", {"x/out0": port})
    p = nnp("diff", "--json", *extra, tmp_path / "ref.safetensors", tmp_path / "port.safetensors")
    assert p.returncode in (0, 1), p.stderr
    doc = json.loads(p.stdout)
    return p.returncode, doc["pairs"][0]


def small(scale):
    return (RNG.standard_normal((4, 64, 8)) * scale).astype(np.float32)


def test_one_percent_off_fails_however_small_the_values(nnp, tmp_path):
    for scale in (1e-14, 1e-8, 4e-4):
        ref = small(scale)
        rc, p = pair(nnp, tmp_path, ref, ref * np.float32(1.01))
        if scale < 1e-5:  # every element within atol: the elementwise test alone passes it
            assert p["metrics"]["allclose_fail"] == 0
        assert rc == 1 and p["verdict"] == "fail", (scale, p["metrics"]["rel_l2"])


def test_float32_rounding_noise_passes_at_any_scale(nnp, tmp_path):
    for scale in (1e-14, 1e-8, 1.0):
        exact = RNG.standard_normal((4, 64, 8)) * scale
        # the same values summed in another order: a few ulps of float32 apart
        ref = exact.astype(np.float32)
        port = (exact * (1 + RNG.standard_normal(exact.shape) * 3e-7)).astype(np.float32)
        rc, p = pair(nnp, tmp_path, ref, port)
        assert rc == 0 and p["verdict"] == "pass", (scale, p["metrics"]["rel_l2"])


def test_all_zero_reference_is_judged_by_its_elements(nnp, tmp_path):
    ref = np.zeros((16, 16), np.float32)
    rc, p = pair(nnp, tmp_path, ref, np.full_like(ref, 1e-9))
    assert rc == 0 and p["verdict"] == "pass"
    rc, p = pair(nnp, tmp_path, ref, np.full_like(ref, 1e-3))
    assert rc == 1 and p["verdict"] == "fail"


def test_user_tolerances_scale_the_bound(nnp, tmp_path):
    """The bound is ten times the pair's rtol, the user's when given."""
    ref = small(1e-8)
    args = ("--atol", "1e-6", "--rtol", "0.02")
    rc, p = pair(nnp, tmp_path, ref, ref * np.float32(1.1), *args)
    assert rc == 0 and p["verdict"] == "pass" and p["rtol"] == 0.02
    # half as large again: every element still within atol 1e-6, the whole 0.5 off
    rc, p = pair(nnp, tmp_path, ref, ref * np.float32(1.5), *args)
    assert p["metrics"]["allclose_fail"] == 0
    assert rc == 1 and p["verdict"] == "fail"


def test_noise_in_a_tensor_of_large_values_passes_and_a_wrong_element_does_not(nnp, tmp_path):
    """Summation noise scales with the tensor, not with the element: it lands on the elements
    near zero too, where atol + rtol x |ref| is small."""
    ref = (RNG.standard_normal((8, 64, 32)) * 4.5).astype(np.float32)
    noise = (RNG.standard_normal(ref.shape) * 2e-5).astype(np.float32)
    rc, p = pair(nnp, tmp_path, ref, ref + noise)
    assert p["metrics"]["allclose_fail"] * 1000 > p["metrics"]["count"]  # once a failure
    assert rc == 0 and p["verdict"] == "pass"
    port = ref.copy()
    port[3, 7, 5] += np.float32(0.5)
    rc, p = pair(nnp, tmp_path, ref, port)
    assert rc == 0 and p["verdict"] == "warn" and p["metrics"]["allclose_fail"] == 1
    port[:, :, 5] += np.float32(0.05)
    rc, p = pair(nnp, tmp_path, ref, port)
    assert rc == 1 and p["verdict"] == "fail"
    # a NaN on both sides is no noise: the elements decide
    ref[0, 0, 0] = port[0, 0, 0] = np.nan
    rc, p = pair(nnp, tmp_path, ref, ref + noise)
    assert p["verdict"] == "fail"
