"""Filling the served slots under business rules, with exploration: the policy whose propensities the stage logs.

Slot by slot: a pinned slot shows its pinned document (propensity 1); any other slot shows, with probability 1 - eps,
the first document of the deterministic order still eligible, else one drawn uniformly among the eligible. Eligible:
not shown yet, not pinned to a later slot, and within every cap (at most `limit` documents sharing a value of the
cap's field among the first `within` slots). The propensity of what is shown is exact for this policy -
(1 - eps) [it is the greedy choice] + eps / |eligible| - and over the eligible documents they sum to 1 at every slot.
With no rules it is the stage's epsilon-greedy (`reranker.exploration.epsilon_greedy_slots`), draw for draw.
A slot no document may fill (caps exhausted the candidates) ends the slate there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Cap:
    """At most `limit` documents per value of a field among the first `within` slots (None: all of them)."""

    values: Sequence[Sequence[Any]]  # each candidate's values of the field (empty: never capped)
    limit: int
    within: int | None = None
    name: str = "cap"

    def membership(self) -> np.ndarray:
        """(candidates x distinct values) booleans."""
        index: dict[Any, int] = {}
        pairs = [(i, index.setdefault(v, len(index))) for i, vs in enumerate(self.values) for v in vs]
        out = np.zeros((len(self.values), max(len(index), 1)), dtype=bool)
        for i, j in pairs:
            out[i, j] = True
        return out


@dataclass
class Slate:
    shown: np.ndarray  # candidate indexes, slot by slot
    propensity: np.ndarray  # of each shown document at its slot
    greedy: np.ndarray  # bool: the slot showed its greedy choice (a pin counts as greedy)
    # candidate -> the caps that held it below its place
    capped: dict[int, list[str]] = field(default_factory=dict)


def fill_slots(order: np.ndarray, k: int, epsilon: float, rng: np.random.Generator,
               pins: dict[int, int] | None = None, caps: Sequence[Cap] = ()) -> Slate:  # fmt: skip
    """`order`: the deterministic order (candidate indexes, best first; candidates absent from it are never shown).
    `pins`: slot -> candidate index (a slot past the end of a shorter slate means its last slot; of two pins on one
    slot the first keeps it)."""
    n = max([int(order.max()) + 1 if len(order) else 0, *(len(cap.values) for cap in caps)])
    last = min(k, len(order)) - 1
    kept: dict[int, int] = {}
    for s, c in (pins or {}).items():
        if s >= 0 and last >= 0:
            kept.setdefault(min(s, last), c)
    pins = kept
    pinned_later = np.zeros(n, dtype=bool)
    for c in pins.values():
        pinned_later[c] = True
    available = np.zeros(n, dtype=bool)
    available[order] = True
    rank = np.full(n, n + len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    members = [cap.membership() for cap in caps]
    counts = [np.zeros(m.shape[1], dtype=np.int64) for m in members]
    # the candidates with a value at its cap (a value fills once)
    blocked = [np.zeros(n, dtype=bool) for _ in caps]

    def count(i: int, c: int) -> None:
        hit = members[i][c]
        counts[i][hit] += 1
        for value in np.flatnonzero(hit & (counts[i] >= caps[i].limit)).tolist():
            blocked[i] |= members[i][:, value]

    # pinned documents count against a cap from the start when their slot is inside its window (a pin outranks a
    # cap: pins alone past a cap are shown, and reported by `violations`)
    for i, cap in enumerate(caps):
        for s, c in pins.items():
            if (cap.within is None or s < cap.within) and available[c]:
                count(i, c)
    shown: list[int] = []
    prop: list[float] = []
    greedy_flags: list[bool] = []
    capped: dict[int, set[str]] = {}
    for slot in range(min(k, len(order))):
        if slot in pins and available[pins[slot]]:
            pick, p, greedy_pick = int(pins[slot]), 1.0, True
        else:
            eligible = available & ~pinned_later
            for i, cap in enumerate(caps):
                if cap.within is None or slot < cap.within:
                    for held in np.flatnonzero(eligible & blocked[i]).tolist():
                        capped.setdefault(held, set()).add(cap.name)
                    eligible &= ~blocked[i]
            left = np.flatnonzero(eligible)  # in index order: the uniform draw's order, as the stage's kernel
            if not len(left):
                break
            greedy = int(left[np.argmin(rank[left])])
            explore = rng.random() < epsilon if epsilon > 0 else False
            u = int(rng.integers(0, len(left))) if epsilon > 0 else 0
            pick = int(left[u]) if explore else greedy
            greedy_pick = pick == greedy
            p = (1 - epsilon) * greedy_pick + epsilon / len(left)
        shown.append(pick)
        prop.append(p)
        greedy_flags.append(greedy_pick)
        available[pick] = False
        pinned_later[pick] = False
        for i, cap in enumerate(caps):
            reserved = slot in pins and pins[slot] == pick and (cap.within is None or slot < cap.within)
            if not reserved:
                count(i, pick)
    for c in shown:  # a document shown was not held back in the end
        capped.pop(c, None)
    return Slate(np.array(shown, dtype=np.int64), np.array(prop), np.array(greedy_flags, dtype=bool),
                 {c: sorted(v) for c, v in capped.items()})  # fmt: skip


def violations(shown: Sequence[int], pins: dict[int, int], caps: Sequence[Cap]) -> list[str]:
    """Which rules a slate breaks (empty: it complies): a pin not at its slot, a cap exceeded within its window."""
    out = []
    for slot, c in pins.items():
        if slot < len(shown) and shown[slot] != c:
            out.append(f"pin of candidate {c} at slot {slot}: slot shows {shown[slot]}")
    for cap in caps:
        window = list(shown if cap.within is None else shown[: cap.within])
        tally: dict[Any, int] = {}
        for c in window:
            for v in set(cap.values[c]):
                tally[v] = tally.get(v, 0) + 1
        out += [
            f"{cap.name}: {v!r} shown {n} times (limit {cap.limit})"
            for v, n in tally.items()
            if n > cap.limit
        ]
    return out
