"""The harness's own capacity policy: `--max-models` and `--memory-budget` (each model counted at its
extracted size). With neither set the container's 507 is the only limit (see container_loads.py)."""

from __future__ import annotations

from dataclasses import dataclass

from sklearn_mme.harness.errors import ValidationError


@dataclass(frozen=True)
class CapacityPolicy:
    max_models: int | None = None
    memory_budget: int | None = None

    def check(self, key: str, footprint: int) -> None:
        """A model bigger than the whole budget can never load: say so instead of evicting everything."""
        budget = self.memory_budget
        if budget is not None and footprint > budget:
            raise ValidationError(
                f"Model {key} needs about {footprint} bytes, more than the whole memory budget "
                f"({budget} bytes)."
            )

    def fits(self, held: list[int], footprint: int) -> bool:
        """Whether one more model of `footprint` bytes fits next to models of `held` bytes."""
        if self.max_models is not None and len(held) + 1 > self.max_models:
            return False
        if self.memory_budget is not None and sum(held) + footprint > self.memory_budget:
            return False
        return True
