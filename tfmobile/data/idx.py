"""IDX (the MNIST file format) reading and writing, with clear errors for missing or corrupt files."""
import gzip
import os
import struct

import numpy as np

from tfmobile.errors import UserError

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
           0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path):
    """Array stored in an IDX file (optionally gzipped)."""
    try:
        opener = gzip.open if str(path).endswith(".gz") else open
        with opener(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise UserError(f"IDX file not found: {path}") from None
    except (OSError, EOFError) as e:
        raise UserError(f"cannot read IDX file {path}: {e}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES:
        raise UserError(f"corrupt IDX file {path}: bad magic number")
    dtype = np.dtype(_DTYPES[data[2]])
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise UserError(f"corrupt IDX file {path}: truncated header")
    shape = struct.unpack(">" + "I" * ndim, data[4:header])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header != expected:
        raise UserError(f"corrupt IDX file {path}: expected {expected} data bytes for shape "
                        f"{tuple(shape)}, found {len(data) - header}")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path, array):
    """Write ``array`` (uint8) as a gzipped IDX file, atomically."""
    from tfmobile.io import write_bytes

    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(">" + "I" * array.ndim, *array.shape)
    write_bytes(path, gzip.compress(header + array.tobytes(), compresslevel=9, mtime=0))


def find_idx(directory, stem):
    """Path of ``stem`` (e.g. 'train-images-idx3-ubyte') in ``directory``, gzipped or not."""
    for name in (stem + ".gz", stem):
        p = os.path.join(directory, name)
        if os.path.exists(p):
            return p
    raise UserError(f"{stem}[.gz] not found in {directory}")
