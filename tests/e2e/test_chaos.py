"""`make chaos`, bounded: 1,000 profiles through the local stack under every fault, then an account of each one.

The scenario is `devstack.chaos` with `--quick`: concurrent clients retrying like AEP, MoEngage answering 5xx and 429,
late and not at all, delivery invocations crashing mid-batch, SQS refusing sends at ingest; then the faults stop,
the queue drains, `ops.redrive` moves the DLQ back. Also: the local stack's whole output holds no secret and no
personal data.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from devstack.chaos import TOKEN, ChaosOptions, ChaosReport, aep_retries, run, summary_table, write_json
from devstack.stack import EMULATOR_KEY, EMULATOR_WORKSPACE

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def report() -> ChaosReport:
    said: list[str] = []
    result = run(ChaosOptions.quick_run(seed=20261204), say=said.append)
    print("\n".join(said))
    print(summary_table(result))
    return result


def test_every_acknowledged_profile_reaches_moengage_or_waits_in_the_dlq(report: ChaosReport) -> None:
    # Given 1,000 profiles posted under faults (report); Then nothing acknowledged was lost, before or after the redrive
    assert report.profiles_sent == 1_000
    assert report.acknowledged + report.profiles_not_acknowledged >= report.profiles_sent
    assert report.lost_before_redrive == 0
    assert report.lost == 0
    assert report.still_queued == 0
    # And after the redrive every acknowledged profile is in MoEngage (with the run's marker attributes)
    assert report.delivered == report.acknowledged
    assert report.redriven_delivered == report.redriven
    assert report.moengage_elements_dropped == 0
    assert report.ok, report.problems


def test_a_request_not_acknowledged_got_a_status_aep_retries(report: ChaosReport) -> None:
    # Given the clients' attempts (report); Then every request left unacknowledged ended on a retryable answer
    assert report.not_acknowledged_with_unretried_status == 0
    assert all(aep_retries(int(s) if s.isdigit() else s) for s in report.not_acknowledged_statuses)
    # And no attempt was answered with a status that says the request itself is wrong
    assert not {"400", "401", "413", "415"} & set(report.client_attempts_by_status)


def test_the_faults_really_happened(report: ChaosReport) -> None:
    # Given the scenario's fault schedule; Then MoEngage failed in every way and SQS refused sends for a while
    assert {"moengage 5xx", "moengage 429", "moengage slow", "moengage down", "sqs outage"} <= set(report.fault_seconds)
    by_status = report.moengage_calls_by_status
    assert sum(count for status, count in by_status.items() if status.startswith("5")) > 0
    assert by_status.get("429", 0) > 0
    assert report.measured_rates["moengage_calls_under_faults"] > 0
    assert report.ingest_sqs_entries_retried > 0


def test_the_local_stack_output_holds_no_secret_and_no_personal_data(report: ChaosReport) -> None:
    # Given everything the local stack printed during the run (ingest, delivery, event source, emulator, moto)
    assert len(report.stack_output) > 100
    # The banner that `make local` prints for the developer names the local token on purpose: it is left out
    scanned = "\n".join(line for line in report.stack_output if not line.startswith("ingest API"))
    # Then the ingest token, the MoEngage key and its Basic header value never appear
    basic = base64.b64encode(f"{EMULATOR_WORKSPACE}:{EMULATOR_KEY}".encode()).decode()
    for secret in (TOKEN, EMULATOR_KEY, basic):
        assert secret not in scanned
    # And no personal data: every id, e-mail, name and marker of the run carries the run id
    assert report.run_id not in scanned
    assert "@example.com" not in scanned


def test_the_summary_is_written_as_json(report: ChaosReport, tmp_path: Path) -> None:
    # Given the report; When it is written; Then the JSON has the table's figures and the settings used
    path = tmp_path / "bench" / "results" / "chaos.json"
    write_json(report, path)
    data = json.loads(path.read_text(encoding="utf-8"))
    for key in ("profiles_sent", "acknowledged", "delivered", "dead_lettered", "redriven", "lost", "duplicates"):
        assert key in data
    assert data["settings"]["fault_rates"]["moengage_5xx_rate"] == 0.3
    assert "stack_output" not in data
    assert "LOST" in summary_table(report)
