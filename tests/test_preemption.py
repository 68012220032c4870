"""Stop signals: SIGTERM and SIGINT ask for a clean stop, a second Ctrl-C aborts at once, the
old handlers come back; main turns a stopped run into exit status 75."""

import os
import signal

import pytest

from grn_jax import preemption


def test_sigterm_and_sigint_are_recorded_and_a_second_ctrl_c_aborts():
  before = {s: signal.getsignal(s) for s in preemption.STOP_SIGNALS}
  with preemption.StopSignals() as stop:
    assert stop.received is None
    os.kill(os.getpid(), signal.SIGINT)
    assert stop.received == "SIGINT"
    os.kill(os.getpid(), signal.SIGTERM)
    assert stop.received == "SIGINT"  # the first signal names the stop
    with pytest.raises(KeyboardInterrupt):
      os.kill(os.getpid(), signal.SIGINT)
  assert {s: signal.getsignal(s) for s in preemption.STOP_SIGNALS} == before
  with preemption.StopSignals() as stop:
    os.kill(os.getpid(), signal.SIGTERM)
  assert stop.received == "SIGTERM"


def test_interrupted_names_the_signal_and_the_exit_status():
  error = preemption.Interrupted("training in /w (checkpoint of step 6 saved)", "SIGINT")
  assert error.exit_code == preemption.EXIT_INTERRUPTED == 75
  assert str(error) == ("training in /w (checkpoint of step 6 saved) stopped by SIGINT; run the "
                        "same command again to resume (exit status 75).")
