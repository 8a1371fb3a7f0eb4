"""The benchmarks measure the code they are told to: a child imports the chosen tree,
a baseline worktree never outlives the run, and the comparison's verdict."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import foundation, run
from tests.conftest import EXAMPLES_DIR

trees = foundation.trees  # the module the benchmark scripts themselves use
ROOT = Path(__file__).resolve().parent.parent


def _fake_tree(path: Path) -> None:
    for package in ("streams", "streams/engine"):
        (path / package).mkdir(parents=True)
        (path / package / "__init__.py").write_text("")
    (path / "streams/engine/core.py").write_text("")


def test_a_child_imports_the_tree_it_is_given_not_the_installed_one(tmp_path: Path) -> None:
    _fake_tree(tmp_path)
    tree = trees.current_tree(tmp_path)

    core = trees.probe(tree)["core"]

    assert Path(core) == tmp_path.resolve() / "streams/engine/core.py"
    assert trees.verify(tree, core, require_compiled=False) is False
    with pytest.raises(trees.TreeError, match="not the compiled build"):
        trees.verify(tree, core, require_compiled=True)


def test_code_from_outside_the_tree_is_refused(tmp_path: Path) -> None:
    _fake_tree(tmp_path)
    elsewhere = str(ROOT / "streams/engine/core.cpython-311-x86_64-linux-gnu.so")
    with pytest.raises(trees.TreeError, match="outside the tree"):
        trees.verify(trees.current_tree(tmp_path), elsewhere, require_compiled=False)


def test_the_engine_child_reports_its_code_and_is_refused_uncompiled(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONSENTWATCH_NATIVE", "off")  # the sources, whatever is built
    events = next(EXAMPLES_DIR.glob("*/events.jsonl"))
    tree = trees.current_tree(ROOT)

    result = foundation.Runner(None, "off", tree).child("engine", events)

    assert Path(result["core_module"]) == ROOT / "streams/engine/core.py"
    with pytest.raises(trees.TreeError, match="not the compiled build"):
        foundation.Runner(None, "off", tree, require_compiled=True).child("engine", events)


@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="not a git checkout")
def test_the_baseline_worktree_is_removed_even_on_interrupt() -> None:
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    with (pytest.raises(KeyboardInterrupt),
          trees.baseline_tree("HEAD", ROOT, compile_it=False) as tree):
        path = tree.path
        assert tree.label == "baseline"
        assert tree.commit == head[:7]
        assert (path / "streams/engine/core.py").is_file()
        raise KeyboardInterrupt

    assert not path.exists()
    listed = subprocess.run(["git", "-C", str(ROOT), "worktree", "list", "--porcelain"],
                            capture_output=True, text=True, check=True).stdout
    assert str(path) not in listed


def test_the_comparison_marks_within_five_percent_and_skips_a_failed_section(
        capsys: pytest.CaptureFixture[str]) -> None:
    code = [trees.Tree(Path("/b"), "baseline", "bbbbbbb"),
            trees.Tree(Path("/c"), "current", "ccccccc")]
    figures = {"foundation": {"by_tree": {
        "baseline": {"engine_events_per_s": 100.0, "engine_events_per_cpu_s": 100.0,
                     "replay_jsonl_events_per_s": 100.0,
                     "replay_jsonl_events_per_cpu_s": 100.0,
                     "replay_avro_events_per_s": 100.0, "replay_avro_events_per_cpu_s": 100.0},
        "current": {"engine_events_per_s": 95.0, "engine_events_per_cpu_s": 97.0,
                    "replay_jsonl_events_per_s": 94.9,
                    "replay_jsonl_events_per_cpu_s": 100.0,
                    "replay_avro_events_per_s": 120.0, "replay_avro_events_per_cpu_s": 110.0},
    }}}  # no pipeline: that section failed

    comp = run.comparison(figures, code)

    rows = comp["rows"]
    assert list(rows) == ["engine alone (1 core)", "replay from JSON Lines", "replay from Avro"]
    assert rows["engine alone (1 core)"]["within_5pct"] is True  # exactly 0.95
    assert rows["engine alone (1 core)"]["ratio_cpu"] == 0.97
    assert rows["replay from JSON Lines"]["within_5pct"] is False
    assert rows["replay from Avro"]["ratio"] == 1.2
    assert comp["all_within_5pct"] is False
    assert comp["trees"]["baseline"]["commit"] == "bbbbbbb"

    run.print_table({"quick": True, "repeat": 3, "suite_seconds": 1.0, "comparison": comp,
                     "machine": {"cpu_count": 2, "load_average_1m_at_start": 1.0},
                     "code": {"current": {"commit": "ccccccc", "path": "/c",
                                          "compiled": True}}})
    out = capsys.readouterr().out
    assert "baseline bbbbbbb events/s" in out
    assert "current ccccccc events/s" in out
    assert "all within 5%: NO" in out


def test_the_hot_path_benchmark_runs_and_checks_the_bytes_it_compares() -> None:
    done = subprocess.run([sys.executable, "benchmarks/hot_path.py", "--events", "1000",
                           "--repeat", "1"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    rows = ("decode an event", "encode a finding", "partition a finding")
    assert all(row in done.stdout for row in rows)


def test_the_desk_benchmark_builds_its_ledger_and_times_every_page(tmp_path: Path) -> None:
    from benchmarks import desk

    results = desk.run(300, 2, quiet=True, path=tmp_path / "desk.db")

    pages = {(r["case"], r["page"]) for r in results}
    assert ("no filter", "first") in pages and ("no filter", "deep") in pages
    assert {case for case, _ in pages} == {
        "no filter", "rule", "severity HIGH (4 rules)", "account", "provider", "subject",
        "time range (a month)", "rule + provider + range", "status open", "status active",
        "status resolved", "status acknowledged", "status excepted", "status open + rule",
        "status resolved + rule"}
    assert all(r["p95_ms"] >= r["p50_ms"] > 0 for r in results)
    # every filter finds rows; of the statuses, on so small a ledger the excepted accounts
    # cover nearly everything: the resolved and the excepted ones are there
    assert all(r["rows"] > 0 for r in results if not r["case"].startswith("status"))
    assert all(r["rows"] > 0 for r in results
               if r["case"] in ("status resolved", "status excepted"))
    first = next(r for r in results if r["case"] == "no filter" and r["page"] == "first")
    assert first["rows"] == 50


def test_the_end_of_input_benchmark_decides_every_pending_trigger() -> None:
    done = subprocess.run([sys.executable, "benchmarks/end_of_input.py", "--events", "3000",
                           "--subjects", "300", "--repeat", "1"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert "current: end of input" in done.stdout
    found = re.search(r"\(([\d,]+) pending, ([\d,]+) outputs, ([\d,]+) left\)", done.stderr)
    assert found, done.stderr
    pending, outputs, left = (int(n.replace(",", "")) for n in found.groups())
    assert pending > 0 and outputs > 0
    assert left == 0


def test_the_restore_benchmark_times_a_cold_workers_restore(kafka_bootstrap: str) -> None:
    done = subprocess.run([sys.executable, "benchmarks/restore.py", "--events", "3000",
                           "--subjects", "300", "--repeat", "1", "--broker", kafka_bootstrap],
                          cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    found = re.search(r"([\d,]+) records; the filling run's findings = replay: (\w+)",
                      done.stdout)
    assert found, done.stdout
    assert int(found.group(1).replace(",", "")) > 100  # a state per subject at least
    assert found.group(2) == "True"
    assert re.search(r"current \S+: [\d,]+ records/s \(\d+\.\d\d s; rounds: ", done.stdout)


def test_a_restore_is_timed_from_faust_s_start_line_to_its_done_line(tmp_path: Path) -> None:
    from benchmarks import restore

    log = tmp_path / "worker.log"
    log.write_text(
        "consentwatch: warning: no pseudonymisation key\n"
        "[2026-12-07 16:32:21,975] [1] [INFO] [^---Recovery]: Restoring state from "
        "changelog topics... \n"
        "[2026-12-07 16:32:22,500] [1] [INFO] [^---Recovery]: Still fetching changelog "
        "topics for recovery\n"
        "[2026-12-07 16:32:26,950] [1] [INFO] [^---Recovery]: Done reading from changelog "
        "topics \n")
    span = restore._restore_span(log)
    assert span is not None and round(span[1] - span[0], 3) == 4.975
    log.write_text("[2026-12-07 16:32:21,975] [1] [INFO] [^---Recovery]: Restoring state "
                   "from changelog topics... \n")
    assert restore._restore_span(log) is None  # not done yet


def test_the_group_forms_when_the_first_worker_reads_its_first_event() -> None:
    from benchmarks.pipeline import _group_formed

    started = 100.0
    # worker 0 read nothing until after 103.5; worker 1's first sample has events already
    samples = [[(101.0, 0), (103.5, 0), (104.0, 900)], [(104.5, 10), (105.0, 200)]]
    assert _group_formed(samples, started) == 103.5
    assert _group_formed([*samples, [(102.0, 0), (102.5, 5)]], started) == 102.0
    assert _group_formed([[(104.5, 10)]], started) == started  # no sample before: the start
    assert _group_formed([[(101.0, 0)], []], started) == started  # nothing read yet


def test_the_pipeline_benchmark_times_a_worker_from_its_start_and_from_the_group_forming(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    import asyncio
    import time

    from benchmarks import pipeline
    from streams.kafka.kafka_io import create_topics, produce_events
    from streams.kafka.topics import TopicNames

    events = pipeline._events(3000, 300, 1)
    prefix = f"benchtest{int(time.time())}"
    names = TopicNames(prefix)
    asyncio.run(create_topics(pipeline._connection(kafka_bootstrap), names, 2, 1))
    asyncio.run(produce_events(pipeline._connection(kafka_bootstrap), names, events))
    run = pipeline.measure_worker(kafka_bootstrap, prefix, len(events),
                                  pipeline._expected(events),
                                  max(e.occurred_at for e in events), 2, tmp_path)
    assert run["findings_match_replay"] and run["copies_sent_again"] == 0
    # The tests' broker forms a group at once: a few thousand events may all be read
    # before the worker's endpoint first answers, and the start stands for the forming.
    assert 0 <= run["group_formed_s"] < run["seconds"]
    assert run["processing_seconds"] == run["seconds"] - run["group_formed_s"]
    assert run["processing_events_per_s"] >= run["events_per_s"]
