"""The soak's "flat memory and file descriptors" verdict (TESTPLAN D36, bench/soak.py) on made-up
/proc samples: growth before the warm-up is ignored, growth after it past the bounds is not."""

from __future__ import annotations

from bench.soak import FD_GROWTH, RSS_GROWTH_BYTES, ProcStat, Sample, flatness

MB = 2**20


def run(*worker: tuple[float, int, int], server: ProcStat | None = None) -> list[Sample]:
    """Samples at the given times of one worker (pid 2) with (t, RSS MB, fds), plus the server (pid 1)."""
    base = server or ProcStat("server", 80 * MB, 13)
    return [Sample(at=t, procs={1: base, 2: ProcStat("worker", rss * MB, fds)}) for t, rss, fds in worker]


def test_growth_during_the_warmup_is_not_a_leak() -> None:
    assert flatness(run((0, 60, 20), (5, 110, 35), (60, 112, 36), (100, 115, 38)), warmup=10) == []


def test_rss_past_20_percent_after_the_warmup_fails() -> None:
    problems = flatness(run((0, 100, 20), (10, 100, 20), (100, 121, 20)), warmup=10)
    assert len(problems) == 1 and "worker 2: RSS 100.0 -> 121.0 MB" in problems[0]


def test_rss_past_50_mb_fails_even_under_20_percent() -> None:
    big = RSS_GROWTH_BYTES // MB * 10  # 50 MB more is only 10% of this one
    assert flatness(run((10, big, 20), (100, big + 51, 20)), warmup=10)
    assert flatness(run((10, big, 20), (100, big + 49, 20)), warmup=10) == []


def test_fds_past_the_bound_fail() -> None:
    assert flatness(run((10, 100, 20), (100, 100, 20 + FD_GROWTH)), warmup=10) == []
    problems = flatness(run((10, 100, 20), (100, 100, 21 + FD_GROWTH)), warmup=10)
    assert problems == [f"worker 2: open fds 20 -> {21 + FD_GROWTH} (bound +{FD_GROWTH})"]


def test_a_replaced_worker_fails() -> None:
    first = Sample(at=10, procs={2: ProcStat("worker", 100 * MB, 20)})
    last = Sample(at=100, procs={3: ProcStat("worker", 100 * MB, 20)})
    assert flatness([first, last], warmup=10) == ["workers changed during the run: [2] gone, now [3]"]


def test_a_worker_replaced_during_the_warmup_fails_too() -> None:
    early = Sample(at=1, procs={2: ProcStat("worker", 100 * MB, 20)})
    later = [Sample(at=t, procs={3: ProcStat("worker", 100 * MB, 20)}) for t in (10, 100)]
    assert flatness([early, *later], warmup=10) == ["workers changed during the run: [2] gone, now [3]"]
