"""Stop signals: SIGTERM and SIGINT end a run cleanly, with an exit status of its own.

  with StopSignals() as stop:          # training: save, then stop; generation: finish the batch
    ...
    if stop.received: raise Interrupted(...)

A run that a stop signal ended early, after saving what it had (training: a checkpoint;
generation: every finished PNG), raises `Interrupted`; `python -m grn_jax.main` turns it into
the exit status EXIT_INTERRUPTED = 75 (EX_TEMPFAIL of sysexits.h, "temporary failure, retry"),
which launch scripts and schedulers tell apart from success (0) and from a crash (1, or 128 + N
for a process killed by signal N). Running the same command again resumes.

The first SIGINT (Ctrl-C) asks for a clean stop; a second one interrupts at once
(KeyboardInterrupt). On multi-process runs SIGTERM is left to JAX's preemption service, which
agrees one stop step on every process (orbax `reached_preemption`); SIGINT is forwarded to it
as a SIGTERM, so one Ctrl-C stops every process at the same step.
"""

import os
import signal
import threading
from typing import Sequence

from absl import logging
import jax

EXIT_INTERRUPTED = 75
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Interrupted(Exception):
  """A stop signal ended the run after it saved its work; rerun the same command to resume."""

  exit_code = EXIT_INTERRUPTED

  def __init__(self, what: str, signal_name: str):
    self.what, self.signal_name = what, signal_name
    super().__init__(f"{what} stopped by {signal_name}; run the same command again to resume "
                     f"(exit status {EXIT_INTERRUPTED}).")


class StopSignals:
  """`.received` (the signal's name, or None) is set by the first of STOP_SIGNALS.

  Handlers are installed only in the main thread and put back on exit. With several JAX
  processes SIGTERM keeps JAX's preemption handler and SIGINT is forwarded to it (see the module
  docstring); `.received` then stays None and the caller asks orbax's `reached_preemption`.
  """

  def __init__(self, signals: Sequence[int] = STOP_SIGNALS):
    self.received: str | None = None
    self._signals, self._old = tuple(signals), {}
    self._multi_process = jax.process_count() > 1

  def __enter__(self) -> "StopSignals":
    if threading.current_thread() is threading.main_thread():
      for s in self._signals:
        if self._multi_process and s == signal.SIGTERM:
          continue
        self._old[s] = signal.signal(s, self._handle)
    return self

  def _handle(self, signum, frame):
    del frame
    name = signal.Signals(signum).name
    if self._multi_process:
      logging.warning("%s received: asking every process to save and stop.", name)
      os.kill(os.getpid(), signal.SIGTERM)
      return
    if self.received is not None and signum == signal.SIGINT:
      raise KeyboardInterrupt  # a second Ctrl-C: stop at once
    logging.warning("%s received: saving and stopping (Ctrl-C again to abort at once).", name)
    self.received = self.received or name

  def __exit__(self, *exc):
    for s, old in self._old.items():
      signal.signal(s, old)
    self._old = {}
