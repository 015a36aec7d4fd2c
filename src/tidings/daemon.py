"""Running in the background: detaching, pid files and dropping privileges.

``--detach`` does what a well-behaved Unix daemon does: drop privileges
(``--uid``/``--gid``) first, then fork, start a new session, fork again (so
the daemon can never reacquire a terminal), change to ``--workdir``, set
``--umask``, send stdout and stderr to ``--logfile`` (stdin from
``/dev/null``), and write the pid file.  The pid file is written atomically;
one naming a live process stops a second instance, one naming a dead
process (stale) is replaced, and it is removed on exit.
"""

from __future__ import annotations

import atexit
import errno
import grp
import os
import pwd
import sys
from pathlib import Path


class DaemonError(RuntimeError):
    """A daemon option cannot be applied; the message says why."""


# -- pid files --------------------------------------------------------------------------------


def read_pid(path: str | Path) -> int | None:
    """The pid a pid file names; None when absent, empty or not a pid."""
    try:
        text = Path(path).read_text().strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise DaemonError(f"cannot read pid file {path}: {exc.strerror}") from None
    try:
        pid = int(text)
    except ValueError:
        return None
    return pid if pid > 0 else None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, it is just not ours
    return True


class Pidfile:
    """An atomically written pid file that refuses to replace a live one."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).absolute()
        self.pid: int | None = None

    def check(self) -> None:
        """Raise :class:`DaemonError` if the file names a live process other than us."""
        pid = read_pid(self.path)
        if pid is not None and pid != os.getpid() and pid_alive(pid):
            raise DaemonError(
                f"pid file {self.path} names running process {pid}: already running? "
                f"(stop it, or remove the file if that process is not ours)")

    def acquire(self) -> None:
        self.check()
        pid = os.getpid()
        tmp = self.path.with_name(f".{self.path.name}.{pid}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.write(fd, f"{pid}\n".encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.link(tmp, self.path)  # fails if the file exists: no blind overwrite
            except FileExistsError:
                self.check()  # still stale (or empty): replace it
                os.replace(tmp, self.path)
        except OSError as exc:
            raise DaemonError(f"cannot write pid file {self.path}: {exc.strerror}") from None
        finally:
            try:
                tmp.unlink()
            except OSError:
                pass
        if read_pid(self.path) != pid:
            raise DaemonError(f"pid file {self.path} was taken by another process")
        self.pid = pid
        atexit.register(self.release)

    def release(self) -> None:
        """Remove the file if it is still ours."""
        if self.pid is not None and self.pid == os.getpid() and read_pid(self.path) == self.pid:
            try:
                self.path.unlink()
            except OSError:
                pass
        self.pid = None


# -- privileges -------------------------------------------------------------------------------


def _uid(value: str) -> tuple[int, int | None, str | None]:
    """uid, primary gid and user name for a user name or number."""
    try:
        entry = pwd.getpwuid(int(value)) if value.isdigit() else pwd.getpwnam(value)
    except (KeyError, OverflowError):
        if value.isdigit():
            return int(value), None, None
        raise DaemonError(f"no such user: {value!r}") from None
    return entry.pw_uid, entry.pw_gid, entry.pw_name


def _gid(value: str) -> int:
    if value.isdigit():
        return int(value)
    try:
        return grp.getgrnam(value).gr_gid
    except KeyError:
        raise DaemonError(f"no such group: {value!r}") from None


def drop_privileges(uid: str | None = None, gid: str | None = None) -> None:
    """Become ``uid``/``gid`` (names or numbers); verifies root cannot be regained."""
    if not uid and not gid:
        return
    target_uid, user_gid, user_name = _uid(str(uid)) if uid else (None, None, None)
    target_gid = _gid(str(gid)) if gid else user_gid
    if os.geteuid() != 0:
        if (target_uid is None or target_uid == os.geteuid()) and (
                target_gid is None or target_gid == os.getegid()):
            return
        raise DaemonError("--uid/--gid need root privileges (this process is not root)")
    try:
        if target_gid is not None:
            os.setgid(target_gid)
            if user_name is not None:
                os.initgroups(user_name, target_gid)
            else:
                os.setgroups([target_gid])
        if target_uid is not None:
            os.setuid(target_uid)
    except OSError as exc:
        raise DaemonError(f"cannot switch to uid={uid} gid={gid}: {exc.strerror}") from None
    if target_uid is not None and target_uid != 0:
        try:
            os.setuid(0)
        except OSError as exc:
            if exc.errno != errno.EPERM:
                raise
        else:
            raise DaemonError("privileges were not dropped: root could be regained")


def parse_umask(value: str | int | None) -> int | None:
    """``022``/``0o022`` octal (a leading zero means octal, as in Celery), else decimal."""
    if value is None or value == "":
        return None
    if isinstance(value, int):
        return value
    text = value.strip().lower()
    try:
        if text.startswith("0o"):
            return int(text[2:], 8)
        if text.startswith("0") and len(text) > 1:
            return int(text, 8)
        return int(text, 10)
    except ValueError:
        raise DaemonError(f"invalid umask {value!r} (e.g. 022)") from None


# -- detaching --------------------------------------------------------------------------------


def detach(logfile: str | None = None, pidfile: str | None = None, uid: str | None = None,
           gid: str | None = None, umask: str | int | None = None,
           workdir: str | None = None) -> Pidfile | None:
    """Turn this process into a daemon; returns (in the daemon) its acquired pid file.

    Everything that can fail because of an option is checked before the first
    fork, so the user sees the error in the terminal.
    """
    mask = parse_umask(umask)
    workdir = os.path.abspath(workdir or os.getcwd())
    if not os.path.isdir(workdir):
        raise DaemonError(f"working directory {workdir} does not exist")
    pid_lock = Pidfile(pidfile) if pidfile else None
    if pid_lock is not None:
        pid_lock.check()
    logpath = os.path.abspath(logfile) if logfile else None
    drop_privileges(uid, gid)
    if logpath is not None:
        try:
            with open(logpath, "a"):
                pass
        except OSError as exc:
            raise DaemonError(f"cannot write log file {logpath}: {exc.strerror}") from None
    if pid_lock is not None:
        parent = pid_lock.path.parent
        if not os.access(parent, os.W_OK):
            raise DaemonError(f"cannot write pid file in {parent}: permission denied")

    sys.stdout.flush()
    sys.stderr.flush()
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    os.chdir(workdir)
    if mask is not None:
        os.umask(mask)
    null = os.open(os.devnull, os.O_RDWR)
    out = os.open(logpath, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) if logpath else null
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    for fd in {null, out}:
        if fd > 2:
            os.close(fd)
    if pid_lock is not None:
        pid_lock.acquire()
    return pid_lock
