"""Calibration images from a directory of class subfolders (``DIR/<class>/<image>.png|jpg|...``)."""
import os

import numpy as np

from tfmobile.errors import UserError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


def list_images(directory):
    if not os.path.isdir(directory):
        raise UserError(f"calibration directory not found: {directory}")
    files = []
    for sub in sorted(os.listdir(directory)):
        path = os.path.join(directory, sub)
        if os.path.isdir(path):
            files += [os.path.join(path, f) for f in sorted(os.listdir(path))
                      if f.lower().endswith(IMAGE_EXTENSIONS)]
    if not files:
        raise UserError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in class subfolders of {directory}")
    return files


def load_image_dir(directory, input_shape, n, seed=0):
    """Up to ``n`` images (a seeded random choice) preprocessed to float32 [-1, 1] for ``input_shape``."""
    from PIL import Image

    from tfmobile.data import preprocess

    files = list_images(directory)
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(files), size=min(n, len(files)), replace=False)
    h, w, c = input_shape
    arrays = []
    for i in sorted(picks):
        try:
            with Image.open(files[i]) as im:
                im = im.convert("L" if c == 1 else "RGB").resize((w, h), Image.BILINEAR)
                arrays.append(np.asarray(im, dtype=np.uint8))
        except OSError as e:
            raise UserError(f"cannot read image {files[i]}: {e}") from None
    return preprocess(np.stack(arrays), input_shape)
