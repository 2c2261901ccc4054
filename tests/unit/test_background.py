"""The background queue requests hand their mail to: bounded, isolated failures, drained at close."""

from __future__ import annotations

import asyncio
import logging

import pytest

from teamrouter.background import Background


async def test_runs_everything_queued_at_most_concurrency_at_once():
    background = Background(concurrency=2)
    running, most, done = 0, 0, []

    async def job(n: int) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.01)
        running -= 1
        done.append(n)

    for n in range(7):
        background.put(lambda n=n: job(n), what=f"job {n}")
    await background.idle()
    assert sorted(done) == list(range(7)) and most == 2


async def test_a_failing_job_is_logged_and_the_rest_still_run(caplog: pytest.LogCaptureFixture):
    background = Background(concurrency=1)
    done: list[str] = []

    async def fails() -> None:
        raise OSError("mail server refused")

    async def works() -> None:
        done.append("ok")

    background.put(fails, what="mail 'Verify'")
    background.put(works, what="mail 'Other'")
    with caplog.at_level(logging.ERROR, logger="teamrouter.background"):
        await background.idle()
    assert done == ["ok"]
    assert "background work failed: mail 'Verify'" in caplog.text


async def test_idle_waits_for_work_queued_by_queued_work():
    background = Background()
    done: list[str] = []

    async def mail() -> None:
        await asyncio.sleep(0)
        done.append("mail")

    async def lookup_then_mail() -> None:
        await asyncio.sleep(0)
        background.put(mail, what="mail")

    background.put(lookup_then_mail, what="resend")
    await background.idle()
    assert done == ["mail"]


async def test_a_full_queue_drops_and_says_so(caplog: pytest.LogCaptureFixture):
    background = Background(concurrency=1, max_waiting=2)
    gate = asyncio.Event()
    done: list[int] = []

    async def job(n: int) -> None:
        await gate.wait()
        done.append(n)

    with caplog.at_level(logging.ERROR, logger="teamrouter.background"):
        for n in range(4):  # the first is taken at once by the worker: 1 running, 2 waiting, 1 dropped
            background.put(lambda n=n: job(n), what=f"job {n}")
            await asyncio.sleep(0)
    gate.set()
    await background.idle()
    assert done == [0, 1, 2] and "dropped job 3" in caplog.text


async def test_close_waits_for_queued_work_then_gives_up(caplog: pytest.LogCaptureFixture):
    finished: list[str] = []

    async def quick() -> None:
        await asyncio.sleep(0.01)
        finished.append("quick")

    background = Background()
    background.put(quick, what="quick")
    await background.close()
    assert finished == ["quick"]

    stuck = Background(drain_seconds=0.05)
    stuck.put(asyncio.Event().wait, what="a mail server that never answers")
    with caplog.at_level(logging.WARNING, logger="teamrouter.background"):
        await stuck.close()
    assert "1 background job(s) unfinished" in caplog.text
    await stuck.idle()  # nothing left running


async def test_a_job_queued_once_takes_one_place_until_it_has_run():
    background = Background(concurrency=1, max_waiting=4)
    release = asyncio.Event()
    runs: list[str] = []

    async def resend(name: str) -> None:
        await release.wait()
        runs.append(name)

    # A flood of the same resend takes one place; the queue keeps room for other mail. `put` says
    # whether it queued (the mail dispatcher counts its senders by it).
    queued = [background.put(lambda: resend("a"), what="resend", once="resend:a") for _ in range(50)]
    assert queued == [True] + [False] * 49
    background.put(lambda: resend("b"), what="resend", once="resend:b")
    background.put(lambda: resend("mail"), what="mail")
    background.put(lambda: resend("mail"), what="mail")
    release.set()
    await background.idle()
    assert sorted(runs) == ["a", "b", "mail", "mail"]
    # Once it has run, the same key may be queued again.
    background.put(lambda: resend("a"), what="resend", once="resend:a")
    await background.idle()
    assert runs.count("a") == 2
