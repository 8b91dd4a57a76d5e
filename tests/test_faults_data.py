"""A user's image folder: every entry that cannot be read as an image is one line naming it (never a
TensorFlow error, never a read that blocks), images the loader does not read are counted, and a
run's output cannot land inside its data (issue 21: #5, #6, #12, #14, #15)."""
import os
import threading

import numpy as np
import pytest

import tfmobile  # noqa: F401
from tfmobile import data
from tfmobile.errors import UserError


def _png(path, value=7):
    import tensorflow as tf

    img = np.full((6, 5, 1), value, np.uint8)
    img[:3] = 255 - value
    path.write_bytes(tf.io.encode_png(img).numpy())


def _classes(root, counts):
    for c, n in counts.items():
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            _png(root / c / f"{i}.png", 20 * i + 3)
    return root


def test_folder_named_like_an_image_is_a_counted_subfolder(tmp_path):
    root = _classes(tmp_path, {"a": 3, "b": 3})
    album = root / "a" / "album.png"
    album.mkdir()
    _png(album / "x.png")
    _png(album / "y.jpg")
    d = data.load_image_dir(root, size=(8, 8))
    assert len(d.x_train) + len(d.x_test) == 6          # the folder is not an image
    assert any("2 images in 1 subfolders" in n and "album.png" in n for n in d.notes), d.notes


def test_nested_images_are_counted_and_reach_the_splits(tmp_path):
    root = _classes(tmp_path, {"a": 4, "b": 4})
    (root / "b" / "more" / "deeper").mkdir(parents=True)
    for name in ("1.png", "2.png", "deeper/3.png"):
        _png(root / "b" / "more" / name)
    _, splits = data.load_splits(str(root), image_size=(8, 8))
    assert any(n.startswith("3 images in 1 subfolders") for n in splits.notes), splits.notes


def test_class_with_images_only_in_subfolders_says_so(tmp_path):
    root = _classes(tmp_path, {"a": 2})
    (root / "b" / "sub").mkdir(parents=True)
    _png(root / "b" / "sub" / "0.png")
    with pytest.raises(UserError, match="class 'b' .* has no images .*directly inside it"):
        data.load_image_dir(root)


def test_symlink_to_itself_is_one_line_naming_it(tmp_path):
    root = _classes(tmp_path, {"a": 2, "b": 2})
    os.symlink("loop.png", root / "b" / "loop.png")
    with pytest.raises(UserError, match=r"cannot read image .*b/loop\.png: Too many levels of symbolic links"):
        data.load_image_dir(root)
    with pytest.raises(UserError, match=r"loop\.png"):      # export's --calibration_dir check too
        data.list_image_dir(str(root))


def test_unreadable_image_is_one_line_naming_it(tmp_path, monkeypatch):
    """Tests run as root, who reads a chmod 000 file: the OS error is simulated at the open call
    (the loader opens every image with os.open)."""
    root = _classes(tmp_path, {"a": 2, "b": 2})
    secret = str(root / "b" / "1.png")
    real_open = os.open

    def refusing_open(path, flags, *args, **kwargs):
        if os.fspath(path) == secret:
            raise PermissionError(13, "Permission denied", secret)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refusing_open)
    with pytest.raises(UserError, match=r"cannot read image .*b/1\.png: Permission denied"):
        data.load_image_dir(root, size=(8, 8))


def test_fifo_is_refused_before_any_read(cli, tmp_path):
    """A FIFO named like an image is refused by name at listing time: the run does not block on it
    (before the fix it did, forever, and SIGTERM then exited 1 with a pybind11 traceback)."""
    root = _classes(tmp_path / "imgs", {"a": 2, "b": 2})
    os.mkfifo(root / "b" / "pipe.png")
    with pytest.raises(UserError, match=r"pipe\.png is a named pipe \(FIFO\), not an image file"):
        data.list_image_dir(str(root))
    r = cli("pipelines.train", "--image_dir", root, "--output_dir", tmp_path / "out", timeout=120)
    assert r.returncode == 2, r.stderr[-2000:]
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and "pipe.png" in errors[0] and "Traceback" not in r.stderr


def test_reading_a_fifo_that_replaced_an_image_does_not_block(tmp_path):
    fifo = tmp_path / "late.png"
    os.mkfifo(fifo)
    outcome = []

    def read():
        try:
            data.read_image_file(str(fifo))
        except UserError as e:
            outcome.append(str(e))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(20)
    assert outcome and "not a regular file" in outcome[0], "the read blocked on a FIFO"


def test_images_without_class_subfolders_say_what_is_expected(tmp_path):
    for i in range(3):
        _png(tmp_path / f"{i}.png")
    with pytest.raises(UserError, match=r"holds 3 images but no class subfolders: .*/<class>/<image>\.png"):
        data.load_dataset(data_dir=str(tmp_path))
    with pytest.raises(UserError, match=r"no class subfolders.*holds 3 images directly"):
        data.load_image_dir(tmp_path)


def test_two_images_per_class_names_the_cause_and_the_fix(tmp_path):
    """200 classes x 2 images in the issue; 12 x 2 show the same: the test split takes one of each
    class's two images, leaving one per class, and a validation image needs a class with two."""
    root = _classes(tmp_path, {f"c{i:02d}": 2 for i in range(12)})
    with pytest.raises(UserError, match=r"too few training images \(12\) for a validation split: no class has "
                                        r"more than 1 training image .* at least 2 training images, or 3 per "
                                        r"class folder"):
        data.load_splits(str(root), image_size=(8, 8))


def test_output_inside_the_data_is_refused(tmp_path):
    root = tmp_path / "imgs"
    root.mkdir()
    for out in (root, root / "run1", root / "a" / "b"):
        with pytest.raises(UserError, match="inside the data directory"):
            data.check_output_outside_data(str(out), str(root))
    os.symlink(root, tmp_path / "link")
    with pytest.raises(UserError, match="inside the data directory"):
        data.check_output_outside_data(str(tmp_path / "link" / "run"), str(root))
    for out in (tmp_path / "imgs2", tmp_path / "runs"):       # a sibling with a common prefix is outside
        data.check_output_outside_data(str(out), str(root))


@pytest.mark.parametrize("module, data_flag", [("pipelines.run", "--data_dir"), ("pipelines.train", "--data_dir"),
                                               ("pipelines.train", "--image_dir")])
def test_clis_refuse_an_output_inside_the_data(cli, tmp_path, module, data_flag):
    root = _classes(tmp_path / "imgs", {"a": 3, "b": 3})
    r = cli(module, data_flag, root, "--output_dir", root / "out", "--epochs", "1", "--steps_per_epoch", "1",
            timeout=300)
    assert r.returncode == 2, r.stderr[-2000:]
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and "inside the data directory" in errors[0], r.stderr[-2000:]
    assert not (root / "out").exists()
