"""Lists asked for by many threads are computed in batches by one thread, each request getting its own list."""

from __future__ import annotations

import threading
import time

import pytest

from tastemaker.errors import OverloadedError, StoreError, TastemakerError
from tastemaker.serving import ListRequest, Recommender
from tastemaker.serving.batcher import ListBatcher


def test_concurrent_requests_are_batched_and_each_gets_its_own_list(recommender: Recommender) -> None:
    asks = [ListRequest(f"u{n % 30}", k=5 + n % 4, request_id=f"r{n}") for n in range(60)]
    alone = {a.request_id: [i.item_id for i in recommender.recommend([a])[0].items] for a in asks}
    batcher = ListBatcher(recommender, max_batch=8)
    gate = _hold(recommender)  # the first batch waits until every request is queued: later ones must batch
    got: dict[str, list[str]] = {}

    def ask(request: ListRequest) -> None:
        served = batcher.recommend(request)
        assert served.user_id == request.user_id and served.request_id == request.request_id
        got[request.request_id] = [i.item_id for i in served.items]

    threads = [threading.Thread(target=ask, args=(a,)) for a in asks]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 20
    while (not batcher.sizes or len(batcher._queued) < len(asks) - max(batcher.sizes)) and time.monotonic() < deadline:
        time.sleep(0.01)  # until the first batch is held and everyone else waits
    gate.set()
    for t in threads:
        t.join(30)
    batcher.close()
    assert got == alone  # the same lists as one at a time (lengths included)
    assert max(batcher.sizes) == 8 and sum(size * n for size, n in batcher.sizes.items()) == len(asks)


def test_a_failing_batch_is_served_one_by_one_so_a_failure_stays_with_its_request(recommender: Recommender) -> None:
    release = recommender.recommend

    def fails_for_bad(requests):
        if any(r.user_id == "bad" for r in requests):
            raise StoreError("the store is down for bad")
        return release(requests)

    recommender.recommend = fails_for_bad  # type: ignore[method-assign]
    batcher = ListBatcher(recommender)
    futures = [batcher.submit(ListRequest(u, k=5)) for u in ("u1", "bad", "u2")]
    assert futures[0].result(30).user_id == "u1" and futures[2].result(30).user_id == "u2"
    with pytest.raises(StoreError, match="down for bad"):
        futures[1].result(30)
    batcher.close()
    with pytest.raises(TastemakerError, match="closed"):
        batcher.submit(ListRequest("u1"))


def test_close_serves_what_is_queued(recommender: Recommender) -> None:
    batcher = ListBatcher(recommender, max_batch=2)
    futures = [batcher.submit(ListRequest(f"u{n}", k=4)) for n in range(5)]
    batcher.close()
    assert all(f.done() and len(f.result().items) == 4 for f in futures)


def test_requests_that_waited_too_long_are_refused_and_abandoned_ones_dropped(recommender: Recommender) -> None:
    """A server behind its load sheds: a list that waited past the bound is refused (OverloadedError: a 503),
    one whose caller gave up is never computed, and the next request is served as usual."""
    computed: list[str] = []
    gate = _hold(recommender, computed)
    refused: list[str] = []
    batcher = ListBatcher(recommender, max_batch=8, max_wait_seconds=0.2, on_refused=refused.append)
    first = batcher.submit(ListRequest("u1", k=5, request_id="first"))
    _until_computing(batcher)  # the first request is being computed (held at the gate)
    late = batcher.submit(ListRequest("u2", k=5, request_id="late"))
    gone = batcher.submit(ListRequest("u3", k=5, request_id="gone"))
    assert gone.cancel()  # its caller gave up while it waited
    time.sleep(0.3)  # both wait past the bound
    gate.set()
    assert first.result(30).request_id == "first"
    with pytest.raises(OverloadedError, match="behind its load"):
        late.result(30)
    assert batcher.submit(ListRequest("u4", k=5, request_id="next")).result(30).request_id == "next"
    batcher.close()
    assert computed == ["first", "next"] and (batcher.shed, batcher.abandoned) == (1, 1)
    assert sorted(refused) == ["abandoned", "overloaded"]  # what /metrics counts (tastemaker_lists_refused_total)


def test_a_request_given_up_while_computed_does_not_stop_the_batcher(recommender: Recommender) -> None:
    gate = _hold(recommender)
    batcher = ListBatcher(recommender)
    running = batcher.submit(ListRequest("u1", k=5))
    _until_computing(batcher)  # the first request is being computed (held at the gate)
    assert not running.cancel()  # being computed: it is answered, whoever still waits for it
    gate.set()
    assert running.result(30).user_id == "u1"
    assert batcher.submit(ListRequest("u2", k=5)).result(30).user_id == "u2"
    batcher.close()


def test_pending_counts_the_lists_queued_and_computed_until_each_is_answered(recommender: Recommender) -> None:
    """What a busy worker's route reads (``rebalance_pending``): queued lists and the batch being computed
    count; an answered, refused or abandoned one does not, and a request's own list has stopped counting by
    the time its answer is seen."""
    gate = _hold(recommender)
    batcher = ListBatcher(recommender, max_batch=1, max_wait_seconds=0.2)
    seen_at_answer: list[int] = []
    first = batcher.submit(ListRequest("u1", k=5))
    first.add_done_callback(lambda done: seen_at_answer.append(batcher.pending))
    _until_computing(batcher)  # the first request is being computed (held at the gate)
    late = batcher.submit(ListRequest("u2", k=5))
    gone = batcher.submit(ListRequest("u3", k=5))
    assert batcher.pending == 3
    assert gone.cancel() and batcher.pending == 2
    time.sleep(0.3)  # the second waits past the bound: refused when its turn comes
    gate.set()
    assert first.result(30).user_id == "u1"
    with pytest.raises(OverloadedError):
        late.result(30)
    batcher.close()  # (``result`` may return before a future's callbacks ran; after this they all have)
    assert seen_at_answer == [1] and batcher.pending == 0


def _hold(recommender: Recommender, computed: list[str] | None = None) -> threading.Event:
    """Every call of ``recommender.recommend`` waits until the returned gate is set (``computed``: the request ids
    of each call, in order)."""
    gate = threading.Event()
    release = recommender.recommend

    def held(requests):
        gate.wait(10)
        if computed is not None:
            computed.extend(r.request_id for r in requests)
        return release(requests)

    recommender.recommend = held  # type: ignore[method-assign]
    return gate


def _until_computing(batcher: ListBatcher) -> None:
    deadline = time.monotonic() + 10
    while not batcher.sizes and time.monotonic() < deadline:
        time.sleep(0.01)
