"""A pseudo-terminal whose slave end is published at a path, as a serial device would be.

The simulator owns the master end and reads/writes it without blocking; any serial master
(pyserial, pymodbus, libmodbus tools such as ``mbpoll``) opens the published path as it
would ``/dev/ttyUSB0``. The simulator keeps its own handle on the slave end open so that the
master end never sees EIO between clients and the raw line settings stay in force.

A pty has no baud rate: settings such as 19200 8E1 that a client applies are accepted and
ignored, which is why the RTU server can emulate line timing itself.

One wrinkle: the kernel's pty driver silently clears PARENB, and Debian's glibc makes
``tcsetattr`` fail with EINVAL when parity was asked for and *no* flag changed. A client that
configures 8E1 on a port whose settings already equal its own (the previous client left
them so) would therefore fail to open. After every burst it reads, the simulator sets the
line back to a neutral speed (B50, no CLOCAL) -- raw mode and ``c_cc`` untouched, so a
client mid-session notices nothing -- and the next client's configuration changes a flag.
A client that applies identical settings twice in a row on one open port (pymodbus's *sync*
serial client does) can still fail; its async client and libmodbus tools do not.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import termios
import tty
from collections.abc import Callable
from pathlib import Path

from hw_sim.errors import SimulatorError


class PtyError(SimulatorError, OSError):
    """The pseudo-terminal could not be created or published."""


class PseudoTerminal:
    """Owns a pty pair and the symlink that publishes its slave end; `close` releases both."""

    def __init__(self, link: str | os.PathLike[str]) -> None:
        self.link = Path(link)
        self.master_fd, self._slave_fd = os.openpty()
        try:
            tty.setraw(self._slave_fd)
            tty.setraw(self.master_fd)
            self.neutralise_line_settings()
            os.set_blocking(self.master_fd, False)
            self.slave_name = os.ttyname(self._slave_fd)
            self._publish()
        except OSError as exc:
            self._close_fds()
            raise PtyError(exc.errno, f"cannot publish pty at {self.link}: {exc.strerror}") from exc
        self._closed = False

    def _publish(self) -> None:
        if self.link.is_symlink():
            # A link left behind by a simulator that was killed; a live one would be ours to keep.
            target = os.readlink(self.link)
            if os.path.exists(target) and target.startswith("/dev/pts/") and _in_use(target):
                raise OSError(errno.EEXIST, f"{self.link} already points at a live pty {target}")
            self.link.unlink()
        elif self.link.exists():
            raise OSError(errno.EEXIST, f"{self.link} exists and is not a symlink")
        self.link.parent.mkdir(parents=True, exist_ok=True)
        self.link.symlink_to(self.slave_name)

    def read(self, size: int = 4096) -> bytes:
        """Bytes a client wrote, or ``b""`` if none are waiting."""
        try:
            data = os.read(self.master_fd, size)
        except BlockingIOError:
            return b""
        except OSError as exc:
            if exc.errno == errno.EIO:  # no client, nothing to read
                return b""
            raise
        self.neutralise_line_settings()
        return data

    def neutralise_line_settings(self) -> None:
        """Set speed B50 without CLOCAL on the slave end (see the module docstring)."""
        with contextlib.suppress(OSError, termios.error):
            attrs = termios.tcgetattr(self._slave_fd)
            attrs[2] = (attrs[2] & ~(termios.CBAUD | termios.CLOCAL | termios.PARENB)) | termios.B50
            attrs[4] = attrs[5] = termios.B50
            termios.tcsetattr(self._slave_fd, termios.TCSANOW, attrs)

    def write(self, data: bytes) -> None:
        """Send bytes to the client (dropped if the buffer is full: a line has no flow control)."""
        view = memoryview(data)
        while view:
            try:
                written = os.write(self.master_fd, view)
            except BlockingIOError:
                return
            view = view[written:]

    def discard_pending_output(self) -> None:
        """Forget bytes written to the client that it has not read (a power cut drops them)."""
        with contextlib.suppress(OSError):
            termios.tcflush(self._slave_fd, termios.TCIFLUSH)

    def add_reader(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], object]) -> None:
        """Call `callback` whenever the client has written something."""
        loop.add_reader(self.master_fd, callback)

    def remove_reader(self, loop: asyncio.AbstractEventLoop) -> None:
        """Stop watching the master end."""
        loop.remove_reader(self.master_fd)

    def close(self) -> None:
        """Remove the link (if still ours) and close both ends; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(OSError):
            if self.link.is_symlink() and os.readlink(self.link) == self.slave_name:
                self.link.unlink()
        self._close_fds()

    def _close_fds(self) -> None:
        for fd in (self.master_fd, self._slave_fd):
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> PseudoTerminal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _in_use(device: str) -> bool:
    """Whether some process still holds `device` open (best effort, via /proc)."""
    real = os.path.realpath(device)
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        with contextlib.suppress(OSError):
            for fd in fd_dir.iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) == real:
                        return True
    return False
