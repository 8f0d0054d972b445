"""The benches' OTLP sink, as the trace benches run it (its own process, uvloop): it answers
exports and says how many it answered once stopped; and the interleaved windows' arithmetic."""

from __future__ import annotations

import http.client
import sys
from pathlib import Path

import pytest
from bench import procs
from bench.interleaved import Windows, report
from bench.otlp_sink import answered

from fakes.served import free_port

ROOT = Path(__file__).resolve().parent.parent


def test_the_sink_answers_exports_and_counts_them(tmp_path: Path) -> None:
    port = free_port()
    sink = procs.start(
        "sink", [sys.executable, "-m", "bench.otlp_sink", "--port", str(port)], tmp_path, cwd=ROOT
    )
    try:
        procs.wait_port(sink, port, 30)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        for body in (b"\x0a" * 300_000, b"\x0a" * 10):  # one export larger than a socket read
            connection.request(
                "POST", "/v1/traces", body, {"content-type": "application/x-protobuf"}
            )
            response = connection.getresponse()
            response.read()
            assert response.status == 200
        connection.close()
    finally:
        sink.stop()
    assert answered(sink.log) == (2, 300_010)


def test_a_sink_that_wrote_no_counts_is_an_error(tmp_path: Path) -> None:
    log = tmp_path / "sink.log"
    log.write_text("Traceback (most recent call last):\n")
    with pytest.raises(RuntimeError, match="no counts"):
        answered(log)


def test_interleaved_windows_are_charged_from_opening_to_closing_and_compared_by_pairs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    before = Windows(answers=[1000] * 3, seconds=[2.0] * 3)
    after = Windows(answers=[1000] * 3, seconds=[2.5] * 3)
    before.close(None, 7.0)  # no window opened yet: nothing to charge
    for windows, spans in (
        (before, ((0.0, 0.2), (1.0, 1.22), (2.0, 2.24))),
        (after, ((0.5, 0.72), (1.5, 1.742), (2.5, 2.764))),
    ):
        for opened, closed in spans:
            windows.close(opened, closed)
    assert before.cpu == pytest.approx([0.2, 0.22, 0.24])
    assert before.cpu_ms(1) == pytest.approx(0.22)
    assert after.rps(0) == 400
    report(("a", "b"), [before, after])
    out = capsys.readouterr().out
    assert "median of 3 window pairs: CPU per request +10.0%" in out
    assert "throughput at one core -9.1% (requests per second as measured -20.0%)" in out
