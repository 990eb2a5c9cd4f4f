"""Files written whole or not at all, and directories with one owner at a time.

A file is written under a temporary name beside its target (`.tmp-<pid>-<name>`) and renamed over the
target only once complete: a reader sees the old file or the new one, never a part, and a full disk or a
kill leaves the old one intact. The owner of a directory (`owned_directory`) removes the temporaries that
dead writers left behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pathlib
import shutil
import socket
import sys
import time
from collections.abc import Iterator

__all__ = ["DirectoryBusy", "replacing", "write_text", "write_json", "owned_directory"]

TEMPORARY_PREFIX = ".tmp-"


class DirectoryBusy(RuntimeError):
  """Another live process owns the directory."""


@contextlib.contextmanager
def replacing(path: str | os.PathLike) -> Iterator[pathlib.Path]:
  """Yields a temporary path beside `path` to write; renames it over `path` when the block succeeds.

  The temporary keeps the target's suffix (Keras and matplotlib choose their format by it). On any
  error, or a KeyboardInterrupt, it is removed and `path` is untouched. Files are flushed to disk
  (fsync) before the rename, so that the rename never publishes a file whose data is not yet written.
  """
  path = pathlib.Path(path)
  temporary = path.with_name(f"{TEMPORARY_PREFIX}{os.getpid()}-{path.name}")
  try:
    yield temporary
    if temporary.is_file():
      with temporary.open("rb") as f:
        os.fsync(f.fileno())
    os.replace(temporary, path)
  finally:
    _remove(temporary)


def write_text(path: str | os.PathLike, text: str) -> None:
  """Writes `text` to `path` whole or not at all."""
  with replacing(path) as temporary:
    temporary.write_text(text)


def write_json(path: str | os.PathLike, value) -> None:
  """Writes `value` as indented JSON to `path` whole or not at all."""
  write_text(path, json.dumps(value, indent=2) + "\n")


@contextlib.contextmanager
def owned_directory(path: str | os.PathLike, lock_name: str = ".lock") -> Iterator[pathlib.Path]:
  """Makes `path` (if needed) and owns it for the block: one owner at a time, on this host or another.

  The owner holds an exclusive `flock` on `path/lock_name` and writes its pid, host and start time
  into it. The kernel releases the lock when the owner exits, however it ends, so a lock left by a
  killed process is free: it is taken over with a message naming the dead owner. A live owner makes
  this raise DirectoryBusy naming it. The new owner first removes the temporaries dead writers left.
  """
  path = pathlib.Path(path)
  path.mkdir(parents=True, exist_ok=True)
  lock = path / lock_name
  fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      raise DirectoryBusy(f"{path} is in use by {_describe(_read_owner(fd))}; wait for it to finish, or stop "
                          "it, and run the command again.") from None
    previous = _read_owner(fd)
    if previous:
      print(f"tfggm: {path} was left locked by {_describe(previous)}, which is no longer running; "
            "taking it over.", file=sys.stderr, flush=True)
    owner = dict(pid=os.getpid(), host=socket.gethostname(), since=time.strftime("%Y-%m-%d %H:%M:%S %Z"))
    _write_owner(fd, json.dumps(owner))
    _remove_temporaries(path)
    try:
      yield path
    finally:
      _write_owner(fd, "")  # a clean exit leaves no owner to report
  finally:
    os.close(fd)  # releases the flock


def _read_owner(fd: int) -> dict:
  os.lseek(fd, 0, os.SEEK_SET)
  try:
    owner = json.loads(os.read(fd, 4096) or b"{}")
  except ValueError:
    return {"pid": "unknown (unreadable lock file)"}
  return owner if isinstance(owner, dict) else {}


def _write_owner(fd: int, text: str) -> None:
  os.ftruncate(fd, 0)
  os.lseek(fd, 0, os.SEEK_SET)
  os.write(fd, text.encode())


def _describe(owner: dict) -> str:
  return (f"process {owner.get('pid', 'unknown')} on host {owner.get('host', 'unknown')} "
          f"(since {owner.get('since', 'unknown')})")


def _remove_temporaries(directory: pathlib.Path) -> None:
  for temporary in directory.glob(f"{TEMPORARY_PREFIX}*"):
    _remove(temporary)


def _remove(path: pathlib.Path) -> None:
  if path.is_dir() and not path.is_symlink():
    shutil.rmtree(path, ignore_errors=True)
  else:
    path.unlink(missing_ok=True)
