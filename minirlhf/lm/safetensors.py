"""The safetensors format, read and written with NumPy alone.

A safetensors file is three parts, back to back:

    [ 8 bytes: N, the header's length, unsigned little-endian ]
    [ N bytes: a JSON header  {"name": {"dtype": "F32", "shape": [768, 2304],
                                        "data_offsets": [begin, end]}, ...,
                               "__metadata__": {"format": "pt"}}             ]
    [ the byte buffer: every tensor's raw little-endian bytes, at [begin, end) ]

Offsets count from the start of the byte buffer; the tensors must cover it exactly (no holes,
no overlaps). Hugging Face stores GPT-2 this way (``model.safetensors``); unlike PyTorch's
pickled ``.bin`` files, reading it runs no code.

We read float32, float16 and bfloat16 (bfloat16 widened to float32: its 16 bits are the top
half of a float32), float64 and the integer and boolean types, and write float32 (and integer)
arrays. A malformed file is a ``SafetensorsError`` naming the file and, where one is at fault,
the tensor.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np

from minirlhf.lm.checkpoint import atomic_write

# safetensors dtype -> NumPy dtype (little-endian). BF16 has no NumPy type: read as raw 16 bits.
DTYPES: dict[str, str] = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2",
    "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "?",
}
WRITABLE: dict[str, str] = {"float32": "F32", "int64": "I64", "int32": "I32"}
MAX_HEADER = 100 * 1024 * 1024  # the reference implementation refuses headers beyond 100 MB


class SafetensorsError(ValueError):
    """A safetensors file that cannot be read as one: says which file, and which tensor."""


def bfloat16_to_float32(raw: np.ndarray) -> np.ndarray:
    """bfloat16 bits (uint16) -> float32: the 16 bits become the high half of a float32."""
    return (raw.astype(np.uint32) << 16).view(np.float32)


def read_header(path: str | Path) -> tuple[dict[str, dict[str, Any]], dict[str, str], int]:
    """(tensors' entries by name, the ``__metadata__`` strings, where the byte buffer starts),
    after checking the header against the file's size: every entry's dtype is known, its byte
    range matches its shape, and the ranges tile the buffer."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise SafetensorsError(f"{path}: {size} bytes, too short for a safetensors file "
                                   "(it starts with an 8-byte header length)")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER or 8 + n > size:
            raise SafetensorsError(f"{path}: the header claims {n} bytes but the file holds "
                                   f"{size - 8} after the length (truncated, or not safetensors)")
        try:
            header = json.loads(f.read(n).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise SafetensorsError(f"{path}: the header is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"{path}: the header is a {type(header).__name__}, not an object")
    metadata = header.pop("__metadata__", None) or {}
    start, buffer = 8 + n, size - 8 - n
    spans = []
    for name, entry in header.items():
        if not isinstance(entry, dict) or {"dtype", "shape", "data_offsets"} - set(entry):
            raise SafetensorsError(f"{path}: tensor {name!r} lacks dtype, shape or data_offsets")
        dtype = entry["dtype"]
        if dtype not in DTYPES:
            raise SafetensorsError(f"{path}: tensor {name!r} has dtype {dtype!r}, which this "
                                   f"reader does not know (it reads {', '.join(DTYPES)})")
        begin, end = entry["data_offsets"]
        nbytes = int(np.prod(entry["shape"], dtype=np.int64)) * np.dtype(DTYPES[dtype]).itemsize
        if not 0 <= begin <= end or end - begin != nbytes:
            raise SafetensorsError(f"{path}: tensor {name!r} ({dtype}, shape {entry['shape']}) "
                                   f"needs {nbytes} bytes but its offsets [{begin}, {end}) "
                                   "span a different number")
        if end > buffer:
            raise SafetensorsError(f"{path}: tensor {name!r} ends at byte {end} of the data but "
                                   f"the file holds only {buffer} (truncated?)")
        spans.append((begin, end, name))
    at = 0
    for begin, end, name in sorted(spans):
        if begin != at:
            raise SafetensorsError(f"{path}: tensor {name!r} starts at byte {begin} of the data, "
                                   f"expected {at} (the tensors must tile the data: no holes, no "
                                   "overlaps)")
        at = end
    if at != buffer:
        raise SafetensorsError(f"{path}: the tensors cover {at} bytes of data but the file holds "
                               f"{buffer}")
    return header, metadata, start


def load_file(path: str | Path, names: set[str] | None = None) -> dict[str, np.ndarray]:
    """Every tensor in the file (or only those in ``names``), as NumPy arrays by name.
    float32/float64/integer tensors keep their dtype; float16 and bfloat16 become float32."""
    header, _, start = read_header(path)
    out = {}
    with open(path, "rb") as f:
        for name, entry in header.items():
            if names is not None and name not in names:
                continue
            begin, end = entry["data_offsets"]
            f.seek(start + begin)
            a = np.frombuffer(f.read(end - begin), dtype=DTYPES[entry["dtype"]])
            if entry["dtype"] == "BF16":
                a = bfloat16_to_float32(a)
            elif entry["dtype"] == "F16":
                a = a.astype(np.float32)
            out[name] = a.reshape(entry["shape"]).astype(a.dtype.newbyteorder("="), copy=True)
    return out


def save_file(path: str | Path, tensors: dict[str, np.ndarray],
              metadata: dict[str, str] | None = None) -> None:
    """Write ``tensors`` (float32 or integer arrays) to ``path`` atomically, in name order, the
    header padded with spaces to a multiple of 8 bytes so that every tensor starts aligned."""
    header: dict[str, Any] = {"__metadata__": dict(metadata or {"format": "pt"})}
    if not all(isinstance(v, str) for v in header["__metadata__"].values()):
        raise TypeError("save_file: metadata values must be strings (the format says so)")
    blobs, at = [], 0
    for name in sorted(tensors):
        a = np.asarray(tensors[name])
        if a.dtype.name not in WRITABLE:
            raise TypeError(f"save_file: tensor {name!r} is {a.dtype}; this writer writes "
                            f"{', '.join(WRITABLE)} (convert it first)")
        data = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": WRITABLE[a.dtype.name], "shape": list(a.shape),
                        "data_offsets": [at, at + len(data)]}
        blobs.append(data)
        at += len(data)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)

    def write(f: Any) -> None:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for data in blobs:
            f.write(data)

    atomic_write(Path(path), write)
