"""tf.data pipelines, validation split, image directories and their bad inputs."""
import numpy as np
import pytest

import tfmobile  # noqa: F401
from tfmobile import data
from tfmobile.errors import UserError


def _png(path, value, size=(12, 10), channels=1):
    import tensorflow as tf

    img = np.full((*size, channels), value, np.uint8)
    img[: size[0] // 2] = 255 - value  # not a constant image
    path.write_bytes(tf.io.encode_png(img).numpy())


def _tree(root, counts, **kw):
    for c, n in counts.items():
        d = root / c
        d.mkdir(parents=True)
        for i in range(n):
            _png(d / f"{i}.png", 10 * i + 5, **kw)


def test_validation_split_is_stratified_and_leaves_test_alone():
    d = data.load_fashion_mnist(subset=True)
    s = data.train_val_split(d, 0.1, seed=0)
    assert len(s.x_val) == 300 and len(s.x_train) == 2700
    assert np.bincount(s.y_val).tolist() == [30] * 10
    assert s.x_test is d.x_test
    # disjoint: no training image index appears in validation
    s2 = data.train_val_split(d, 0.1, seed=0)
    np.testing.assert_array_equal(s.y_val, s2.y_val)
    tr = {a.tobytes() for a in s.x_train}
    assert not any(a.tobytes() in tr for a in s.x_val)


def test_limit_is_stratified():
    d = data.load_fashion_mnist(subset=True)
    s = data.train_val_split(d, 0.2, limit=500)
    assert len(s.x_train) + len(s.x_val) == 500
    assert np.bincount(s.y_train).min() >= 35


def test_make_dataset_shapes_range_and_augmentation():
    d = data.load_fashion_mnist(subset=True)
    x, y = d.x_train[:64], d.y_train[:64]
    ev = list(data.make_dataset(x, y, (32, 32, 3), batch_size=32))
    assert len(ev) == 2
    xb, yb = ev[0]
    assert xb.shape == (32, 32, 32, 3) and xb.dtype.name == "float32"
    assert float(xb.numpy().min()) >= -1.0 and float(xb.numpy().max()) <= 1.0
    np.testing.assert_array_equal(yb.numpy(), y[:32])
    # eval pipeline == the tfmobile.data.preprocess convention (up to uint8 rounding of the resize)
    ref = data.preprocess(x[:32], (32, 32, 3))
    assert np.abs(ref - xb.numpy()).max() <= 1.0 / 127.5 + 1e-6
    # training pipeline shuffles and augments: same label multiset, different pixels
    tr = list(data.make_dataset(x, y, (32, 32, 3), batch_size=64, training=True, seed=1))[0]
    assert sorted(tr[1].numpy().tolist()) == sorted(y.tolist())
    assert tr[0].shape == (64, 32, 32, 3)
    order = np.argsort(tr[1].numpy(), kind="stable")
    plain = data.preprocess(x, (32, 32, 3))[np.argsort(y, kind="stable")]
    assert np.abs(tr[0].numpy()[order] - plain).mean() > 0.01


def test_grey_to_rgb_and_rgb_to_grey():
    x = np.random.default_rng(0).integers(0, 255, (4, 28, 28), dtype=np.uint8)
    r = data.resize_uint8(x, (32, 32, 3))
    assert r.shape == (4, 32, 32, 3)
    np.testing.assert_array_equal(r[..., 0], r[..., 2])
    g = data.resize_uint8(r, (32, 32, 1))
    assert g.shape == (4, 32, 32, 1)


def test_image_directory(tmp_path):
    _tree(tmp_path, {"cat": 5, "dog": 5, "emu": 5})
    d = data.load_image_dir(tmp_path, size=(16, 16), channels=3, test_fraction=0.2)
    assert d.class_names == ("cat", "dog", "emu")
    assert d.x_train.shape == (12, 16, 16, 3) and d.x_test.shape == (3, 16, 16, 3)
    assert np.bincount(d.y_test).tolist() == [1, 1, 1]
    assert d.x_train.dtype == np.uint8 and d.x_train.std() > 10
    # train/ and test/ subfolders are used as given
    root = tmp_path / "split"
    _tree(root / "train", {"a": 3, "b": 2})
    _tree(root / "test", {"a": 1, "b": 1})
    d2 = data.load_dataset(data_dir=str(root), image_size=(8, 8))
    assert len(d2.x_train) == 5 and len(d2.x_test) == 2 and d2.num_classes == 2


def test_image_directory_bad_inputs(tmp_path):
    with pytest.raises(UserError, match="no class subfolders"):
        data.load_image_dir(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _png(tmp_path / "a" / "x.png", 3)
    with pytest.raises(UserError, match="class 'b' .* has no images"):
        data.load_image_dir(tmp_path)
    (tmp_path / "b" / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(UserError, match="cannot decode image"):
        data.load_image_dir(tmp_path)
    with pytest.raises(UserError, match="not found"):
        data.load_image_dir(tmp_path / "nope")


def test_representative_dataset_real_images():
    d = data.load_fashion_mnist(subset=True)
    gen = data.representative_dataset(d.x_train, (32, 32, 3), n=5)
    batches = list(gen())
    assert len(batches) == 5 and batches[0][0].shape == (1, 32, 32, 3)
    assert batches[0][0].std() > 0.1


def test_shift_zero_keeps_only_the_flip():
    d = data.load_fashion_mnist(subset=True)
    x, y = d.x_train[:32], np.arange(32)           # labels = index, to find each image again
    tr = list(data.make_dataset(x, y, (32, 32, 3), batch_size=32, training=True, seed=2, shift=0.0,
                                augment="flip,shift"))[0]
    plain = data.preprocess(x, (32, 32, 3))
    flipped = 0
    for img, i in zip(tr[0].numpy(), tr[1].numpy()):
        same = np.abs(img - plain[i]).max() <= 1.0 / 127.5 + 1e-6
        mirrored = np.abs(img - plain[i][:, ::-1]).max() <= 1.0 / 127.5 + 1e-6
        assert same or mirrored
        flipped += int(mirrored and not same)
    assert 0 < flipped < 32
    with pytest.raises(UserError, match="shift"):
        data.make_dataset(x, y, (32, 32, 3), training=True, shift=0.6)


def test_calibration_images_from_a_directory_match_training_images(tmp_path):
    """Calibration images of a user's image directory are decoded and resized exactly as the
    training pipeline decodes the same files (a different resize would shift int8 ranges)."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    for c, n in {"a": 3, "b": 2}.items():
        (tmp_path / c).mkdir()
        for i in range(n):   # noise: PIL's bilinear resize (the old calibration loader) differs on it
            noise = rng.integers(0, 256, (12, 10, 3)).astype(np.uint8)
            (tmp_path / c / f"{i}.png").write_bytes(tf.io.encode_png(noise).numpy())
    train_images = data.load_image_dir(tmp_path, size=(7, 5), channels=3, test_fraction=0.0).x_train
    calib = data.image_dir_sample(tmp_path, (7, 5, 3), n=100)
    assert calib.shape == (5, 7, 5, 3) and calib.dtype == np.float32
    np.testing.assert_array_equal(calib, data.preprocess(train_images, (7, 5, 3)))
    assert len(data.image_dir_sample(tmp_path, (7, 5, 3), n=2, seed=1)) == 2


def test_sample_images_is_a_seeded_choice_of_the_given_images_preprocessed():
    from tfmobile import data

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(40, 28, 28), dtype=np.uint8)
    every = data.preprocess(images, (32, 32, 3))
    a = data.sample_images(images, (32, 32, 3), n=10, seed=3)
    assert a.shape == (10, 32, 32, 3) and a.dtype == np.float32
    picked = [int(np.argmin(np.abs(every - x).reshape(40, -1).max(axis=1))) for x in a]
    assert all(np.array_equal(a[i], every[j]) for i, j in enumerate(picked))
    assert len(set(picked)) == 10                                  # without replacement
    assert np.array_equal(a, data.sample_images(images, (32, 32, 3), n=10, seed=3))
    assert not np.array_equal(a, data.sample_images(images, (32, 32, 3), n=10, seed=4))
    assert data.sample_images(images, (32, 32, 3), n=100).shape[0] == 40
    gen = data.representative_dataset(images, (32, 32, 3), n=10, seed=3)
    assert np.array_equal(np.concatenate([b[0] for b in gen()]), a)
