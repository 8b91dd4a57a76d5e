"""Load weights into a zoo model: a ``save_weights`` file (HDF5 or TF checkpoint) or "imagenet".

Weights are matched TOPOLOGICALLY: the i-th layer that has weights in the file goes to the i-th
layer that has weights in the model, like Keras' own ``load_weights(by_name=False)``. Layer names
may differ, which is what lets a keras.applications MobileNet weights file (``conv_dw_1``,
``block_1_expand``, ``expanded_conv_1/expand`` ...) load into our builders (``block_1_dw``,
``block_1_expand_conv`` ...): the weighted layers come in the same order with the same shapes.
Every shape is checked before anything is assigned; the first layer that does not fit is named in
a one-line UserError, and the model is left untouched.
"""
import os

import numpy as np

import tfmobile  # noqa: F401  (legacy Keras)
import tf_keras as keras

from tfmobile.errors import UserError

# zoo name -> (keras.applications constructor name, extra keyword arguments from spec.options)
_KERAS_APPS = {
    "mbv1": ("MobileNet", ("depth_multiplier",)),
    "mbv2": ("MobileNetV2", ()),
    "mbv3_small": ("MobileNetV3Small", ("minimalistic",)),
    "mbv3_large": ("MobileNetV3Large", ("minimalistic",)),
}


def weighted_layers(model):
    """The model's layers that own weights, in topological order (Keras' load order)."""
    return [layer for layer in model.layers if layer.weights]


def load_weights(model, spec, weights):
    """Load ``weights`` (None, a path, or "imagenet") into ``model`` built from ``spec``."""
    if weights is None:
        return model
    if not isinstance(weights, (str, os.PathLike)):
        raise UserError(f"weights must be None, 'imagenet' or a path, got {type(weights).__name__}")
    weights = os.fspath(weights)
    if weights == "imagenet":
        return _load_imagenet(model, spec)
    source = _read_file(weights)
    _assign(model, source, f"weights file {weights}")
    return model


# ----------------------------------------------------------------------------------------------
# Reading: a list of (layer name, {attribute: array} in file order) per weighted layer.
# ----------------------------------------------------------------------------------------------

def _read_file(path):
    if os.path.isdir(path):
        raise UserError(f"weights path {path} is a directory; give the file (or checkpoint prefix)")
    if os.path.exists(path):
        import h5py

        if h5py.is_hdf5(path):
            return _read_h5(path)
    if os.path.exists(path + ".index") or (os.path.exists(path) and path.endswith(".index")):
        prefix = path[:-len(".index")] if path.endswith(".index") else path
        return _read_checkpoint(prefix)
    if not os.path.exists(path):
        raise UserError(f"weights file not found: {path}")
    raise UserError(f"weights file {path} is neither HDF5 nor a TF checkpoint")


def _decode(v):
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)


def _read_h5(path):
    import h5py

    try:
        with h5py.File(path, "r") as f:
            group = f["model_weights"] if "model_weights" in f else f
            if "layer_names" not in group.attrs:
                raise UserError(f"weights file {path} is HDF5 but not a Keras weights file")
            out = []
            for lname in (_decode(n) for n in group.attrs["layer_names"]):
                g = group[lname]
                names = [_decode(n) for n in g.attrs.get("weight_names", [])]
                if not names:
                    continue
                out.append((lname, [(n.split("/")[-1].split(":")[0], np.asarray(g[n])) for n in names]))
            return out
    except OSError as e:
        raise UserError(f"cannot read weights file {path}: {str(e).splitlines()[0]}") from None


def _read_checkpoint(prefix):
    import tensorflow as tf

    try:
        reader = tf.train.load_checkpoint(prefix)
    except Exception as e:  # noqa: BLE001  (TF raises many types for a bad checkpoint)
        raise UserError(f"cannot read checkpoint {prefix}: {str(e).splitlines()[0]}") from None
    layers = {}
    for key in reader.get_variable_to_shape_map():
        parts = key.split("/")
        if (len(parts) != 4 or not parts[0].startswith("layer_with_weights-")
                or parts[2:] != [".ATTRIBUTES", "VARIABLE_VALUE"]):
            continue
        idx = int(parts[0].split("-")[1])
        layers.setdefault(idx, {})[parts[1]] = reader.get_tensor(key)
    if not layers:
        raise UserError(f"checkpoint {prefix} holds no Keras layer weights")
    if sorted(layers) != list(range(len(layers))):
        raise UserError(f"checkpoint {prefix} has gaps in its layer numbering")
    # attribute order is fixed by the model side (matched by attribute name)
    return [(f"layer_with_weights-{i}", list(layers[i].items())) for i in range(len(layers))]


# ----------------------------------------------------------------------------------------------
# Assigning
# ----------------------------------------------------------------------------------------------

def _attr(weight):
    return weight.name.split("/")[-1].split(":")[0]


def _shapes(items):
    return "[" + ", ".join(f"{a}{tuple(v.shape)}" for a, v in items) + "]"


def _match_layer(layer, file_name, items, where, index):
    """The file's arrays for ``layer`` in the layer's weight order, or a UserError."""
    ours = layer.weights
    want = "[" + ", ".join(f"{_attr(w)}{tuple(w.shape)}" for w in ours) + "]"
    by_attr = dict(items)
    if len(by_attr) == len(ours) and all(_attr(w) in by_attr for w in ours):
        arrays = [by_attr[_attr(w)] for w in ours]   # checkpoint, or same layer types
    elif len(items) == len(ours):
        arrays = [v for _, v in items]               # h5 of another naming: positional
    else:
        arrays = None
    if arrays is None or any(tuple(a.shape) != tuple(w.shape) for a, w in zip(arrays, ours)):
        raise UserError(f"{where} does not fit the model: layer {layer.name!r} (weighted layer "
                        f"#{index}) expects {want}, the file's #{index} {file_name!r} has {_shapes(items)}")
    return arrays


def _assign(model, source, where, prefix_only=False):
    layers = weighted_layers(model)
    n = min(len(layers), len(source))
    values = []
    for i in range(n):
        values.append(_match_layer(layers[i], source[i][0], source[i][1], where, i))
    if not prefix_only and len(layers) != len(source):
        if len(layers) > len(source):
            raise UserError(f"{where} does not fit the model: it has {len(source)} weighted layers, "
                            f"the model {len(layers)}; layer {layers[n].name!r} has no weights in the file")
        raise UserError(f"{where} does not fit the model: it has {len(source)} weighted layers, "
                        f"the model only {len(layers)}; the file's {source[n][0]!r} is left over")
    for layer, arrays in zip(layers, values):
        for w, a in zip(layer.weights, arrays):
            w.assign(a.astype(w.dtype.as_numpy_dtype, copy=False))
    return n


def _load_imagenet(model, spec):
    """Instantiate keras.applications' model with weights="imagenet" and copy its weights.

    With include_top and 1000 classes every layer is copied; otherwise keras' no-top weights are
    copied into the backbone and the top stays randomly initialised (transfer learning).
    """
    if spec.family not in _KERAS_APPS:
        raise UserError(f"no ImageNet weights for {spec.family}: only "
                        f"{', '.join(sorted(_KERAS_APPS))} have keras.applications weights")
    if spec.input_shape[2] != 3:
        raise UserError(f"ImageNet weights need 3 input channels, the model has {spec.input_shape[2]}")
    ctor_name, extra = _KERAS_APPS[spec.family]
    ctor = getattr(keras.applications, ctor_name)
    full = spec.include_top and spec.classes == 1000
    kwargs = {"input_shape": (224, 224, 3), "alpha": spec.options.get("alpha", 1.0),
              "include_top": full, "weights": "imagenet"}
    for k in extra:
        if k in spec.options:
            kwargs[k] = spec.options[k]
    if spec.family.startswith("mbv3"):
        kwargs["include_preprocessing"] = False
    try:
        reference = ctor(**kwargs)
    except ValueError as e:
        raise UserError(f"keras.applications has no ImageNet weights for this {spec.family}: "
                        f"{str(e).splitlines()[0]}") from None
    except Exception as e:  # noqa: BLE001  (download failures: URLError, HTTPError, OSError, ...)
        raise UserError(f"could not download ImageNet weights for {spec.family} "
                        f"(needs internet access to storage.googleapis.com): "
                        f"{' '.join(str(e).split())[:200]}") from None
    source = [(layer.name, [(_attr(w), w.numpy()) for w in layer.weights])
              for layer in weighted_layers(reference)]
    _assign(model, source, f"ImageNet weights of keras.applications.{ctor_name}", prefix_only=not full)
    return model
