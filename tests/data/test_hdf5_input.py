"""The forked run behind the walk of every input file: what it returns when the call returns,
raises, crashes or runs past its time limit (the walk itself is exercised by the bad inputs of
tests/test_bad_inputs.py and the fuzzing of tests/data/test_fuzz_inputs.py)."""

from __future__ import annotations

import os
import signal
import time

from lorein.data.hdf5_input import run_forked


def test_a_forked_call_reports_its_lines_and_how_it_ended() -> None:
    def returns(report):
        report("/")
        report("/@format")

    def raises(report):
        report("/kspace")
        raise ValueError("damaged")

    def crashes(report):
        report("/@signal_model")
        os.kill(os.getpid(), signal.SIGSEGV)

    def loops(report):
        report("/truth")
        time.sleep(60)

    ended = run_forked(returns, 30)
    assert (ended.ending, ended.lines) == ("returned", ["/", "/@format"])
    assert run_forked(raises, 30).ending == "raised"
    crashed = run_forked(crashes, 30)
    assert (crashed.ending, crashed.lines, crashed.signal) == (
        "crashed",
        ["/@signal_model"],
        signal.SIGSEGV,
    )
    timed_out = run_forked(loops, 0.3)  # killed well before the sleep ends
    assert (timed_out.ending, timed_out.lines) == ("timed out", ["/truth"])
