"""Media types: parsing Content-Type, negotiating Accept (q-values, wildcards), decoding text bodies."""

from __future__ import annotations

import codecs
import functools
from dataclasses import dataclass, field

from sklearn_mme.handler.errors import BadRequest, NotAcceptable, UnsupportedMediaType

CSV = "text/csv"
JSON = "application/json"
JSONLINES = "application/jsonlines"
NPY = "application/x-npy"
NPZ = "application/x-npz"  # a scipy.sparse matrix, as scipy.sparse.save_npz writes it

# Server preference order (used to break ties between types matched by the same wildcard).
SUPPORTED_CONTENT_TYPES: tuple[str, ...] = (CSV, JSON, JSONLINES, NPY, NPZ)
SUPPORTED_ACCEPT: tuple[str, ...] = (JSON, CSV, JSONLINES, NPY)
TEXT_TYPES = frozenset({CSV, JSON, JSONLINES})

# SageMaker's sklearn container treats a request without Content-Type as CSV; so do we.
DEFAULT_CONTENT_TYPE = CSV

_ALIASES = {
    "application/x-jsonlines": JSONLINES,
    "application/jsonl": JSONLINES,
    "application/json-lines": JSONLINES,
    "application/npy": NPY,
    "application/npz": NPZ,
}


def canonical(media_type: str) -> str:
    """Lower-case, strip, and map known aliases to the names used here."""
    media_type = media_type.strip().lower()
    return _ALIASES.get(media_type, media_type)


@dataclass(frozen=True)
class MediaType:
    type: str  # e.g. "text/csv", canonical
    params: dict[str, str] = field(default_factory=dict)  # keys lower-case, values unquoted

    @property
    def charset(self) -> str | None:
        return self.params.get("charset")


def parse_media_type(value: str) -> MediaType:
    """Parse `type/subtype; k=v; ...`; malformed parameters are ignored, a malformed type is kept as is."""
    head, *raw_params = value.split(";")
    params: dict[str, str] = {}
    for raw in raw_params:
        key, sep, val = raw.partition("=")
        if sep and key.strip():
            params[key.strip().lower()] = val.strip().strip('"').strip()
    return MediaType(canonical(head), params)


def decode_text(body: bytes | str, media: MediaType) -> str:
    """Decode a text body by its charset (default UTF-8, BOM dropped): 415 unknown charset, 400 invalid."""
    if isinstance(body, str):
        return body
    charset = (media.charset or "utf-8").lower()
    try:
        encoding = codecs.lookup(charset).name
    except LookupError:
        raise UnsupportedMediaType(f"unsupported charset {charset!r}") from None
    if encoding == "utf-8":
        encoding = "utf-8-sig"
    try:
        return body.decode(encoding)
    except LookupError:  # e.g. 'base64': a bytes-to-bytes codec, not a text encoding
        raise UnsupportedMediaType(f"unsupported charset {charset!r}") from None
    except UnicodeDecodeError as exc:
        raise BadRequest(f"body is not valid {charset}: {exc.reason} at byte {exc.start}") from None


@dataclass(frozen=True)
class _Range:
    type: str
    subtype: str
    q: float
    index: int

    def specificity(self, media_type: str) -> int:
        """-1: no match; 0: */*; 1: type/*; 2: exact."""
        mtype, _, msub = media_type.partition("/")
        if self.type == "*" and self.subtype == "*":
            return 0
        if self.type != mtype:
            return -1
        if self.subtype == "*":
            return 1
        return 2 if self.subtype == msub else -1


def _parse_accept(accept: str) -> list[_Range]:
    ranges = []
    for index, item in enumerate(accept.split(",")):
        media = parse_media_type(item)
        # A bare "*" is sent by some HTTP clients (Java's default Accept) and means */*.
        mtype, slash, msub = ("*", "/", "*") if media.type == "*" else media.type.partition("/")
        if not slash or not mtype or not msub:
            continue  # not a media range: ignore it as browsers and servers commonly do
        try:
            q = float(media.params.get("q", "1"))
        except ValueError:
            continue
        if not 0.0 <= q <= 1.0:
            continue
        ranges.append(_Range(mtype, msub, q, index))
    return ranges


# Clients send the same few Accept values again and again; remembering the answer for short ones
# (at most 64 of at most 128 characters: a few KB) saves parsing them on every request.
_CACHED_ACCEPT_CHARS = 128


def negotiate(accept: str | None, default: str, supported: tuple[str, ...] = SUPPORTED_ACCEPT) -> str:
    """Choose the response type for an Accept header (see _negotiate)."""
    if accept is None or not accept.strip():
        return default
    if len(accept) <= _CACHED_ACCEPT_CHARS:
        return _negotiate_cached(accept, default, supported)
    return _negotiate(accept, default, supported)


def _negotiate(accept: str, default: str, supported: tuple[str, ...]) -> str:
    """Choose the response type for an Accept header.

    Missing/empty Accept or `*/*` gives `default`. Otherwise each supported type gets the q of the most
    specific range matching it; the highest q wins, ties go to the range the client listed first, then to
    `default`, then to server order. Nothing acceptable -> 406 naming the supported types.
    """
    if accept is None or not accept.strip():
        return default
    ranges = _parse_accept(accept)
    candidates = [default] + [t for t in supported if t != default]
    best: tuple[tuple[float, int, int], str] | None = None
    for preference, candidate in enumerate(candidates):
        matches = [(r.specificity(candidate), r) for r in ranges]
        matches = [(s, r) for s, r in matches if s >= 0]
        if not matches:
            continue
        top = max(s for s, _ in matches)
        rng = min((r for s, r in matches if s == top), key=lambda r: r.index)
        if rng.q <= 0:
            continue
        key = (rng.q, -rng.index, -preference)
        if best is None or key > best[0]:
            best = (key, candidate)
    if best is None:
        raise NotAcceptable(f"cannot produce {accept.strip()!r}; supported: {', '.join(supported)}")
    return best[1]


_negotiate_cached = functools.lru_cache(maxsize=64)(_negotiate)  # a 406 raises, and is not remembered
