"""The bench's bound on closed-loop latency from the CPU each request costs."""
import pytest

from bench.machine import closed_loop_mean_floor_ms


def test_the_mean_latency_floor_follows_littles_law():
    # 1,000 requests that cost 4.2 s of CPU in all: at best 2 cores answer 476 a second, so 16 clients always
    # waiting see 16 / 476 s = 33.6 ms on average
    assert closed_loop_mean_floor_ms(4.2, 1000, 16, 2) == pytest.approx(33.6)
    assert closed_loop_mean_floor_ms(4.2, 1000, 16, 4) == pytest.approx(16.8)  # twice the cores, half the wait
    assert closed_loop_mean_floor_ms(2.1, 1000, 16, 2) == pytest.approx(16.8)  # half the cost, half the wait
    assert closed_loop_mean_floor_ms(4.2, 1000, 8, 2) == pytest.approx(16.8)  # half the clients, half the wait
