"""The pty helper the simulators share."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from sensors.pty_link import PtyLink, PtyLinkError, open_pty_pair


def _read_available(fd: int) -> bytes:
    os.set_blocking(fd, False)
    try:
        return os.read(fd, 4096)
    except BlockingIOError:
        return b""
    finally:
        os.set_blocking(fd, True)


def test_both_ends_are_raw() -> None:
    pair = open_pty_pair()
    try:
        data = b"a\r\nb\x03\x04\x11\x13\x7f\xff\x00"
        os.write(pair.master_fd, data)
        got = b""
        while len(got) < len(data):
            got += os.read(pair.slave_fd, 4096)
        assert got == data  # no CR/LF translation, no signals, no flow control, 8 bits
        assert _read_available(pair.master_fd) == b""  # no echo
    finally:
        pair.close()
        pair.close()


def test_link_made_and_removed(tmp_path: Path) -> None:
    link = tmp_path / "soil"
    with PtyLink(link) as pty:
        slave_path = pty.slave_path
        assert os.readlink(link) == slave_path
        assert pty.port == str(link)
        os.write(pty.master_fd, b"12345")
        # The kernel queues written bytes for the slave asynchronously.
        deadline = time.monotonic() + 5
        while pty.unread_bytes() < 5 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert pty.unread_bytes() == 5
        assert not pty.wait_drained(0.1)
        os.read(pty.slave_fd, 5)
        assert pty.wait_drained(1.0)
    assert not os.path.lexists(link)
    assert not os.path.exists(slave_path), "closing both ends frees the pty"


def test_stale_link_is_replaced(tmp_path: Path) -> None:
    link = tmp_path / "soil"
    link.symlink_to("/dev/pts/does-not-exist")
    with PtyLink(link) as pty:
        assert os.readlink(link) == pty.slave_path


def test_regular_file_is_not_replaced(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("keep me")
    with pytest.raises(PtyLinkError, match="not a symlink"), PtyLink(path):
        pass
    assert path.read_text() == "keep me"


def test_link_taken_over_by_another_is_left_alone(tmp_path: Path) -> None:
    link = tmp_path / "soil"
    with PtyLink(link):
        link.unlink()
        link.symlink_to("/dev/null")
    assert os.readlink(link) == "/dev/null"


def test_without_link() -> None:
    with PtyLink() as pty:
        assert pty.port == pty.slave_path and pty.link is None
    with pytest.raises(PtyLinkError, match="not open"):
        _ = pty.master_fd
