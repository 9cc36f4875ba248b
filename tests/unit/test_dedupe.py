"""Duplicate member events are told apart from a re-read of the same record."""

from __future__ import annotations

from features.dedupe import DuplicateEvents


def test_a_second_record_with_the_same_event_id_is_a_duplicate_of_the_first():
    d = DuplicateEvents(window=10)
    assert d.first_offsets([("e1", 0, 5), ("e2", 0, 6), ("e1", 0, 7)]) == [None, None, 5]
    assert d.first_offsets([("e1", 0, 9)]) == [5]  # and again later


def test_a_re_read_of_the_same_record_is_not_a_duplicate():
    d = DuplicateEvents(window=10)
    d.first_offsets([("e1", 0, 5), ("e2", 0, 6)])
    assert d.first_offsets([("e1", 0, 5), ("e2", 0, 6)]) == [None, None]  # replayed after a crash


def test_partitions_are_separate_and_the_window_forgets_the_oldest():
    d = DuplicateEvents(window=2)
    assert d.first_offsets([("e1", 0, 1), ("e1", 1, 1)]) == [None, None]
    d.first_offsets([("e2", 0, 2), ("e3", 0, 3)])  # e1 leaves partition 0's window
    assert d.first_offsets([("e1", 0, 4), ("e3", 0, 5), ("e1", 1, 9)]) == [None, 3, 1]
