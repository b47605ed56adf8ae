"""`cnnprof search` hardening (issues 17 and 18): bad design spaces, constraints, trial counts, option combinations
and resumed studies are one line on stderr and exit 2, never a traceback or a silently wrong search."""
import json
from pathlib import Path

import pytest

BASE = "base: mobilenet_v1\nknobs:\n"
WIDTH = "  width_mult: {type: float, low: 0.5, high: 1.0}\n"


def run_search(cli, tmp_path, space_text, *args):
    path = tmp_path / "small.yaml"
    path.write_text(space_text)
    return cli("search", "--space", str(path), "--out", str(tmp_path / "o"), "--trials", "2", "--workers", "1", *args)


def one_line_exit_2(result, *words):
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in result.stderr, result.stderr


@pytest.mark.parametrize("knobs, key", [
    ("  width_mult: {type: float, low: .nan, high: 1.0}\n", "knobs.width_mult.low"),
    ("  width_mult: {type: float, low: 0.5, high: .inf}\n", "knobs.width_mult.high"),
    ("  width_mult: {type: float, low: -.inf, high: 1.0}\n", "knobs.width_mult.low"),
    ("  width_mult: {type: float, low: 0.5, high: 1.0, step: .nan}\n", "knobs.width_mult.step"),
    ("  width_mult: {type: float, low: 0.5, high: 0.5}\n", "knobs.width_mult"),
    ("  resolution: {type: int, low: 224, high: 96}\n", "knobs.resolution"),
    ("  1: {type: int, low: 1, high: 4}\n", "knobs.1"),
    ("  true: {type: int, low: 1, high: 4}\n", "knobs.True"),
    ("  null: {type: int, low: 1, high: 4}\n", "knobs.None"),
    ("  width_mult: {type: float, low: 0.5, high: 1.0, log: 'no'}\n", "knobs.width_mult.log"),
    ("  width_mult: {type: float, low: 0.5, high: 1.0, log: 'true'}\n", "knobs.width_mult.log"),
    ("  stages.1.out_channels: {type: categorical, choices: [0.5, 1.0], multiply: 'false'}\n",
     "knobs.stages.1.out_channels.multiply"),
    ("  stages.1.out_channels: {type: categorical, choices: [0.5, 1.0], multiply: 1}\n",
     "knobs.stages.1.out_channels.multiply"),
])
def test_bad_space_is_one_line_naming_file_and_key(cli, tmp_path, knobs, key):
    one_line_exit_2(run_search(cli, tmp_path, BASE + knobs, "--minimize", "params"), "small.yaml", key)


def test_yaml_booleans_are_read_as_configs_read_them():
    """yes/no are YAML booleans (as in configs); only strings are refused."""
    from cnnprof.design.space import load_space

    space = load_space("configs/spaces/mobilenet_v2.yaml")
    assert all(isinstance(k.multiply, bool) and isinstance(k.log, bool) for k in space.knobs)


def test_yes_no_booleans_load(tmp_path):
    from cnnprof.design.space import load_space

    path = tmp_path / "s.yaml"
    path.write_text(BASE + "  width_mult: {type: float, low: 0.5, high: 1.0, log: yes}\n"
                    "  stages.1.out_channels: {type: categorical, choices: [0.5, 1.0], multiply: no}\n")
    knobs = {k.name: k for k in load_space(path).knobs}
    assert knobs["width_mult"].log is True and knobs["stages.1.out_channels"].multiply is False


@pytest.mark.parametrize("constraint, words", [
    ("macs>=inf", ["--constraint 'macs>=inf': the bound must be a finite number, got 'inf'"]),
    ("macs>=nan", ["--constraint 'macs>=nan': the bound must be a finite number, got 'nan'"]),
    ("macs<=-inf", ["--constraint 'macs<=-inf': the bound must be a finite number, got '-inf'"]),
    ("latency<=Infinity", ["the bound must be a finite number, got 'Infinity'"]),
    ("macs<=1e999", ["--constraint", "finite"]),
    ("params>=-1e999M", ["--constraint", "finite"]),
    ("macs<0", ["--constraint 'macs<0': no model can meet it (macs is never negative)"]),
    ("params<=-5M", ["no model can meet it (params is never negative)"]),
])
def test_infinite_or_nan_constraint_is_one_line(cli, tmp_path, constraint, words):
    one_line_exit_2(run_search(cli, tmp_path, BASE + WIDTH, "--minimize", "params", "--constraint", constraint), *words)


@pytest.mark.parametrize("trials", [str(10**30), "1000001"])
def test_trials_above_the_ceiling_is_one_line_not_a_hang(cli, tmp_path, trials):
    path = tmp_path / "small.yaml"
    path.write_text(BASE + WIDTH)
    result = cli("search", "--space", str(path), "--out", str(tmp_path / "o"), "--trials", trials, "--workers", "1",
                 "--minimize", "params")
    one_line_exit_2(result, "--trials", "1,000,000")


KNOB2 = "  resolution: {type: int, low: 96, high: 224, step: 32}\n"


def resume(cli, tmp_path, space_text, *args):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    return run_search(cli, tmp_path, space_text, "--storage", storage, "--study-name", "s", "--seed", "0", *args)


def stored_study(tmp_path):
    import optuna

    return optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'study.db'}")


@pytest.mark.parametrize("space_text, args, words", [
    (BASE + "  width_mult: {type: float, low: 0.5, high: 0.9}\n" + KNOB2, [], ["knob width_mult changed", "0.9"]),
    (BASE + WIDTH, [], ["knob resolution removed"]),
    (BASE + WIDTH + KNOB2 + "  stages.3.depth: {type: categorical, choices: [2, 4]}\n", [],
     ["knob stages.3.depth added"]),
    (BASE + WIDTH + "  resolution: {type: categorical, choices: [96, 128]}\n", [], ["knob resolution changed",
                                                                                  "categorical"]),
    (BASE.replace("mobilenet_v1", "mobilenet_v2") + WIDTH + KNOB2, [], ["base config mobilenet_v1 -> mobilenet_v2"]),
    (BASE + WIDTH + KNOB2, ["--constraint", "macs<=100M"], ["constraints"]),
])
def test_resuming_with_another_space_or_objectives_is_refused(cli, tmp_path, space_text, args, words):
    first = resume(cli, tmp_path, BASE + WIDTH + KNOB2, "--minimize", "macs")
    assert first.exit_code == 0, first.stderr
    again = resume(cli, tmp_path, space_text, "--minimize", "macs", *args)
    one_line_exit_2(again, "made for another search", *words)


def test_resuming_the_same_search_passes_and_direction_change_is_refused(cli, tmp_path):
    assert resume(cli, tmp_path, BASE + WIDTH, "--minimize", "macs").exit_code == 0
    same = resume(cli, tmp_path, BASE + WIDTH, "--minimize", "macs", "--trials", "3")
    assert same.exit_code == 0 and "warning" not in same.stderr, same.stderr
    one_line_exit_2(resume(cli, tmp_path, BASE + WIDTH, "--maximize", "macs"), "study")


@pytest.mark.parametrize("stored, outcome", [
    (None, "warning"), ("garbage", "unreadable"), (["a"], "unreadable"), ({"hash": 3}, "unreadable"),
    ({"hash": "x", "description": {"knobs": 5}}, "made for another search"),
    ("same description, wrong hash", "warning"),
])
def test_missing_or_edited_stored_attributes_are_data(cli, tmp_path, stored, outcome):
    assert resume(cli, tmp_path, BASE + WIDTH, "--minimize", "macs").exit_code == 0
    study = stored_study(tmp_path)
    if stored == "same description, wrong hash":
        stored = {"hash": "0", "description": study.user_attrs["fingerprint"]["description"]}
    study.set_user_attr("fingerprint", stored)
    result = resume(cli, tmp_path, BASE + WIDTH, "--minimize", "macs", "--trials", "3")
    assert "Traceback" not in result.stderr
    if outcome == "warning":
        assert result.exit_code == 0 and "warning:" in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert stored_study(tmp_path).user_attrs["fingerprint"]["hash"] != "0"
    else:
        one_line_exit_2(result, outcome)


@pytest.mark.parametrize("args, words", [
    (["--minimize", "params", "--bench", "--workers", "2"], ["--bench", "--workers 2"]),
    (["--stats", "--sampler", "tpe"], ["--stats", "--sampler tpe", "random"]),
    (["--stats", "--sampler", "nsga2"], ["--stats", "--sampler nsga2"]),
])
def test_options_that_would_be_ignored_are_refused(cli, tmp_path, args, words):
    path = tmp_path / "small.yaml"
    path.write_text(BASE + WIDTH)
    result = cli("search", "--space", str(path), "--out", str(tmp_path / "o"), "--trials", "2", *args)
    one_line_exit_2(result, *words)


def test_bench_alone_and_stats_with_random_still_run(cli, tmp_path):
    path = tmp_path / "small.yaml"
    path.write_text(BASE + WIDTH)
    for i, args in enumerate((["--minimize", "params", "--bench", "--min-time", "0.01"],
                              ["--stats", "--sampler", "random"])):
        result = cli("search", "--space", str(path), "--out", str(tmp_path / f"o{i}"), "--trials", "2", "--format",
                     "json", *args)
        assert result.exit_code == 0, result.stderr


# --storage is read strictly: a storage that is not one is refused before anything is written (issue 18).
@pytest.mark.parametrize("name, content, words", [
    ("notes.txt", "my notes\n", ["--storage", "notes.txt", "not a storage", ".db", ".log"]),
    ("notes", "my notes\n", ["--storage", "not a storage"]),
    ("old.db", "not a database\n", ["old.db exists and is not an SQLite database"]),
    ("app.log", "12:00 server started\n", ["app.log exists and is not an Optuna journal"]),
    ("url.db", None, ["directory", "does not exist"]),
])
def test_a_storage_that_is_not_one_is_refused_before_writing(cli, tmp_path, name, content, words):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    storage = str(path) if content is not None else str(tmp_path / "missing" / name)
    result = run_search(cli, tmp_path, BASE + WIDTH, "--minimize", "params", "--storage", storage)
    one_line_exit_2(result, *words)
    if content is not None:
        assert path.read_text() == content
    assert not (tmp_path / "o" / "trials.json").exists()


@pytest.mark.parametrize("name", ["study.db", "study.sqlite", "study.log", "study.journal"])
def test_sqlite_and_journal_paths_need_no_url_and_resume(cli, tmp_path, name):
    storage = str(tmp_path / name)
    first = run_search(cli, tmp_path, BASE + WIDTH, "--minimize", "params", "--storage", storage, "--seed", "0")
    assert first.exit_code == 0, first.stderr
    head = (tmp_path / name).read_bytes()[:16]
    assert head == b"SQLite format 3\x00" if name.endswith(("db", "sqlite")) else head.startswith(b"{")
    again = run_search(cli, tmp_path, BASE + WIDTH, "--minimize", "params", "--storage", storage, "--trials", "3",
                       "--format", "json")
    assert again.exit_code == 0, again.stderr
    assert [r["trial"] for r in json.loads(again.stdout)] == [0, 1, 2]


def test_a_moved_space_file_resumes_and_pareto_holds_exactly_the_front(cli, tmp_path):
    """Content, not path, identifies a space; configs of trials that left the front are removed, the user's stay."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "small.yaml").write_text(BASE + WIDTH)
    args = ("--out", str(tmp_path / "o"), "--workers", "1", "--minimize", "params", "--seed", "0", "--format", "json")
    first = cli("search", "--space", str(tmp_path / "a" / "small.yaml"), "--trials", "2", *args)
    assert first.exit_code == 0, first.stderr
    (tmp_path / "a" / "small.yaml").rename(tmp_path / "b" / "small.yaml")
    pareto = tmp_path / "o" / "pareto"
    (pareto / "small_t0999.yaml").write_text("# Written by `cnnprof search` (study small); an old front\n")
    (pareto / "mine.yaml").write_text("# my own notes\n")
    again = cli("search", "--space", str(tmp_path / "b" / "small.yaml"), "--trials", "4", *args)
    assert again.exit_code == 0 and again.stderr == "", again.stderr
    rows = json.loads(again.stdout)
    assert [r["trial"] for r in rows] == [0, 1, 2, 3]
    front = {Path(r["config"]).name for r in rows if r["pareto"]}
    assert front and {p.name for p in pareto.iterdir()} == front | {"mine.yaml"}


def test_output_streams_every_trial_and_an_interrupted_run_keeps_its_rows(cli, tmp_path, monkeypatch):
    import cnnprof.design.search as search_module

    out = tmp_path / "rows.jsonl"
    done = run_search(cli, tmp_path, BASE + WIDTH, "--minimize", "params", "--trials", "3", "--output", str(out),
                      "--format", "json")
    assert done.exit_code == 0, done.stderr
    streamed = [json.loads(line) for line in out.read_text().splitlines()]
    final = json.loads((tmp_path / "o" / "trials.json").read_text())
    assert [r["pareto"] for r in streamed] == [None] * 3
    assert [{k: v for k, v in r.items() if k not in ("pareto", "config")} for r in final] == \
        [{k: v for k, v in r.items() if k != "pareto"} for r in streamed]

    real, calls = search_module._evaluate_job, []

    def interrupted_in_the_second_batch(job):
        calls.append(job)
        if len(calls) == search_module.BATCH + 2:
            raise KeyboardInterrupt
        return real(job)

    monkeypatch.setattr(search_module, "_evaluate_job", interrupted_in_the_second_batch)
    csv_out = tmp_path / "rows.csv"
    stopped = cli("search", "--space", str(tmp_path / "small.yaml"), "--out", str(tmp_path / "o2"), "--trials", "50",
                  "--workers", "1", "--minimize", "params", "--output", str(csv_out))
    assert stopped.exit_code == 130, stopped.stderr
    assert csv_out.read_text().count("\n") == 1 + search_module.BATCH
    assert len(json.loads((tmp_path / "o2" / "trials.json").read_text())) == search_module.BATCH


# A trial left RUNNING by a dead process is failed and its sample run again; other processes' trials count.
@pytest.fixture
def toy(monkeypatch):
    """A one-knob space (w = 1..10, params = 100 w) counted without building a model."""
    import cnnprof.design.search as search_module
    from cnnprof.design.metrics import Point
    from cnnprof.design.space import Knob, Space

    monkeypatch.setattr(search_module, "evaluate_sample", lambda space, sample, settings, *gate_convention: Point(
        tuple(sample.items()), params=100 * sample["w"], macs=1000 * sample["w"], other_ops=0))
    return Space("toy", "", "toy.yaml", "none", {}, (Knob("w", "int", 1, 10),))


def dead_pid() -> int:
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def running_trial(study, w, owner=None):
    """A RUNNING trial with w sampled, owned (when given) by a process record like a search's."""
    from cnnprof.design.leases import PREFIX

    study.enqueue_trial({"w": w})
    trial = study.ask()
    assert trial.suggest_int("w", 1, 10) == w
    if owner is not None:
        study.set_user_attr(f"{PREFIX}{owner['pid']}:{w}", {**owner, "trials": [trial.number]})
    return trial


def test_stale_running_trials_are_found_by_their_owner(toy, tmp_path):
    import os
    import time

    import optuna

    from cnnprof.design.leases import GRACE_S, host_id, process_start, stale_trials
    from cnnprof.design.search import search
    from cnnprof.design.storage import open_storage

    storage = str(tmp_path / "s.log")
    search(toy, [("params", "minimize")], trials=2, seed=0, storage=storage)
    study = optuna.load_study(study_name="toy", storage=open_storage(storage))
    now = time.time()
    here = {"host": host_id(), "beat": now}
    dead = running_trial(study, 3, {**here, "pid": dead_pid(), "start": None})
    alive = running_trial(study, 4, {**here, "pid": os.getpid(), "start": process_start(os.getpid())})
    reused = running_trial(study, 5, {**here, "pid": os.getpid(), "start": "0"})  # a pid another process had
    remote = running_trial(study, 6, {"host": "elsewhere/1", "pid": 1, "start": None, "beat": now})
    unowned = running_trial(study, 7)
    assert {t.number for t in stale_trials(study, now)} == {dead.number, reused.number}
    later = now + GRACE_S + 1  # the remote host stopped beating, the unowned trial is old
    assert {t.number for t in stale_trials(study, later)} == {dead.number, reused.number, remote.number,
                                                              unowned.number}
    assert alive.number not in {t.number for t in stale_trials(study, later)}


def test_a_resumed_search_fails_a_dead_process_trials_and_reruns_their_samples(toy, tmp_path):
    import optuna
    from optuna.trial import TrialState

    from cnnprof.design.leases import host_id
    from cnnprof.design.search import search
    from cnnprof.design.storage import open_storage

    storage = str(tmp_path / "s.log")
    search(toy, [("params", "minimize")], trials=2, seed=0, storage=storage)
    study = optuna.load_study(study_name="toy", storage=open_storage(storage))
    gone = running_trial(study, 9, {"host": host_id(), "pid": dead_pid(), "start": None, "beat": 0})
    # The killed process had stored the trial's counts, not yet its state: the trial must not count twice.
    study._storage.set_trial_user_attr(gone._trial_id, "cnnprof", {"status": "ok", "params": 900})
    result = search(toy, [("params", "minimize")], trials=4, seed=0, storage=storage)
    stored = optuna.load_study(study_name="toy", storage=open_storage(storage)).trials
    assert stored[gone.number].state == TrialState.FAIL and stored[gone.number].user_attrs["cnnprof_stale"]
    rerun = [t for t in stored if t.user_attrs.get("cnnprof_rerun_of") == gone.number]
    assert len(rerun) == 1 and rerun[0].params == {"w": 9} and rerun[0].state == TrialState.COMPLETE
    assert [t.number for t in result.trials] == [0, 1, rerun[0].number, rerun[0].number + 1]
    assert result.evaluated == 2 and not any(t.state == TrialState.RUNNING for t in stored)


def test_trials_another_live_process_runs_count_against_the_budget(toy, tmp_path, monkeypatch):
    """With 3 of 4 trials done and 1 running elsewhere, a search waits for it instead of running a fifth."""
    import os

    import optuna

    import cnnprof.design.search as search_module
    from cnnprof.design.leases import host_id, process_start
    from cnnprof.design.storage import open_storage

    storage = str(tmp_path / "s.log")
    search_module.search(toy, [("params", "minimize")], trials=3, seed=0, storage=storage)
    study = optuna.load_study(study_name="toy", storage=open_storage(storage))
    other = running_trial(study, 2, {"host": host_id(), "pid": os.getpid(), "start": process_start(os.getpid()),
                                     "beat": 0})
    waits = []

    def the_other_process_finishes(seconds):
        waits.append(seconds)
        study._storage.set_trial_user_attr(other._trial_id, "cnnprof", {"status": "ok", "params": 200,
                                                                        "macs": 2000, "other_ops": 0})
        study.tell(other, [200.0])

    monkeypatch.setattr(search_module.time, "sleep", the_other_process_finishes)
    result = search_module.search(toy, [("params", "minimize")], trials=4, seed=0, storage=storage)
    assert result.evaluated == 0 and len(waits) == 1 and len(result.trials) == 4


# Signals, for real: a subprocess with two workers, stopped by SIGTERM or killed by SIGKILL.
def start_search(tmp_path):
    import os
    import subprocess
    import sys

    (tmp_path / "small.yaml").write_text(BASE + WIDTH)
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-m", "cnnprof.cli", "search", "--space", str(tmp_path / "small.yaml"),
                             "--out", str(tmp_path / "o"), "--workers", "2", "--trials", "100000", "--minimize",
                             "params", "--output", str(tmp_path / "rows.jsonl"), "--format", "json"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)


def children(pid: int) -> set[int]:
    import os

    found = set()
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as f:
                if entry.isdigit() and int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                    found.add(int(entry))
        except (OSError, IndexError, ValueError):
            continue
    return found


def wait_until(condition, seconds: float) -> bool:
    import time

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def streamed(tmp_path) -> int:
    path = tmp_path / "rows.jsonl"
    return path.read_text().count("\n") if path.exists() else 0


def stored_trials(tmp_path):
    import optuna

    from cnnprof.design.storage import open_storage

    return optuna.load_study(study_name="small", storage=open_storage(str(tmp_path / "o" / "study.log"))).trials


needs_proc = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc (Linux)")


@pytest.mark.slow
@needs_proc
def test_sigterm_stops_a_search_like_ctrl_c_and_no_worker_outlives_it(tmp_path):
    import signal

    proc = start_search(tmp_path)
    try:
        assert wait_until(lambda: streamed(tmp_path) >= 10 or proc.poll() is not None, 240), "no trial finished"
        workers = children(proc.pid)
        assert len(workers) == 2
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 130, proc.stderr.read()
    finally:
        proc.kill()
    assert wait_until(lambda: not any(Path(f"/proc/{w}").exists() for w in workers), 10)
    rows = json.loads((tmp_path / "o" / "trials.json").read_text())
    assert len(rows) == streamed(tmp_path) >= 10
    assert "RUNNING" not in {t.state.name for t in stored_trials(tmp_path)}


@pytest.mark.slow
@needs_proc
def test_sigkill_takes_the_workers_along_and_a_resume_reruns_the_lost_trials(cli, tmp_path):
    import signal

    proc = start_search(tmp_path)
    try:
        assert wait_until(lambda: streamed(tmp_path) >= 10 or proc.poll() is not None, 240), "no trial finished"
        workers = children(proc.pid)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(60) == -signal.SIGKILL
    finally:
        proc.kill()
    assert len(workers) == 2 and wait_until(lambda: not any(Path(f"/proc/{w}").exists() for w in workers), 10)
    lost = {t.number: t.params for t in stored_trials(tmp_path) if t.state.name == "RUNNING"}
    done = sum(1 for t in stored_trials(tmp_path) if "cnnprof" in t.user_attrs and t.state.name != "RUNNING")
    wanted = done + len(lost) + 1
    result = cli("search", "--space", str(tmp_path / "small.yaml"), "--out", str(tmp_path / "o"), "--workers", "1",
                 "--trials", str(wanted), "--minimize", "params", "--format", "json")
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)
    assert len(rows) == wanted and len({r["trial"] for r in rows}) == wanted
    after = stored_trials(tmp_path)
    assert "RUNNING" not in {t.state.name for t in after}
    for number, params in lost.items():  # each lost trial failed as stale, its sample run again
        assert after[number].user_attrs.get("cnnprof_stale") is True
        if params:
            assert [t.params for t in after if t.user_attrs.get("cnnprof_rerun_of") == number] == [params]


def test_rejected_samples_are_streamed_and_never_fill_the_budget_of_a_stored_study(toy, tmp_path):
    """Merged behaviours: rejected samples reach `on_trial` (--output) flagged, the per-batch budget read leaves them
    out, and a resumed search fills exactly the accepted trials asked for."""
    from cnnprof.design.metrics import parse_constraint
    from cnnprof.design.search import search
    from cnnprof.report.design import trial_row, trial_rows

    storage, seen = str(tmp_path / "s.db"), []
    first = search(toy, [("params", "minimize")], [parse_constraint("params<=500")], trials=3, seed=0,
                   storage=storage, on_trial=seen.append)
    assert len(first.trials) == 3 and first.rejected and first.gated
    assert sorted(t.number for t in seen) == sorted(t.number for t in (*first.trials, *first.rejected))
    assert {t.number for t in seen if t.rejected} == {t.number for t in first.rejected}
    assert all(t.point.params > 500 for t in seen if t.rejected) and all(t.point.params <= 500 for t in first.trials)
    streamed = {t.number: trial_row(t, first.convention, first.objectives, None, True) for t in seen}
    for row in trial_rows(first, rejected=True):  # the rows trials.json has, as streamed (the front known at the end)
        assert {**row, "pareto": None} == streamed[row["trial"]]
    resumed = search(toy, [("params", "minimize")], [parse_constraint("params<=500")], trials=5, seed=0,
                     storage=storage)
    assert len(resumed.trials) == 5 and resumed.evaluated == 2
    assert len(resumed.rejected) == len(first.rejected) + resumed.rejected_now
    assert not (tmp_path / "s.db-wal").exists() and not (tmp_path / "s.db-shm").exists()  # connections closed
    import sqlite3

    with sqlite3.connect(tmp_path / "s.db") as db:  # commits append to a log, not an fsync each
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_trial_another_process_failed_as_stale_meanwhile_is_not_counted(toy, tmp_path, monkeypatch):
    """A process whose heartbeat was late may find its trial failed by another (which runs the sample again)."""
    import optuna
    from optuna.trial import TrialState

    import cnnprof.design.search as search_module
    from cnnprof.design.storage import open_storage

    storage, real, taken = str(tmp_path / "s.log"), search_module._evaluate_job, []

    def another_process_fails_it(job):
        if not taken:
            study = optuna.load_study(study_name="toy", storage=open_storage(storage))
            t = study.get_trials(states=(TrialState.RUNNING,))[0]
            study._storage.set_trial_user_attr(t._trial_id, "cnnprof_stale", True)
            study._storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)
            taken.append(t.number)
        return real(job)

    monkeypatch.setattr(search_module, "_evaluate_job", another_process_fails_it)
    result = search_module.search(toy, [("params", "minimize")], trials=4, seed=0, storage=storage)
    assert len(result.trials) == 4 and result.evaluated == 4 and taken[0] not in {t.number for t in result.trials}


def test_a_trial_marked_stale_while_it_finishes_is_not_counted_or_streamed(toy, tmp_path, monkeypatch):
    """The race: another process marks our trial stale, we finish it, its own FAIL then loses. The stored trial is
    complete but stale: it does not count, so this run neither counts nor streams it."""
    import optuna
    from optuna.trial import TrialState

    import cnnprof.design.search as search_module
    from cnnprof.design.storage import open_storage

    storage, real, taken, seen = str(tmp_path / "s.log"), search_module._evaluate_job, [], []

    def another_process_marks_it(job):
        if not taken:
            study = optuna.load_study(study_name="toy", storage=open_storage(storage))
            t = study.get_trials(states=(TrialState.RUNNING,))[0]
            study._storage.set_trial_user_attr(t._trial_id, "cnnprof_stale", True)
            taken.append(t.number)
        return real(job)

    monkeypatch.setattr(search_module, "_evaluate_job", another_process_marks_it)
    result = search_module.search(toy, [("params", "minimize")], trials=4, seed=0, storage=storage,
                                  on_trial=seen.append)
    assert len(result.trials) == 4 and result.evaluated == 4
    assert taken[0] not in {t.number for t in result.trials} | {t.number for t in seen}


def test_a_database_url_password_is_never_shown(cli, tmp_path):
    """Unreachable (or without its driver installed): one line, the password masked."""
    result = run_search(cli, tmp_path, BASE + WIDTH, "--minimize", "params", "--storage",
                        "postgresql://me:s3cret@127.0.0.1:1/db")
    one_line_exit_2(result, "--storage postgresql://me:***@127.0.0.1:1/db")
    assert "s3cret" not in result.stderr + result.stdout


@pytest.mark.slow
def test_two_processes_on_one_journal_file_fill_the_study_exactly_and_agree(tmp_path):
    """Two searches at once on one journal file (each its own --out and seed): each samples in its own in-memory
    working study, yet together they store exactly --trials counted trials, none twice, and both report every
    trial of the study and the same Pareto front."""
    import os
    import subprocess
    import sys

    import optuna

    from cnnprof.design.storage import open_storage

    (tmp_path / "small.yaml").write_text("name: small\n" + BASE + WIDTH +
                                         "  resolution: {type: int, low: 96, high: 160, step: 32}\n")
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    procs = [subprocess.Popen([sys.executable, "-m", "cnnprof.cli", "search", "--space", str(tmp_path / "small.yaml"),
                               "--trials", "40", "--minimize", "macs", "--maximize", "params", "--workers", "1",
                               "--seed", str(i), "--storage", str(tmp_path / "shared.log"), "--out",
                               str(tmp_path / f"o{i}"), "--format", "json"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True) for i in (1, 2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outs]
    rows = [json.loads(out) for out, _ in outs]
    study = optuna.load_study(study_name="small", storage=open_storage(str(tmp_path / "shared.log")))
    stored = study.trials
    assert sum(key.startswith("cnnprof_worker:") for key in study.user_attrs) == 2  # both took part
    counted = [t for t in stored if t.state.name == "COMPLETE" and "cnnprof" in t.user_attrs]
    assert len(counted) == 40 and "RUNNING" not in {t.state.name for t in stored}
    assert sorted(r["trial"] for r in rows[0]) == sorted(r["trial"] for r in rows[1]) == sorted(t.number for t in counted)
    assert {r["trial"] for r in rows[0] if r["pareto"]} == {r["trial"] for r in rows[1] if r["pareto"]}
