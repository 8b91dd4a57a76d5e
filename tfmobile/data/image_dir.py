"""Any directory of class-subfolders of images (PNG/JPEG/BMP/GIF), decoded with tf.io.

Layout: ``DIR/<class>/*.png``. If ``DIR`` holds ``train/`` and ``test/`` (each with the same class
subfolders) they are used as the two splits; otherwise every image is a training image and a
stratified test split is held out (``test_fraction``). Images are decoded, resized to ``size`` and
kept as uint8 [N, H, W, C] in an :class:`ImageData`, so they flow through the same pipelines as
Fashion-MNIST.
"""
import os
import stat
from dataclasses import dataclass

import numpy as np

from tfmobile.data.fashion_mnist import ImageData
from tfmobile.errors import UserError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
_NOT_REGULAR = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"),
                (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def is_image_name(name):
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


@dataclass
class ImageListing:
    """The images of a class-subfolder directory, and what was left out (``notes``, one line each)."""

    paths: list
    labels: np.ndarray
    class_names: tuple
    notes: tuple = ()


def _entry_kind(path):
    """"dir", "file" or (for an image name) a refusal: an entry that cannot be read as an image file
    fails here, by name, before anything reads it (a FIFO would block the read forever)."""
    try:
        mode = os.stat(path).st_mode   # follows symlinks: a loop or a dangling link fails here
    except OSError as e:
        if not is_image_name(os.path.basename(path)):
            return "other"
        raise UserError(f"cannot read image {path}: {e.strerror or e}") from None
    if stat.S_ISDIR(mode):
        return "dir"
    if not is_image_name(os.path.basename(path)):
        return "other"
    for test, what in _NOT_REGULAR:
        if test(mode):
            raise UserError(f"{path} is {what}, not an image file: remove it from the image folder")
    return "file"


def _images_below(folder):
    """Image files anywhere below ``folder`` (not following links): the count the note reports."""
    return sum(1 for _, _, files in os.walk(folder) for f in files if is_image_name(f))


def scan_image_dir(directory):
    """An :class:`ImageListing` of ``directory/<class>/<image>``; UserError for empty or odd trees
    and for an image entry that is not a readable regular file. Images deeper in a class folder,
    or directly in ``directory``, are not read: ``notes`` counts them."""
    if not os.path.isdir(directory):
        raise UserError(f"image directory not found: {directory}")
    entries = sorted(os.listdir(directory))
    classes = [d for d in entries if not d.startswith(".") and os.path.isdir(os.path.join(directory, d))]
    loose = [f for f in entries if is_image_name(f) and os.path.isfile(os.path.join(directory, f))]
    if not classes:
        found = f"it holds {len(loose)} images directly; " if loose else ""
        raise UserError(f"image directory {directory} has no class subfolders, so no images ({found}"
                        f"expected one subfolder per class: {directory}/<class>/<image>.png)")
    paths, labels, nested_dirs, nested_images = [], [], [], 0
    for i, c in enumerate(classes):
        folder = os.path.join(directory, c)
        files = []
        for name in sorted(os.listdir(folder)):
            if name.startswith("."):
                continue
            kind = _entry_kind(os.path.join(folder, name))
            if kind == "dir":
                nested_dirs.append(os.path.join(folder, name))
                nested_images += _images_below(os.path.join(folder, name))
            elif kind == "file":
                files.append(name)
        if not files:
            raise UserError(f"class {c!r} in {directory} has no images "
                            f"({'/'.join(e[1:] for e in IMAGE_EXTENSIONS)})"
                            + (" directly inside it; images in its subfolders are not read"
                               if any(os.path.dirname(d) == folder for d in nested_dirs) else ""))
        paths += [os.path.join(folder, f) for f in files]
        labels += [i] * len(files)
    notes = []
    if nested_dirs:
        notes.append(f"{nested_images} images in {len(nested_dirs)} subfolders of class folders not read "
                     f"(e.g. {nested_dirs[0]}): only {directory}/<class>/<image> is read")
    if loose:
        notes.append(f"{len(loose)} images directly in {directory} not read (e.g. {loose[0]}): they "
                     f"belong in a class subfolder")
    return ImageListing(paths, np.asarray(labels, np.int64), tuple(classes), tuple(notes))


def list_image_dir(directory):
    """(paths, labels, class_names) of a class-subfolder directory (``scan_image_dir`` without notes)."""
    listing = scan_image_dir(directory)
    return listing.paths, listing.labels, listing.class_names


def read_image_file(path):
    """The bytes of a regular file, refused by name otherwise: opened non-blocking and checked
    before the read, so a FIFO that replaced an image after the listing cannot hang the run."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as e:
        raise UserError(f"cannot read image {path}: {e.strerror or e}") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise UserError(f"{path} is not a regular file: remove it from the image folder")
        try:
            return f.read()
        except OSError as e:
            raise UserError(f"cannot read image {path}: {e.strerror or e}") from None


def decode_images(paths, size, channels):
    """uint8 [N, h, w, channels] of image files, resized like every training image (bilinear,
    antialiased) to ``size`` = (h, w)."""
    import tfmobile  # noqa: F401
    import tensorflow as tf

    out = np.empty((len(paths), size[0], size[1], channels), np.uint8)
    for i, p in enumerate(paths):
        raw = read_image_file(p)
        try:
            img = tf.io.decode_image(raw, channels=channels, expand_animations=False)
        except tf.errors.OpError as e:
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(f"cannot decode image {p}: {msg}") from None
        if img.shape[0] != size[0] or img.shape[1] != size[1]:
            img = tf.image.resize(img, size, method="bilinear", antialias=True)
            img = tf.clip_by_value(tf.round(img), 0, 255)
        out[i] = tf.cast(img, tf.uint8).numpy()
    return out


def load_image_dir(directory, size=(32, 32), channels=3, test_fraction=0.2, seed=0):
    """An :class:`ImageData` from a directory of class subfolders (see module docstring)."""
    if channels not in (1, 3):
        raise UserError(f"channels must be 1 or 3, got {channels}")
    size = (int(size[0]), int(size[1]))
    train_dir, test_dir = os.path.join(directory, "train"), os.path.join(directory, "test")
    if os.path.isdir(train_dir) and os.path.isdir(test_dir):
        train, test = scan_image_dir(train_dir), scan_image_dir(test_dir)
        if test.class_names != train.class_names:
            raise UserError(f"{train_dir} and {test_dir} have different class folders: "
                            f"{list(train.class_names)} vs {list(test.class_names)}")
        xtr, xte = decode_images(train.paths, size, channels), decode_images(test.paths, size, channels)
        ytr, yte, classes, notes = train.labels, test.labels, train.class_names, train.notes + test.notes
    else:
        listing = scan_image_dir(directory)
        x = decode_images(listing.paths, size, channels)
        tr, te = stratified_split(listing.labels, test_fraction, seed)
        xtr, ytr, xte, yte = x[tr], listing.labels[tr], x[te], listing.labels[te]
        classes, notes = listing.class_names, listing.notes
    if channels == 1:
        xtr, xte = xtr[..., 0], xte[..., 0]
    return ImageData(xtr, ytr, xte, yte, source=os.path.abspath(directory), class_names=classes, notes=notes)


def stratified_split(labels, fraction, seed=0):
    """(keep_idx, held_idx): ``fraction`` of every class held out (>= 1 image when a class has 2+)."""
    if not 0.0 <= fraction < 1.0:
        raise UserError(f"split fraction must be in [0, 1), got {fraction}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    keep, held = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n = int(round(fraction * len(idx)))
        if fraction > 0 and n == 0 and len(idx) >= 2:
            n = 1
        held.append(idx[:n])
        keep.append(idx[n:])
    return np.sort(np.concatenate(keep)), np.sort(np.concatenate(held))
