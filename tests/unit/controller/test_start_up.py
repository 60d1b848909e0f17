"""What the operator process does once, before it handles anything."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from vram_operator.controller.main import freeze_start_up_objects


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


class Cycle:
    def __init__(self) -> None:
        self.me = self


def test_start_up_objects_are_left_out_of_later_collections_and_later_garbage_is_not(unfrozen: None) -> None:
    """Every full collection walked the imported modules, classes and models again (the most objects
    of the process, none of them garbage): at a thousand servers about a seventh of its CPU."""
    before_start_up = Cycle()
    freeze_start_up_objects()
    assert not any(tracked is before_start_up for tracked in gc.get_objects())  # no collection looks at it
    assert gc.get_freeze_count() > len(gc.get_objects())  # most of what a process holds after its imports
    Cycle()  # garbage made later, in a cycle: only a collection frees it
    assert gc.collect() > 0
