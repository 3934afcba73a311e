"""Search plans: the stages of a coarse-to-fine search over nested vector prefixes.

A plan is a list of stages ``(dim, keep)``: the first stage searches every live vector on its first ``dim``
coordinates (re-normalised) and keeps ``keep`` candidates; each later stage re-ranks the survivors on a longer
prefix and keeps fewer. This is adaptive retrieval / the funnel of Matryoshka Representation Learning
(Kusupati et al., NeurIPS 2022): with shortlist sizes k_i and prefix dims D_i the cost per query is

    N * D_1 + sum_{i>1} k_{i-1} * D_i     against N * D for exact full-dim search.

Written form (CLI, gRPC, manifests): ``"32:400,128:100,384:10"``. The last stage's ``keep`` is the default
number of results; ``search(k=...)`` returns ``k`` results and raises every shortlist below ``k`` to ``k``.
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    dim: int
    keep: int


@dataclass(frozen=True)
class Plan:
    stages: tuple[Stage, ...]

    @classmethod
    def of(cls, stages: "Plan | str | Iterable[Sequence[int]]") -> "Plan":
        """A plan from its written form, a list of (dim, keep) pairs, or a plan."""
        if isinstance(stages, Plan):
            return stages
        if isinstance(stages, str):
            return cls.parse(stages)
        try:
            pairs = [tuple(s) for s in stages]
        except TypeError:
            raise ValueError(
                f"plan: expected a written plan like '32:400,128:10' or (dim, keep) pairs, got {stages!r}"
            ) from None
        for i, pair in enumerate(pairs):
            if len(pair) != 2 or not all(isinstance(x, numbers.Integral) and not isinstance(x, bool) for x in pair):
                raise ValueError(f"plan[{i}]: expected a (dim, keep) pair of integers, got {pair!r}")
        return cls._checked([Stage(int(d), int(k)) for d, k in pairs])

    @classmethod
    def parse(cls, text: str) -> "Plan":
        return _parsed(text) if cls is Plan else cls._parse(text)

    @classmethod
    def _parse(cls, text: str) -> "Plan":
        stages = []
        for part in [p.strip() for p in text.split(",") if p.strip()]:
            dim, sep, keep = part.partition(":")
            if not sep or not dim.strip().isdigit() or not keep.strip().isdigit():
                raise ValueError(f"plan: expected stages 'dim:keep' separated by commas, got {text!r}")
            stages.append(Stage(int(dim), int(keep)))
        return cls._checked(stages)

    @classmethod
    def exact(cls, dim: int, k: int = 10) -> "Plan":
        """One stage on the full vector: exact search."""
        return cls._checked([Stage(dim, k)])

    @classmethod
    def _checked(cls, stages: list[Stage]) -> "Plan":
        if not stages:
            raise ValueError("plan: expected at least one (dim, keep) stage, got none")
        for i, s in enumerate(stages):
            if s.dim < 1 or s.keep < 1:
                raise ValueError(f"plan[{i}]: expected dim >= 1 and keep >= 1, got ({s.dim}, {s.keep})")
            if i and s.dim <= stages[i - 1].dim:
                raise ValueError(
                    f"plan[{i}].dim: expected more than the previous stage's {stages[i - 1].dim}, got {s.dim}"
                )
            if i and s.keep > stages[i - 1].keep:
                raise ValueError(
                    f"plan[{i}].keep: expected at most the previous stage's {stages[i - 1].keep}, got {s.keep}"
                )
        return cls(tuple(stages))

    @functools.lru_cache(maxsize=4096)  # noqa: B019 - plans are immutable and few; every search asks this
    def for_k(self, k: int) -> "Plan":
        """This plan returning ``k`` results: the last stage keeps k, no shortlist is shorter than k."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k: expected an integer >= 1, got {k!r}")
        stages = [Stage(s.dim, max(s.keep, k)) for s in self.stages[:-1]]
        return Plan(tuple(stages) + (Stage(self.stages[-1].dim, k),))

    def within(self, dim: int) -> "Plan":
        """This plan on vectors only ``dim`` long (older model versions during a rollout): the stages shorter
        than ``dim`` as they are, then one last stage at ``dim`` keeping this plan's ``k``."""
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim: expected an integer >= 1, got {dim!r}")
        if dim >= self.max_dim:
            return self
        kept = tuple(s for s in self.stages[:-1] if s.dim < dim)
        return Plan(kept + (Stage(dim, self.k),))

    def check_dim(self, dim: int) -> None:
        if self.max_dim > dim:
            raise ValueError(f"plan: expected stage dims at most the collection's {dim}, got {self.max_dim}")

    @property
    def max_dim(self) -> int:
        return self.stages[-1].dim

    @property
    def k(self) -> int:
        return self.stages[-1].keep

    def flops(self, n: int) -> int:
        """Multiply-adds per query over ``n`` vectors when stage one is an exact scan (a shortlist holds at most
        ``n``)."""
        cost = n * self.stages[0].dim
        for prev, s in zip(self.stages, self.stages[1:]):
            cost += min(prev.keep, n) * s.dim
        return cost

    @functools.lru_cache(maxsize=4096)  # noqa: B019 - as for_k
    def __str__(self) -> str:
        return ",".join(f"{s.dim}:{s.keep}" for s in self.stages)


@functools.lru_cache(maxsize=1024)
def _parsed(text: str) -> Plan:
    """``Plan.parse``, once per written form (a server parses its collections' plans on every search)."""
    return Plan._parse(text)
