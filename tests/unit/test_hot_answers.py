"""Ready manifest answers: kept for their interval only, within their memory bound."""

from __future__ import annotations

from mirror.api.hot import MAX_KEY, HotAnswer, HotAnswers
from mirror.oci.digest import Digest

DIGEST = Digest.parse("sha256:" + "a" * 64)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def answer(size: int) -> HotAnswer:
    return HotAnswer("docker.io", "library/alpine", "3", DIGEST, b"x" * size, {})


def key(number: int) -> tuple[str, str, str]:
    return (f"/v2/library/alpine/manifests/{number}", "", "application/json")


def test_an_answer_is_kept_for_its_interval_only() -> None:
    """Served until `ttl` seconds after it was put, never after."""
    clock = Clock()
    hot = HotAnswers(ttl=1.0, timer=clock)
    kept = answer(10)
    hot.put(key(1), kept)
    clock.now += 0.99
    assert hot.get(key(1)) is kept
    clock.now += 0.02
    assert hot.get(key(1)) is None


def test_the_oldest_answers_make_room_within_the_bound() -> None:
    """A put that would pass the bound drops the oldest answers first; memory stays counted."""
    one = answer(1000).weight
    hot = HotAnswers(ttl=60.0, max_bytes=3 * one, timer=Clock())
    for number in range(5):
        hot.put(key(number), answer(1000))
        assert hot.memory <= hot.memory_bound
    assert [hot.get(key(n)) is not None for n in range(5)] == [False, False, True, True, True]
    assert hot.memory == 3 * one


def test_expired_answers_give_their_memory_back() -> None:
    """Answers past their interval are dropped by the next put, whatever room is left."""
    clock = Clock()
    hot = HotAnswers(ttl=1.0, max_bytes=1 << 20, timer=clock)
    hot.put(key(1), answer(100))
    hot.put(key(2), answer(100))
    clock.now += 2
    fresh = answer(100)
    hot.put(key(3), fresh)
    assert hot.memory == fresh.weight


def test_replacing_an_answer_counts_it_once() -> None:
    """The same key put twice holds the newer answer, and its memory once."""
    hot = HotAnswers(timer=Clock())
    hot.put(key(1), answer(100))
    newer = answer(200)
    hot.put(key(1), newer)
    assert hot.get(key(1)) is newer
    assert hot.memory == newer.weight


def test_outlandish_keys_and_answers_are_not_kept() -> None:
    """A key over MAX_KEY bytes, or an answer over the whole bound, is not kept."""
    hot = HotAnswers(max_bytes=answer(100).weight, timer=Clock())
    hot.put(("/v2/x/manifests/y", "", "a" * MAX_KEY), answer(10))
    hot.put(key(2), answer(101))
    assert hot.memory == 0
