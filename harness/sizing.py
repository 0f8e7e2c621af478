"""`mme-local size`: replay a trace on candidate endpoints (instance type x count) and pick the cheapest that
meets a p99 latency and hit-rate target.

Each instance's container gets the instance type's memory, less a reserve for the OS, SageMaker's agents and
the container's own processes, as its model budget (MME_MEMORY_BUDGET: a load past it answers 507 and the
harness unloads the least recently used model, as SageMaker does). CPU is this machine's, not the instance
type's: latency figures compare candidates with each other, they do not predict the instance's own.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from sklearn_mme.harness.replay_report import ReplayReport
from sklearn_mme.harness.units import format_size

# vCPUs and memory: Amazon EC2's instance type pages (aws.amazon.com/ec2/instance-types/; SageMaker's ml.*
# types are the same machines). Prices: SageMaker real-time inference, on demand, us-east-1, USD per hour,
# from aws.amazon.com/sagemaker/pricing/ at the time of writing: check them for your region.
TABLE_SOURCE = (
    "memory and vCPUs: Amazon EC2 instance types (aws.amazon.com/ec2/instance-types/); prices: SageMaker "
    "real-time inference on demand, us-east-1 (aws.amazon.com/sagemaker/pricing/), at the time of writing"
)


@dataclass(frozen=True)
class InstanceType:
    name: str
    vcpus: int
    memory_gib: float
    usd_per_hour: float

    @property
    def memory_bytes(self) -> int:
        return int(self.memory_gib * 1024**3)


INSTANCE_TYPES = {
    t.name: t
    for t in (
        InstanceType("ml.t2.medium", 2, 4, 0.056),
        InstanceType("ml.t2.large", 2, 8, 0.111),
        InstanceType("ml.c5.large", 2, 4, 0.102),
        InstanceType("ml.c5.xlarge", 4, 8, 0.204),
        InstanceType("ml.c5.2xlarge", 8, 16, 0.408),
        InstanceType("ml.m5.large", 2, 8, 0.115),
        InstanceType("ml.m5.xlarge", 4, 16, 0.23),
        InstanceType("ml.m5.2xlarge", 8, 32, 0.461),
        InstanceType("ml.m5.4xlarge", 16, 64, 0.922),
        InstanceType("ml.r5.large", 2, 16, 0.151),
        InstanceType("ml.r5.xlarge", 4, 32, 0.302),
        InstanceType("ml.r5.2xlarge", 8, 64, 0.605),
    )
}


class SizingError(ValueError):
    """Bad input to `size` (an unknown instance type, a reserve larger than an instance)."""


@dataclass(frozen=True)
class Candidate:
    type: InstanceType
    count: int

    @property
    def usd_per_hour(self) -> float:
        return self.type.usd_per_hour * self.count

    @property
    def label(self) -> str:
        return f"{self.count} x {self.type.name}"


@dataclass(frozen=True)
class Target:
    p99_ms: float
    min_hit_rate: float  # 0..1
    max_error_rate: float = 0.0  # 0..1 of requests that may fail


@dataclass(frozen=True)
class Trial:
    candidate: Candidate
    budget_bytes: int  # each instance's MME_MEMORY_BUDGET
    requests: int
    errors: int
    hit_rate: float | None
    p99_ms: float | None
    evictions: int
    no_room: int
    meets: bool
    why: str  # what missed the target, or "meets the target"


def candidates(type_names: list[str], max_instances: int, reserve: int) -> list[Candidate]:
    """Every type x 1..max_instances, cheapest first (ties: fewer instances, then the name)."""
    unknown = [n for n in type_names if n not in INSTANCE_TYPES]
    if unknown:
        raise SizingError(f"unknown instance type {', '.join(unknown)} (known: {', '.join(INSTANCE_TYPES)})")
    for name in type_names:
        if INSTANCE_TYPES[name].memory_bytes <= reserve:
            gib = INSTANCE_TYPES[name].memory_gib
            raise SizingError(f"{name} has {gib:g} GiB, not more than the reserve")
    counts = range(1, max_instances + 1)
    found = [Candidate(INSTANCE_TYPES[n], c) for n in dict.fromkeys(type_names) for c in counts]
    return sorted(found, key=lambda c: (c.usd_per_hour, c.count, c.type.name))


def budget(candidate: Candidate, reserve: int) -> int:
    return candidate.type.memory_bytes - reserve


def judge(candidate: Candidate, budget_bytes: int, report: ReplayReport, target: Target) -> Trial:
    total = report.total
    rate, p99 = total.hit_rate, total.percentile_ms(99)
    misses = []
    if rate is None or rate < target.min_hit_rate:
        shown = "-" if rate is None else f"{100 * rate:.1f}%"
        misses.append(f"hit rate {shown} < {100 * target.min_hit_rate:g}%")
    if p99 is None or p99 > target.p99_ms:
        misses.append(f"p99 {'-' if p99 is None else f'{p99:.0f}'} ms > {target.p99_ms:g} ms")
    if total.errors > target.max_error_rate * total.requests:
        misses.append(f"{total.errors} errors")
    return Trial(candidate, budget_bytes, total.requests, total.errors, rate, p99, total.evictions,
                 sum(r.no_room for r in report.instances.values()), not misses,
                 "; ".join(misses) or "meets the target")


def pick(trials: list[Trial]) -> Trial | None:
    """The cheapest trial that meets the target."""
    passing = [t for t in trials if t.meets]
    return min(passing, key=lambda t: (t.candidate.usd_per_hour, t.candidate.count)) if passing else None


def this_cpu() -> str:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs{f' ({model})' if model else ''}"


def evaluate(cands: list[Candidate], reserve: int, target: Target,
             run: Callable[[Candidate, int], ReplayReport]) -> list[Trial]:
    """Replay on every candidate (`run(candidate, budget)` starts its endpoint and replays) and judge it."""
    return [judge(c, budget(c, reserve), run(c, budget(c, reserve)), target) for c in cands]


def report(inputs: dict[str, str], trials: list[Trial], chosen: Trial | None) -> str:
    lines = ["size: inputs"]
    lines += [f"  {k:<16} {v}" for k, v in inputs.items()]
    lines.append(f"  {'instance table':<16} {TABLE_SOURCE}")
    lines.append(f"  {'CPU':<16} this machine's, {this_cpu()}: not the instance type's")
    lines.append("")
    header = f"  {'configuration':<22} {'$/hour':>7} {'budget/inst':>11} {'hit %':>6} {'p99 ms':>7} " \
             f"{'errors':>6} {'evicted':>7} {'507':>5}  verdict"
    lines.append(header)
    for t in trials:
        rate = "-" if t.hit_rate is None else f"{100 * t.hit_rate:.1f}"
        p99 = "-" if t.p99_ms is None else f"{t.p99_ms:.0f}"
        lines.append(
            f"  {t.candidate.label:<22} {t.candidate.usd_per_hour:>7.3f} "
            f"{format_size(t.budget_bytes):>11} "
            f"{rate:>6} {p99:>7} {t.errors:>6} {t.evictions:>7} {t.no_room:>5}  {t.why}"
        )
    lines.append("")
    if chosen is None:
        lines.append("pick: none of the configurations meets the target")
    else:
        cost = chosen.candidate.usd_per_hour
        lines.append(f"pick: {chosen.candidate.label} (${cost:.3f}/hour), the cheapest that meets the target")
    return "\n".join(lines)
