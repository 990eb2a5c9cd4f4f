"""The `tfggm` command's launcher: keeps TensorFlow's start-up log lines off the screen, then runs the CLI.

TensorFlow writes C++ log lines (oneDNN, CUDA drivers, CPU features) to file descriptor 2 while it is imported,
whatever TF_CPP_MIN_LOG_LEVEL says, and importing any module of `tfggm` imports TensorFlow through the package's
`__init__`, and again when it first looks for devices (on a machine without a GPU, a "failed call to cuInit"
error line). This module therefore lives outside the package, so that it runs first. Unless `--verbose` is among
the arguments it sends descriptor 2 to a temporary file while `tfggm.mnist.cli` (and with it TensorFlow) is
imported and the physical devices are listed (which neither creates the runtime context nor runs an op, so a
multi-worker strategy can still be made afterwards), replays that file if either fails, and sets
TF_CPP_MIN_LOG_LEVEL=2 for the rest of the run (the CLI then hides TensorFlow's Python warnings too). Errors and
tracebacks raised later still reach the terminal.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator

__all__ = ["main"]


@contextlib.contextmanager
def _descriptor_2_captured() -> Iterator[None]:
  """Descriptor 2 goes to a temporary file inside the block; on an exception the file is replayed."""
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as captured:
    os.dup2(captured.fileno(), 2)
    try:
      yield
    except BaseException:
      os.dup2(saved, 2)
      captured.seek(0)
      os.write(2, captured.read())
      raise
    finally:
      os.dup2(saved, 2)
      os.close(saved)


def main() -> int:
  """Runs `tfggm` with the arguments of this process (see `tfggm.mnist.cli.main`)."""
  verbose = "--verbose" in sys.argv[1:]
  if verbose:
    from tfggm.mnist import cli
  else:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with _descriptor_2_captured():
      import tensorflow as tf

      from tfggm.mnist import cli
      tf.config.list_physical_devices()
  return cli.main()


if __name__ == "__main__":
  sys.exit(main())
