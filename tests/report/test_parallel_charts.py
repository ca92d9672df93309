"""The report's charts rendered in forked processes (charts.render_all): the same image list and
the same files, byte for byte, as one after another; a child that fails or dies costs no chart;
one process, one CPU or one drawing chart never forks; an interrupted parent leaves no child."""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeprof.cli import cli
from edgeprof.report import charts
from tests.report.test_report import report_dir  # noqa: F401  (fixture: a real small sweep)

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="forked rendering is POSIX only")

CHARTS = ("latency_vs_accuracy", "accuracy_vs_severity", "corruption_heatmap",
          "latency_distributions", "throughput_curves", "size_memory_bars", "op_profile_bars",
          "board_state", "sustained_timeline")


def _report(results: Path, out: Path, processes: int | None, mp: pytest.MonkeyPatch
            ) -> tuple[list[str], dict[str, bytes]]:
    """`edgeprof report` with EDGEPROF_REPORT_PROCESSES (None: the default): render_all's image
    list and every file of the folder."""
    got: list[list[str]] = []
    real = charts.render_all
    mp.setattr(charts, "render_all", lambda jobs: got.append(real(jobs)) or got[-1])
    if processes is None:
        mp.delenv("EDGEPROF_REPORT_PROCESSES", raising=False)
    else:
        mp.setenv("EDGEPROF_REPORT_PROCESSES", str(processes))
    r = CliRunner().invoke(cli, ["report", str(results), "--out", str(out)])
    assert r.exit_code == 0, r.output
    mp.setattr(charts, "render_all", real)
    return got[0], {p.name: p.read_bytes() for p in sorted(out.iterdir())}


@pytest.fixture(scope="module")
def serial(report_dir, tmp_path_factory):  # noqa: F811
    with pytest.MonkeyPatch.context() as mp:
        images, files = _report(report_dir / "results.jsonl", tmp_path_factory.mktemp("serial"),
                                1, mp)
    assert len(images) >= 6 and len(files) > len(images)  # >= 3 charts, PNG + SVG each
    return images, files


def _in_children(monkeypatch, parent: int, act) -> None:
    """Every chart function calls act() first when it runs in a forked child."""
    for name in CHARTS:
        def wrapped(*a, _fn=getattr(charts, name)):
            if os.getpid() != parent:
                act()
            return _fn(*a)
        monkeypatch.setattr(charts, name, wrapped)


@pytest.mark.parametrize("processes", [2, 3])
def test_parallel_render_is_byte_identical_to_serial(report_dir, serial, tmp_path,  # noqa: F811
                                                     monkeypatch, processes):
    forks = []
    real_fork = os.fork
    monkeypatch.setattr(os, "fork", lambda: forks.append(1) or real_fork())
    images, files = _report(report_dir / "results.jsonl", tmp_path / "par", processes,
                            monkeypatch)
    assert len(forks) == processes - 1
    assert images == serial[0]
    assert files.keys() == serial[1].keys()
    for name, data in files.items():
        assert data == serial[1][name], name


@pytest.mark.parametrize("failure", ["raises", "killed"])
def test_the_parent_renders_what_a_failed_child_did_not(report_dir, serial, tmp_path,  # noqa: F811
                                                        monkeypatch, failure):
    parent, marks = os.getpid(), tmp_path / "marks"
    marks.mkdir()

    def act():
        (marks / str(os.getpid())).touch()
        if failure == "raises":
            raise RuntimeError("chart failed in a child")
        os.kill(os.getpid(), signal.SIGKILL)
    _in_children(monkeypatch, parent, act)
    images, files = _report(report_dir / "results.jsonl", tmp_path / "par", 3, monkeypatch)
    assert len(list(marks.iterdir())) == 2  # both children started a chart, and failed
    assert images == serial[0]
    assert files == serial[1]


def test_one_process_never_forks(report_dir, serial, tmp_path, monkeypatch):  # noqa: F811
    def no_fork():
        raise AssertionError("forked in serial mode")
    monkeypatch.setattr(os, "fork", no_fork)
    images, files = _report(report_dir / "results.jsonl", tmp_path / "one", 1, monkeypatch)
    assert images == serial[0] and files == serial[1]
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    images, _ = _report(report_dir / "results.jsonl", tmp_path / "one-cpu", None, monkeypatch)
    assert images == serial[0]


def test_one_drawing_chart_is_not_forked_for(report_dir, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("EDGEPROF_REPORT_PROCESSES", "4")
    monkeypatch.setattr(os, "fork", lambda: pytest.fail("forked for one chart"))
    rows = json.loads((report_dir / "decision.json").read_text())["rows"]
    jobs = [(charts.board_state, ([], tmp_path)), (charts.size_memory_bars, (rows, tmp_path)),
            (charts.op_profile_bars, ([], tmp_path))]
    assert charts.render_all(jobs) == ["size_memory.png", "size_memory.svg"]


def test_bad_process_count_is_an_input_error(monkeypatch):
    from edgeprof.errors import InputError
    monkeypatch.setenv("EDGEPROF_REPORT_PROCESSES", "many")
    with pytest.raises(InputError, match="EDGEPROF_REPORT_PROCESSES"):
        charts.processes(3)


def test_an_interrupted_parent_kills_and_reaps_its_children(report_dir, tmp_path,  # noqa: F811
                                                            monkeypatch):
    """Ctrl-C while the parent renders its share: the child (here stuck in its chart) is
    killed and reaped before KeyboardInterrupt goes on."""
    parent, pidfile = os.getpid(), tmp_path / "child.pid"
    rows = json.loads((report_dir / "decision.json").read_text())["rows"]

    def stuck(rows, out):
        pidfile.write_text(str(os.getpid()))
        time.sleep(60)

    def interrupted(rows, out):
        charts.latency_vs_accuracy(rows, out)  # the probe stops in here
        for _ in range(200):  # the child runs its chart
            if pidfile.exists() and pidfile.read_text():
                break
            time.sleep(0.05)
        raise KeyboardInterrupt
    monkeypatch.setenv("EDGEPROF_REPORT_PROCESSES", "2")
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        charts.render_all([(interrupted, (rows, tmp_path)),
                           (lambda r, o: stuck(r, o) if os.getpid() != parent
                            else charts.size_memory_bars(r, o), (rows, tmp_path))])
    assert time.monotonic() - t0 < 30
    with pytest.raises(ProcessLookupError):  # reaped: no zombie left behind
        os.kill(int(pidfile.read_text()), 0)
