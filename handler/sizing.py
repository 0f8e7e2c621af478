"""How many bytes a loaded model holds: the measure the ModelCache and the container's memory budget use.

Pickling into a counting sink sizes numpy buffers exactly without copying them (protocol 5 hands them out
of band); objects that refuse to pickle are sized by a bounded walk over sys.getsizeof.
"""

from __future__ import annotations

import logging
import pickle
import sys
from typing import Any

__all__ = ["measure_bytes"]

logger = logging.getLogger(__name__)

# Depth bound for the getsizeof fallback walk: deep enough for estimator -> list of trees -> tree -> arrays,
# shallow enough that a pathological linked structure cannot recurse forever.
_FALLBACK_MAX_DEPTH = 64


class _CountingSink:
    """A write-only file that only counts what is written, so pickling allocates no output buffer."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0

    def write(self, data: Any) -> int:
        n = memoryview(data).nbytes
        self.count += n
        return n


def measure_bytes(obj: object) -> int:
    """Approximate the memory retained by ``obj``: the size of its protocol-5 pickle.

    Why a pickle: a fitted scikit-learn estimator is dominated by its numpy arrays (coefficients, tree
    node tables, support vectors), and pickling visits exactly the state the object retains, each shared
    sub-object once. Streaming into a counting sink with ``buffer_callback`` keeps contiguous arrays
    out-of-band, so they are counted by their ``nbytes`` without being copied; the cost is a walk of the
    Python-level object graph. The result is deterministic and cheap, unlike an RSS delta around the
    load, which is noisy with other threads allocating at the same time and with the allocator reusing
    freed pages. It slightly undercounts Python object headers and overcounts arrays that are views or
    memory-mapped (their bytes are shared), which is acceptable for a capacity bound.

    If the object cannot be pickled (lambdas, locks, open files), fall back to a ``sys.getsizeof`` walk.
    """
    sink = _CountingSink()
    out_of_band = 0

    def on_buffer(buf: pickle.PickleBuffer) -> bool:
        nonlocal out_of_band
        with memoryview(buf) as view:
            out_of_band += view.nbytes
        return False  # falsy: keep the buffer out of the stream, i.e. do not copy it into the sink

    try:
        pickle.Pickler(sink, protocol=5, buffer_callback=on_buffer).dump(obj)
    except Exception:  # any pickling failure just means "use the fallback"
        return _getsizeof_walk(obj)
    return sink.count + out_of_band


def _getsizeof_walk(root: object) -> int:
    """Sum ``sys.getsizeof`` over the object graph reachable from ``root``, each object once, depth-bounded.

    ``sys.getsizeof`` of a numpy array that owns its data includes the data, so arrays still count fully.
    """
    seen: set[int] = set()
    total = 0
    stack: list[tuple[object, int]] = [(root, 0)]
    while stack:
        obj, depth = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        try:
            total += sys.getsizeof(obj)
        except Exception:  # exotic objects may refuse; count them as zero
            continue
        if depth >= _FALLBACK_MAX_DEPTH or isinstance(obj, str | bytes | bytearray | memoryview | type):
            continue
        stack.extend((child, depth + 1) for child in _referents(obj))
    return total


def _referents(obj: object) -> list[object]:
    """What `obj` holds that counts towards its size: items, keys and values, a view's base, attributes."""
    children: list[object] = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            children.append(k)
            children.append(v)
    elif isinstance(obj, list | tuple | set | frozenset):
        children.extend(obj)
    try:  # attribute access can run arbitrary __getattr__ code; a failure just ends this branch
        base = getattr(obj, "base", None)  # a numpy view keeps its base array alive
        instance_dict = getattr(obj, "__dict__", None)
    except Exception:
        return []
    if base is not None and not isinstance(obj, type):
        children.append(base)
    if isinstance(instance_dict, dict):
        children.append(instance_dict)
    children.extend(_slot_values(obj))
    return children


def _slot_values(obj: object) -> list[object]:
    values = []
    for cls in type(obj).__mro__:
        for slot in cls.__dict__.get("__slots__", ()):
            if isinstance(slot, str) and slot not in ("__dict__", "__weakref__"):
                try:
                    values.append(getattr(obj, slot))
                except Exception:
                    pass
    return values
