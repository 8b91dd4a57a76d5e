"""Fashion-MNIST, the embedded real dataset: from --data_dir, the Debian package, or the repo subset.

The subset (stratified, a few thousand real images) ships inside the package so the main job runs
on a fresh machine with no download; the full set comes from the Debian package
``dataset-fashion-mnist`` or any directory of the four IDX files.
"""
import os
from dataclasses import dataclass

import numpy as np

from tfmobile.data.idx import find_idx, read_idx, write_idx
from tfmobile.errors import UserError

DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
SUBSET_DIR = os.path.join(os.path.dirname(__file__), "fashion_mnist_subset")
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
_STEMS = {"x_train": "train-images-idx3-ubyte", "y_train": "train-labels-idx1-ubyte",
          "x_test": "t10k-images-idx3-ubyte", "y_test": "t10k-labels-idx1-ubyte"}


@dataclass
class ImageData:
    """uint8 images [N, H, W] or [N, H, W, C] and int labels, train and test, with their origin."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str
    class_names: tuple = CLASS_NAMES
    notes: tuple = ()   # what the loader left out and why (one line each), for the run's report

    @property
    def num_classes(self):
        return len(self.class_names)


def _read_dir(directory):
    arrays = {k: read_idx(find_idx(directory, stem)) for k, stem in _STEMS.items()}
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise UserError(f"corrupt Fashion-MNIST {split} files in {directory}: "
                            f"images {x.shape} do not match labels {y.shape}")
        if len(y) and (y.min() < 0 or y.max() > 9):
            raise UserError(f"corrupt Fashion-MNIST {split} labels in {directory}: values outside 0..9")
    return ImageData(arrays["x_train"], arrays["y_train"].astype(np.int64),
                     arrays["x_test"], arrays["y_test"].astype(np.int64), source=directory)


def load_fashion_mnist(data_dir=None, subset=False):
    """Fashion-MNIST from ``data_dir``; else the Debian package's files; else the shipped subset.

    subset=True forces the small shipped subset (fast runs and tests on any machine).
    """
    if data_dir:
        if not os.path.isdir(data_dir):
            raise UserError(f"data directory not found: {data_dir}")
        return _read_dir(data_dir)
    if not subset and os.path.isdir(DEBIAN_DIR):
        return _read_dir(DEBIAN_DIR)
    return _read_dir(SUBSET_DIR)


def stratified_indices(labels, per_class, seed=0):
    rng = np.random.default_rng(seed)
    picks = [rng.choice(np.flatnonzero(labels == c), per_class, replace=False)
             for c in np.unique(labels)]
    return np.sort(np.concatenate(picks))


def make_subset(source_dir=DEBIAN_DIR, out_dir=SUBSET_DIR, train_per_class=300, test_per_class=100,
                seed=0):
    """Write the stratified subset that ships in the repo (run once by maintainers)."""
    full = _read_dir(source_dir)
    tr = stratified_indices(full.y_train, train_per_class, seed)
    te = stratified_indices(full.y_test, test_per_class, seed + 1)
    write_idx(os.path.join(out_dir, _STEMS["x_train"] + ".gz"), full.x_train[tr])
    write_idx(os.path.join(out_dir, _STEMS["y_train"] + ".gz"), full.y_train[tr])
    write_idx(os.path.join(out_dir, _STEMS["x_test"] + ".gz"), full.x_test[te])
    write_idx(os.path.join(out_dir, _STEMS["y_test"] + ".gz"), full.y_test[te])
