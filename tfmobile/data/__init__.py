"""Datasets and input pipelines.

Convention: every zoo model takes float32 images in [-1, 1] (MobileNet's preprocessing);
``preprocess`` maps uint8 images to that, resizing and repeating grey to 3 channels as needed.
"""
import numpy as np

from tfmobile.data.fashion_mnist import (CLASS_NAMES, DEBIAN_DIR, SUBSET_DIR, ImageData,  # noqa: F401
                                         load_fashion_mnist, make_subset)
from tfmobile.data.image_dir import (ImageListing, decode_images, list_image_dir, load_image_dir,  # noqa: F401
                                     read_image_file, scan_image_dir, stratified_split)
from tfmobile.data.input_pipeline import (AUGMENTATIONS, DEFAULT_SHIFT, STAGE_FLOORS, Schedule, Splits,  # noqa: F401
                                          check_output_outside_data, default_augment, default_schedule,
                                          flips_are_safe, load_dataset, load_splits, make_dataset, parse_augment,
                                          representative_dataset, resize_uint8, train_val_split)


def preprocess(images, input_shape):
    """uint8 images [N,H,W] / [N,H,W,C] -> float32 [N,h,w,c] in [-1, 1] for a model input (h, w, c).

    Resizes exactly as the training pipeline does (``resize_uint8``), so calibration and
    verification images match what the model was trained on.
    """
    return (resize_uint8(images, input_shape).astype(np.float32) / 127.5 - 1.0).astype(np.float32)


def sample_images(images, input_shape, n=100, seed=0):
    """A seeded random choice of ``n`` uint8 ``images`` (all if fewer), preprocessed for ``input_shape``:
    the calibration and verification images of every int8 export."""
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(images), size=min(n, len(images)), replace=False)
    return preprocess(np.asarray(images)[idx], input_shape)


def calibration_images(input_shape, n=100, data_dir=None, seed=0):
    """``n`` real Fashion-MNIST training images preprocessed for ``input_shape`` (calibration/verify)."""
    return sample_images(load_fashion_mnist(data_dir, subset=data_dir is None).x_train, input_shape, n, seed)


def image_dir_sample(directory, input_shape, n, seed=0):
    """Up to ``n`` images (a seeded random choice) of a class-subfolder directory, decoded and resized
    as training images are, preprocessed for ``input_shape``: calibration images from the user's data."""
    paths, _, _ = list_image_dir(directory)
    rng = np.random.default_rng(seed)
    picks = sorted(rng.choice(len(paths), size=min(n, len(paths)), replace=False))
    h, w, c = input_shape
    return preprocess(decode_images([paths[i] for i in picks], (h, w), c), input_shape)
