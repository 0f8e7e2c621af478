"""Where a process's pages are: /proc/PID/smaps summed by kind of mapping (issue 13's per-worker cost).

A forked worker's cost to the container is its private pages (Private_Clean + Private_Dirty): pages it
shares with its loader or siblings are counted once in the tree's PSS sum however many share them. So the
breakdown is by private kB (and PSS beside it), per kind of mapping:

- `heap`: glibc's main arena (brk), where small C allocations and pymalloc's fallbacks live;
- `pymalloc`: python's obmalloc arenas: anonymous 1 MiB mmaps in 3.11, which the kernel merges with their
  neighbours into one mapping, so any anonymous mapping of a whole number of MiB;
- `thread stack`: an anonymous 8 MiB-ish mapping right after a 4 KiB PROT_NONE guard;
- `malloc arena`: a glibc per-thread arena (a 64 MiB reservation, partly PROT_NONE);
- `anon other`: any other anonymous mapping (numpy's large buffers, mmap'd mallocs);
- `stack`: the main thread's stack; `.so data`/`.so code`: writable / other mappings of shared objects;
- `file other`: other files (memfds, the python binary, locale archives ...).
"""

from __future__ import annotations

import re
from collections import defaultdict

_HEADER = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S{4}) \S+ \S+ \d+\s*(.*)$")
KINDS = ("heap", "pymalloc", "thread stack", "malloc arena", "anon other", "stack", ".so data", ".so code",
         "file other")
_ARENA = 1024 * 1024
_HEAP_MAX = 64 * 1024 * 1024


def _mappings(pid: int) -> list[dict]:
    maps: list[dict] = []
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            m = _HEADER.match(line)
            if m:
                start, end = int(m.group(1), 16), int(m.group(2), 16)
                maps.append({"start": start, "end": end, "perms": m.group(3), "path": m.group(4).strip()})
                continue
            key, _, rest = line.partition(":")
            if maps and rest.strip().endswith("kB"):
                maps[-1][key] = int(rest.split()[0])
    return maps


def classify(maps: list[dict]) -> list[str]:
    """The kind (one of KINDS) of each mapping of one process, in order."""
    kinds = []
    for i, mp in enumerate(maps):
        path, size = mp["path"], mp["end"] - mp["start"]
        prev = maps[i - 1] if i else None
        nxt = maps[i + 1] if i + 1 < len(maps) else None
        if path == "[heap]":
            kind = "heap"
        elif path == "[stack]":
            kind = "stack"
        elif path.startswith("["):
            kind = "file other"
        elif path:
            kind = (".so data" if "w" in mp["perms"] else ".so code") if ".so" in path else "file other"
        elif mp["perms"].startswith("---"):
            kind = "anon other"  # a guard or reservation: never resident
        elif (prev is not None and prev["end"] == mp["start"] and prev["perms"].startswith("---")
              and prev["end"] - prev["start"] == 4096 and not prev["path"]):
            kind = "thread stack"
        elif mp["start"] % _HEAP_MAX == 0 and (size == _HEAP_MAX or (
                nxt is not None and nxt["start"] == mp["end"] and nxt["perms"].startswith("---")
                and nxt["end"] - mp["start"] == _HEAP_MAX)):
            kind = "malloc arena"
        elif size % _ARENA == 0:
            kind = "pymalloc"
        else:
            kind = "anon other"
        kinds.append(kind)
    return kinds


def breakdown(pid: int) -> dict[str, dict[str, int]]:
    """Per kind: private kB, PSS kB, RSS kB and mapping count of process `pid`."""
    maps = _mappings(pid)
    out: dict[str, dict[str, int]] = defaultdict(lambda: {"private_kb": 0, "pss_kb": 0, "rss_kb": 0,
                                                          "mappings": 0})
    for mp, kind in zip(maps, classify(maps), strict=True):
        entry = out[kind]
        entry["private_kb"] += mp.get("Private_Clean", 0) + mp.get("Private_Dirty", 0)
        entry["pss_kb"] += mp.get("Pss", 0)
        entry["rss_kb"] += mp.get("Rss", 0)
        entry["mappings"] += 1
    return dict(out)


def threads(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("Threads:"))


def format_breakdown(rows: list[tuple[str, dict[str, dict[str, int]]]]) -> str:
    """One column per process (label, breakdown): private kB per kind, then the totals."""
    labels = [label for label, _ in rows]
    width = max(10, *(len(label) for label in labels))
    lines = [f"{'private kB':<14}" + "".join(f"{label:>{width + 2}}" for label in labels)]
    for kind in KINDS:
        vals = [b.get(kind, {}).get("private_kb", 0) for _, b in rows]
        if any(vals):
            lines.append(f"{kind:<14}" + "".join(f"{v:>{width + 2},}" for v in vals))
    lines.append(f"{'total private':<14}" + "".join(
        f"{sum(e['private_kb'] for e in b.values()):>{width + 2},}" for _, b in rows))
    lines.append(f"{'total PSS':<14}" + "".join(
        f"{sum(e['pss_kb'] for e in b.values()):>{width + 2},}" for _, b in rows))
    return "\n".join(lines)
