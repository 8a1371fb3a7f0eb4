"""The input positions an engine records with its decisions, when it reads several inputs.

An engine records with each decision the position of the input record that led to it,
and after a recovery sends again the findings of decisions taken at or after the first
position read again (`Engine.decided_since`). A correlate partition that also reads
input topics directly (worker.py, direct mode) has several inputs, with offsets of
their own: it records (source << SOURCE_SHIFT) + offset, source 0 being the correlate
topic (so a correlate record's position is its offset, as without direct inputs) and
1, 2, ... the direct input topics.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

__all__ = ["SOURCE_SHIFT", "position_of", "resend_after"]

SOURCE_SHIFT = 48  # offsets stay far below 2**48
_OFFSET_MASK = (1 << SOURCE_SHIFT) - 1


def position_of(source: int, offset: int) -> int:
    return (source << SOURCE_SHIFT) + offset


def resend_after(committed: Mapping[int, int]) -> Callable[[int], bool]:
    """Whether a decision recorded at a position is to be sent again after a recovery:
    taken at or after its source's committed offset (`committed`: source -> offset, the
    ordered commit delivered everything before it; a source not in it: everything)."""
    def again(recorded: int) -> bool:
        if recorded < 0:  # not taken on a worker
            return False
        return recorded & _OFFSET_MASK >= committed.get(recorded >> SOURCE_SHIFT, 0)

    return again
