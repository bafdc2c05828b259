"""The distributed test launcher judges what the ranks wrote, not how they exited."""

from __future__ import annotations

import pytest
from _launch import AbnormalExitWarning, LaunchError, run_ranks
from _launch_workers import (
    abort_before_result,
    fail_assertion,
    fail_while_other_hangs,
    sleep_forever,
    succeed_then_abort,
    succeed_then_hang,
)

pytestmark = pytest.mark.distributed

EXPECTED = [{"rank": 0, "sum": 3.0}, {"rank": 1, "sum": 3.0}]


def test_success_then_abort_at_exit_is_a_warning_not_a_failure() -> None:
    with pytest.warns(
        AbnormalExitWarning, match="rank 1 wrote its result, then died of signal SIGABRT"
    ):
        results = run_ranks(succeed_then_abort)
    assert results == EXPECTED


@pytest.mark.slow
@pytest.mark.timeout(300)  # the rank sleeps for an hour: finishing at all shows it was stopped
def test_success_then_hang_at_exit_is_killed_with_a_warning() -> None:
    with pytest.warns(AbnormalExitWarning, match="rank 0 wrote its result, then was still running"):
        results = run_ranks(succeed_then_hang, exit_grace=1.0)
    assert results == EXPECTED


def test_assertion_in_a_worker_fails_with_its_traceback() -> None:
    with pytest.raises(LaunchError) as info:
        run_ranks(fail_assertion, grace=5.0)
    text = str(info.value)
    assert text.startswith("rank 1 raised:"), text  # the cause first, then its consequences
    assert "AssertionError: rank one disagrees: 3.0 != 4.0" in text
    assert "in fail_assertion" in text  # the worker's traceback, not the launcher's
    assert "rank 0 " in text  # its collective lost its peer: it fails too


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_rank_that_hangs_after_another_failed_is_stopped() -> None:
    with pytest.raises(LaunchError) as info:
        run_ranks(fail_while_other_hangs, grace=1.0)
    text = str(info.value)
    assert text.startswith("rank 1 raised:") and "rank one disagrees" in text
    assert "rank 0 wrote no result: it was still running and was killed" in text


@pytest.mark.slow
def test_crash_before_writing_fails() -> None:
    with pytest.raises(LaunchError, match="rank 0 wrote no result: it died of signal SIGABRT"):
        run_ranks(abort_before_result, grace=1.0)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_no_result_within_the_timeout_fails() -> None:
    with pytest.raises(LaunchError, match="rank 0 wrote no result within 5 s and was killed"):
        run_ranks(sleep_forever, timeout=5.0)
