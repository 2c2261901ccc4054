"""TESTPLAN D36 in miniature: `bench/soak.py` (what `make soak` runs for 30 minutes) for a few
seconds against two workers, so the soak itself stays runnable on both backends. Every check of the
long run applies: no unexpected status or stream ending, nothing held after quiesce, the ledger
checker green, RSS and fds within bounds."""

from __future__ import annotations

from pathlib import Path

import pytest
from bench.soak import Options, Shares, soak
from tests.support.gateway import FakeUpstreamProcess

pytestmark = pytest.mark.slow


async def test_a_short_soak_passes(database_url: str, fake: FakeUpstreamProcess, tmp_path: Path) -> None:
    # More drops and faults than the long run's defaults, so a few seconds see every path.
    opts = Options(seconds=3, workers=2, clients=6, sample_seconds=1, seed=36, shares=Shares(0.7, 0.3, 0.1, 0.15))
    report, failed = await soak(database_url, fake, tmp_path, opts)
    text = "\n".join(report)
    assert not failed, text
    for seen in ("json 200", "stream 200", "stream dropped by the client", "scripted upstream fault", "402"):
        assert seen in text, text
    assert "ledger checker (I1–I6): green" in text
