"""Order a unit's segments so that neighbouring samples come from different files.

Greedy: always take the next segment of the file with the most segments left that is
not the file just taken (ties broken by a seeded order). This never puts two segments
of one file side by side unless that file holds more than half of what is left.
"""

from __future__ import annotations

import heapq
import random


def interleave(counts: list[int], seed: int) -> list[tuple[int, int]]:
    """counts[i] = segments of file i → [(file, segment), …] with files alternating."""
    rng = random.Random(seed)
    tiebreak = list(range(len(counts)))
    rng.shuffle(tiebreak)
    heap = [(-n, tiebreak[i], i) for i, n in enumerate(counts) if n > 0]
    heapq.heapify(heap)
    taken = [0] * len(counts)
    order: list[tuple[int, int]] = []
    held = None  # the file just taken, kept out of the heap for one step
    while heap:
        neg, tb, i = heapq.heappop(heap)
        order.append((i, taken[i]))
        taken[i] += 1
        if held is not None:
            heapq.heappush(heap, held)
        held = (neg + 1, tb, i) if neg + 1 < 0 else None
    if held is not None:  # only the last file had segments left: they must sit together
        _, _, i = held
        while taken[i] < counts[i]:
            order.append((i, taken[i]))
            taken[i] += 1
    return order
