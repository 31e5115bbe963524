"""contract.mqtt.TakeoverWatch: connections the broker keeps closing soon after they open."""

from contract.mqtt import TakeoverWatch


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _session(watch: TakeoverWatch, clock: Clock, lasted: float, then_wait: float = 1.0) -> bool:
    watch.connected()
    clock.now += lasted
    said = watch.lost()
    clock.now += then_wait
    return said


def test_three_short_connections_are_named_once_per_window() -> None:
    clock = Clock()
    watch = TakeoverWatch(clock)
    assert [_session(watch, clock, 1.0) for _ in range(5)] == [False, False, True, False, False]
    assert "client id 'ingest-1' (a second ingest)" in watch.hint("ingest-1", "a second ingest")
    assert "use_username_as_clientid" in watch.hint("ingest-1", "a second ingest")
    clock.now += TakeoverWatch.WINDOW_S
    assert [_session(watch, clock, 1.0) for _ in range(3)] == [False, False, True]


def test_long_connections_and_lost_links_are_not_takeovers() -> None:
    clock = Clock()
    watch = TakeoverWatch(clock)
    assert not any(_session(watch, clock, 60.0) for _ in range(10))  # a flaky link
    # Short ones spread wider than the window do not add up.
    assert not any(_session(watch, clock, 1.0, then_wait=70.0) for _ in range(6))
    # A loss reported without a connection first (a failed connect) counts as nothing.
    assert not any(watch.lost() for _ in range(5))
