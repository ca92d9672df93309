"""Data sets: the leakage check sees the same images across dtypes."""
import numpy as np
import pytest

from edgeprof.data import check_disjoint, load_npz
from edgeprof.errors import InputError


def test_leakage_check_sees_float_copies_of_uint8_images(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (6, 4, 4, 1), dtype=np.uint8)
    np.savez(tmp_path / "eval.npz", x=x)
    np.savez(tmp_path / "calib.npz", x=(x[:2].astype(np.float32) / 255.0))
    np.savez(tmp_path / "other.npz", x=np.full((3, 4, 4, 1), 0.5, np.float32))
    with pytest.raises(InputError, match="2 calibration rows also appear"):
        check_disjoint(load_npz(tmp_path / "calib.npz"), load_npz(tmp_path / "eval.npz"))
    check_disjoint(load_npz(tmp_path / "other.npz"), load_npz(tmp_path / "eval.npz"))
