"""Plane batches: slabs cover the readout once per epoch, in an order fixed by seed and epoch."""

import pytest

from lorein.methods.lorein.batches import PlaneBatches


@pytest.mark.parametrize(("nx", "width", "n"), [(24, 8, 3), (24, 7, 4), (5, 2, 3), (6, 10, 1)])
def test_slabs_are_contiguous_disjoint_and_cover_the_readout(nx: int, width: int, n: int) -> None:
    batches = PlaneBatches(nx, width, seed=0)
    assert batches.per_epoch == n
    planes = [x for s in batches.slabs for x in range(s.start, s.stop)]
    assert planes == list(range(nx))
    widths = [s.stop - s.start for s in batches.slabs]
    assert max(widths) <= width and max(widths) - min(widths) <= 1


def test_each_epoch_visits_every_slab_in_an_order_of_seed_and_epoch() -> None:
    batches = PlaneBatches(40, 4, seed=3)
    epochs = [[batches.planes(e * 10 + i) for i in range(10)] for e in range(4)]
    for taken in epochs:
        assert sorted(taken, key=lambda s: s.start) == list(batches.slabs)
    assert len({tuple(s.start for s in taken) for taken in epochs}) > 1  # shuffled per epoch
    again = PlaneBatches(40, 4, seed=3)
    assert [again.planes(i) for i in range(40)] == [s for taken in epochs for s in taken]
    other = PlaneBatches(40, 4, seed=4)
    assert [other.planes(i) for i in range(40)] != [again.planes(i) for i in range(40)]
