"""The scheduler every model-running job shares: programs of Sample/Choice steps on both drivers."""
import threading
from dataclasses import replace

import pytest

from charter.backends.base import EngineDead
from charter.backends.fake import FakeBackend
from charter.errors import BackendError
from charter.pipeline.scheduler import Choice, Sample, failure_kind, run_programs
from charter.types import Sampling

SAMPLING = Sampling(max_tokens=8, temperature=1.0, seed=3)


def two_step(item):
    """Two answers, then a multiple-choice question on them."""
    answers = yield [Sample([{"role": "user", "content": f"q{item}"}], SAMPLING)] * 2
    texts = [a.text for a in answers]
    (logps,) = yield [Choice(f"which of {texts}?", ("(A)", "(B)"))]
    return {"item": item, "answers": texts, "logps": logps}


def run(backend, items, program=two_step, **kw):
    got = {}
    run_programs(backend, items, program, lambda item, res, err: got.__setitem__(item, (res, err)), **kw)
    return got


@pytest.mark.parametrize("concurrency", [None, 4])
def test_every_item_finishes_once_with_its_own_results(concurrency):
    fake = FakeBackend(responder=lambda prompt: prompt)  # echoes: each answer shows its prompt
    fake.concurrency = concurrency
    got = run(fake, range(10), batch_size=3)
    assert sorted(got) == list(range(10))
    for item, (res, err) in got.items():
        assert err is None and res["item"] == item
        assert all(f"q{item}" in a for a in res["answers"])
        assert res["logps"] == [-3.0, -3.0]


def test_batched_driver_gathers_like_steps_across_items():
    fake = FakeBackend()
    sizes = []
    chat = fake.chat
    fake.chat = lambda convos, s: (sizes.append(len(convos)), chat(convos, s))[1]
    run(fake, range(8), batch_size=4)
    assert max(sizes) == 4  # steps of several items in one call, never more than batch_size


def test_streaming_driver_overlaps_items():
    """A slow step of one item does not hold another item's steps back."""
    fake = FakeBackend()
    fake.concurrency = 2
    release, order = threading.Event(), []
    chat = fake.chat

    def slow_chat(convos, s):
        if "q0" in convos[0][0]["content"]:
            release.wait(5)
        return chat(convos, s)

    fake.chat = slow_chat
    run_programs(fake, range(3), two_step,
                 lambda item, res, err: (order.append(item), item != 0 and len(order) == 2 and release.set()))
    assert order[-1] == 0 and sorted(order) == [0, 1, 2]


@pytest.mark.parametrize("concurrency", [None, 4])
def test_a_failed_step_fails_its_item_not_the_run(concurrency):
    fake = FakeBackend(fail_on="q3")
    fake.concurrency = concurrency
    got = run(fake, range(6), batch_size=1)
    assert got[3][0] is None and "scripted failure" in got[3][1]
    assert all(got[i][1] is None for i in (0, 1, 2, 4, 5))


@pytest.mark.parametrize("concurrency", [None, 2])
def test_the_same_failure_from_the_start_stops_the_run(concurrency):
    fake = FakeBackend(fail_on="q")
    fake.concurrency = concurrency
    with pytest.raises(BackendError, match="all failed with"):
        run(fake, range(100), batch_size=1)
    assert len(fake.calls) < 100


def test_failure_kind_ignores_the_message():
    class Gateway(Exception):
        status_code = 502

    assert failure_kind(Gateway("request id 1")) == failure_kind(Gateway("request id 2")) == "Gateway (HTTP 502)"
    assert failure_kind(ValueError("x")) != failure_kind(KeyError("x"))


@pytest.mark.parametrize("concurrency", [None, 3])
def test_an_error_in_on_done_stops_the_run_with_that_error(concurrency):
    fake = FakeBackend()
    fake.concurrency = concurrency

    def on_done(item, res, err):
        if item == 2:
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        run_programs(fake, range(20), two_step, on_done, batch_size=2)


@pytest.mark.parametrize("concurrency", [None, 3])
def test_a_dead_engine_stops_the_run(concurrency):
    fake = FakeBackend()
    fake.concurrency = concurrency

    def dead(convos, s):
        raise EngineDead("the engine died")

    fake.chat = dead
    with pytest.raises(EngineDead):
        run(fake, range(5))


def test_a_program_error_is_its_items_row():
    def broken(item):
        yield [Sample("x", SAMPLING, text=True)]
        if item == 1:
            raise ValueError("bad item")
        return item

    got = run(FakeBackend(), range(3), program=broken)
    assert got[1] == (None, "ValueError: bad item") and got[0] == (0, None)


def test_steps_go_to_the_backend_they_name():
    policy, judge = FakeBackend("policy"), FakeBackend("judge")

    def prog(item):
        (a,) = yield [Sample("p", SAMPLING, text=True, backend="policy")]
        (lp,) = yield [Choice("c", ("(A)", "(B)"), backend="judge")]
        return a.text, lp

    got = run({"policy": policy, "judge": judge}, range(2), program=prog)
    assert len(policy.calls) == 2 and judge.calls == [] and got[0][1] is None


def test_items_are_taken_lazily():
    taken = []

    def items():
        for i in range(1000):
            taken.append(i)
            yield i

    fake = FakeBackend()
    seen = []
    with pytest.raises(KeyboardInterrupt):
        run_programs(fake, items(), two_step,
                     lambda item, res, err: (seen.append(item), len(seen) == 5 and (_ for _ in ()).throw(KeyboardInterrupt)),
                     batch_size=4)
    assert len(taken) < 20  # the window, not the whole stream


def test_calls_that_differ_in_their_seed_run_at_once_on_an_engine_that_batches_internally():
    """A program's steps seeded apart are separate calls; on a concurrent engine none waits for another."""
    fake = FakeBackend()
    fake.concurrency = 4
    both = threading.Barrier(2, timeout=10)
    chat = fake.chat

    def meet(convos, s):
        both.wait()  # returns only once the other call is in flight too
        return chat(convos, s)

    fake.chat = meet

    def seeded(item):
        got = yield [Sample([{"role": "user", "content": "q"}], replace(SAMPLING, seed=k)) for k in (1, 2)]
        return [c.text for c in got]

    got = run(fake, [0], program=seeded)
    assert got[0][1] is None and len(got[0][0]) == 2
