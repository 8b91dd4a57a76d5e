"""The tiny MobileNetV1 the NetAdapt tests shrink: the stem and one or two separable blocks of mbv1 a0.25 at 32x32."""


def tiny_spec(widths=(8, 24, 24), classes=10, name="mbv1_tiny_32"):
    """``widths``: the filters of stem, block_1[, block_2] (two widths: no block_2).

    BatchNorm momentum 0.5: its moving statistics follow the few training steps of a test, so the
    proposals' validation accuracies differ (with 0.99 every one is at chance and ties decide).
    """
    from tfmobile import models

    spec = models.get_spec("mbv1", alpha=0.25, input_shape=(32, 32, 3), classes=classes, bn_momentum=0.5)
    d = spec.to_dict()
    kept = ("stem", "block_1", "block_2")[:len(widths)] + ("top",)
    d["blocks"] = [b for b in d["blocks"] if b["name"] in kept]
    for b, w in zip(d["blocks"][:len(widths)], widths):
        b["filters"] = w
    d["name"] = name
    return models.ModelSpec.from_dict(d)


def tiny_splits():
    """300 training images of the shipped Fashion-MNIST subset, a tenth of them held out for validation."""
    from tfmobile import data

    return data.train_val_split(data.load_dataset(None, subset=True), 0.1, limit=300)
