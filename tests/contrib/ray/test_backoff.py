"""How often the two ends of a channel poll (no Ray needed)."""

from __future__ import annotations

import pytest
from taskloom_ray import channels


def test_backoff_polls_at_a_twentieth_of_the_quiet_time_within_its_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(channels.time, "monotonic", lambda: now[0])
    backoff = channels.Backoff()
    assert backoff.next() == channels.POLL_MIN
    now[0] += 0.004  # 4 ms quiet: a twentieth is 0.2 ms, below the floor
    assert backoff.next() == channels.POLL_MIN
    now[0] += 0.036  # 40 ms quiet
    assert backoff.next() == pytest.approx(0.002)
    now[0] += 60
    assert backoff.next() == channels.POLL_MAX
    backoff.reset()
    assert backoff.next() == channels.POLL_MIN
