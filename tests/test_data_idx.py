import gzip

import numpy as np
import pytest

from tfmobile import data
from tfmobile.data.idx import read_idx, write_idx
from tfmobile.errors import UserError


def test_idx_roundtrip(tmp_path):
    a = (np.arange(2 * 5 * 7) % 251).astype(np.uint8).reshape(2, 5, 7)
    write_idx(tmp_path / "a.gz", a)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.gz"), a)


def test_corrupt_idx_is_a_user_error(tmp_path):
    p = tmp_path / "bad.gz"
    p.write_bytes(gzip.compress(b"\x00\x00\x08\x03" + b"\x00\x00\x00\x02" * 3 + b"\x01"))
    with pytest.raises(UserError, match="corrupt IDX"):
        read_idx(p)
    (tmp_path / "junk").write_bytes(b"hello")
    with pytest.raises(UserError, match="bad magic"):
        read_idx(tmp_path / "junk")


def test_shipped_subset_is_real_and_stratified():
    d = data.load_fashion_mnist(subset=True)
    assert d.x_train.shape == (3000, 28, 28) and d.x_test.shape == (1000, 28, 28)
    assert np.bincount(d.y_train).tolist() == [300] * 10
    assert np.bincount(d.y_test).tolist() == [100] * 10
    assert d.x_train.std() > 50  # real images, not a constant fill


def test_preprocess_range_and_channels():
    x = np.array([[[0, 255], [128, 64]]], dtype=np.uint8)
    y = data.preprocess(x, (4, 4, 3))
    assert y.shape == (1, 4, 4, 3) and y.dtype == np.float32
    assert y.min() >= -1.0 and y.max() <= 1.0
    np.testing.assert_array_equal(y[..., 0], y[..., 2])
