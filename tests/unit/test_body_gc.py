"""Collecting unit bodies nobody uses: only after a grace, and never one stored again."""

from __future__ import annotations

from fleetd.body_gc import BodyCollector


def test_a_body_is_collected_only_after_staying_unused_for_the_grace() -> None:
    collector = BodyCollector(grace=60.0)
    assert collector.collectable({"a": 5, "b": 6}, {"a"}, now=0.0) == []
    assert collector.collectable({"a": 5, "b": 6}, {"a"}, now=59.0) == []
    assert collector.collectable({"a": 5, "b": 6}, {"a"}, now=60.0) == [("b", 6)]


def test_a_body_used_again_or_stored_again_starts_over() -> None:
    collector = BodyCollector(grace=60.0)
    collector.collectable({"b": 6}, set(), now=0.0)
    collector.collectable({"b": 6}, {"b"}, now=30.0)  # a job uses it again
    assert collector.collectable({"b": 6}, set(), now=70.0) == []
    collector.collectable({"c": 7}, set(), now=100.0)
    # stored again by a client (a new mod revision) just before its job is written
    assert collector.collectable({"c": 9}, set(), now=170.0) == []
    assert collector.collectable({"c": 9}, set(), now=230.0) == [("c", 9)]
