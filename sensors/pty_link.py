"""Pseudo-terminal pairs for the sensor simulators.

A simulator holds the master end and speaks a device's protocol on it; the driver under
test opens the slave end by path with pyserial, as it would open ``/dev/ttyUSB0``.
:class:`PtyLink` also puts a symlink at a stable path, so a config can name the port before
the simulator has started.

Both ends are put in raw mode: otherwise the line discipline echoes, translates CR/LF and
eats control bytes. The slave end stays open in the simulator for the life of the pair:
when the last slave descriptor closes, Linux resets its termios (raw mode is lost) and
reads on the master fail with EIO, so a driver that closes and reopens the port would find
a different tty.
"""

import contextlib
import fcntl
import os
import struct
import termios
import time
import tty
from pathlib import Path
from types import TracebackType
from typing import NamedTuple, Self


class PtyLinkError(RuntimeError):
    """The pty pair or its symlink could not be made; the message says what to do."""


class PtyPair(NamedTuple):
    """Both ends of a pseudo-terminal, in raw mode. Close both fds when done."""

    master_fd: int
    slave_path: str
    """The slave's device name, e.g. /dev/pts/7."""
    slave_fd: int

    def close(self) -> None:
        """Close both ends (the slave device then disappears). Safe to call twice."""
        for fd in (self.master_fd, self.slave_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


def open_pty_pair() -> PtyPair:
    """Open a pty pair with both ends in raw mode; raise PtyLinkError if the system has none."""
    try:
        master_fd, slave_fd = os.openpty()
    except OSError as err:
        raise PtyLinkError(
            f"cannot open a pseudo-terminal pair: {err}; is /dev/pts mounted (devpts)?"
        ) from err
    try:
        tty.setraw(master_fd, termios.TCSANOW)
        tty.setraw(slave_fd, termios.TCSANOW)
        slave_path = os.ttyname(slave_fd)
    except (OSError, termios.error) as err:
        os.close(master_fd)
        os.close(slave_fd)
        raise PtyLinkError(f"cannot set up the pseudo-terminal pair: {err}") from err
    return PtyPair(master_fd, slave_path, slave_fd)


def unread_bytes(fd: int) -> int:
    """Bytes waiting in the input queue of the tty ``fd`` (TIOCINQ / FIONREAD)."""
    raw = fcntl.ioctl(fd, termios.FIONREAD, struct.pack("i", 0))
    count: int = struct.unpack("i", raw)[0]
    return count


class PtyLink:
    """A raw pty pair whose slave is reachable at ``link`` (a symlink) while in use.

    ``with PtyLink("/tmp/soil") as pty: os.write(pty.master_fd, b"...")``. Entering makes
    the pair and the symlink (replacing a stale symlink left by a killed simulator, but
    never a regular file); leaving removes the symlink, if it still points to this pair,
    and closes both ends. Without ``link`` no symlink is made: use ``slave_path``.
    """

    def __init__(self, link: str | os.PathLike[str] | None = None):
        self.link = Path(link) if link is not None else None
        self._pair: PtyPair | None = None

    def __enter__(self) -> Self:
        self._pair = open_pty_pair()
        if self.link is not None:
            try:
                self._make_link(self.link, self._pair.slave_path)
            except BaseException:
                self._pair.close()
                self._pair = None
                raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Remove the symlink (if it is still ours) and close both ends. Safe to call twice."""
        pair, self._pair = self._pair, None
        if pair is None:
            return
        if self.link is not None:
            try:
                if os.readlink(self.link) == pair.slave_path:
                    self.link.unlink()
            except OSError:
                pass  # already gone, or replaced by someone else: not ours to remove
        pair.close()

    @staticmethod
    def _make_link(link: Path, target: str) -> None:
        if os.path.lexists(link) and not link.is_symlink():
            raise PtyLinkError(
                f"link path {str(link)!r} exists and is not a symlink; remove it or choose "
                "another path"
            )
        temporary = link.with_name(f".{link.name}.{os.getpid()}.tmp")
        try:
            temporary.unlink(missing_ok=True)
            os.symlink(target, temporary)
            os.replace(temporary, link)  # atomic: a reader never sees the link missing
        except OSError as err:
            temporary.unlink(missing_ok=True)
            raise PtyLinkError(f"cannot create the symlink {str(link)!r}: {err}") from err

    @property
    def pair(self) -> PtyPair:
        if self._pair is None:
            raise PtyLinkError("the pty link is not open; use it in a with block")
        return self._pair

    @property
    def master_fd(self) -> int:
        return self.pair.master_fd

    @property
    def slave_fd(self) -> int:
        return self.pair.slave_fd

    @property
    def slave_path(self) -> str:
        return self.pair.slave_path

    @property
    def port(self) -> str:
        """The path a driver should open: the symlink if there is one, else the slave."""
        return str(self.link) if self.link is not None else self.pair.slave_path

    def unread_bytes(self) -> int:
        """Bytes in the slave's queue that the driver has not read yet (see wait_drained)."""
        return unread_bytes(self.pair.slave_fd)

    def wait_drained(self, timeout: float, settle: float = 0.05) -> bool:
        """Wait up to ``timeout`` s for the driver to read everything written; True if it did.

        The kernel moves bytes written to the master into the slave's queue a moment later
        (a work queue), so an empty queue right after a write proves nothing: the queue
        must stay empty for ``settle`` seconds.
        """
        deadline = time.monotonic() + timeout
        empty_since: float | None = None
        while True:
            now = time.monotonic()
            if self.unread_bytes() > 0:
                empty_since = None
            elif empty_since is None:
                empty_since = now
            elif now - empty_since >= settle:
                return True
            if now >= deadline:
                return False
            time.sleep(0.01)
