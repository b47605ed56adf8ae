"""Many machines, one study (issue 16): independent `cnnprof search` processes, each with its own --out, fill one
study on a real PostgreSQL server. Runs only on request (`pytest -m distributed`, or CNNPROF_TEST_DISTRIBUTED=1),
and skips itself without a PostgreSQL server (initdb and pg_ctl: Debian's postgresql package, or
`pip install pgserver`) or without the driver (`pip install 'cnnprof[distributed]'`). As root, the server runs
as the `postgres` (or `nobody`) user, since PostgreSQL refuses to run as root.
"""
import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
SPACE = "name: small\nbase: mobilenet_v1\nknobs:\n  width_mult: {type: float, low: 0.25, high: 1.0}\n" \
        "  resolution: {type: int, low: 96, high: 160, step: 32}\n"


def server_binaries() -> Path | None:
    """The directory holding initdb and pg_ctl: pgserver's, on PATH, or a Debian/Ubuntu install."""
    try:
        from pgserver._commands import POSTGRES_BIN_PATH  # pgserver's wheel ships the binaries

        return Path(POSTGRES_BIN_PATH)
    except ImportError:
        pass
    if shutil.which("initdb") and shutil.which("pg_ctl"):
        return Path(shutil.which("initdb")).parent
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def server_user() -> str | None:
    """PostgreSQL will not run as root: the system user to run it as then (None when not root)."""
    if os.geteuid() != 0:
        return None
    import pwd

    for user in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(user).pw_name
        except KeyError:
            continue
    pytest.skip("running as root and no user to run PostgreSQL as")


def as_server_user(argv: list[str]) -> list[str]:
    user = server_user()
    return argv if user is None else ["runuser", "-u", user, "--", *argv]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url(request):
    """A PostgreSQL server of our own on 127.0.0.1 (trust authentication), stopped after the module."""
    if request.config.getoption("markexpr").strip() != "distributed" and not os.environ.get("CNNPROF_TEST_DISTRIBUTED"):
        pytest.skip("the distributed group runs on request: pytest -m distributed tests/test_search_distributed.py")
    pytest.importorskip("psycopg", reason="needs the driver: pip install 'cnnprof[distributed]'")
    bindir = server_binaries()
    if bindir is None:
        pytest.skip("no PostgreSQL server (initdb, pg_ctl) on this machine")
    home = Path(tempfile.mkdtemp(prefix="cnnprof-pg-"))  # in /tmp, which the server user can reach
    data, port = home / "data", free_port()
    if server_user() is not None:
        shutil.chown(home, server_user())
    run = lambda *argv: subprocess.run(as_server_user(list(argv)), check=True, capture_output=True, timeout=120)  # noqa: E731
    try:
        run(str(bindir / "initdb"), "-D", str(data), "-U", "cnnprof", "--auth=trust", "-E", "UTF8")
        run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(home / "server.log"), "-w", "-t", "60", "-o",
            f"-p {port} -k {home} -c listen_addresses=127.0.0.1 -c max_connections=50", "start")
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(home, ignore_errors=True)
        pytest.fail(f"PostgreSQL did not start: {exc.stderr.decode(errors='replace')[-500:]}")
    yield f"postgresql://cnnprof@127.0.0.1:{port}/postgres"
    subprocess.run(as_server_user([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
                   capture_output=True, timeout=60)
    shutil.rmtree(home, ignore_errors=True)


def start(tmp_path: Path, url: str, study: str, out: str, trials: int, seed: int) -> subprocess.Popen:
    """One machine's `cnnprof search` (exactly the README's command), as a subprocess."""
    space = tmp_path / "small.yaml"
    space.write_text(SPACE)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-m", "cnnprof.cli", "search", "--space", str(space), "--storage", url,
                             "--study-name", study, "--out", str(tmp_path / out), "--trials", str(trials),
                             "--seed", str(seed), "--workers", "1", "--minimize", "params", "--maximize", "macs"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def study_trials(url: str, study: str):
    import optuna

    from cnnprof.design.storage import open_storage

    return optuna.load_study(study_name=study, storage=open_storage(url)).get_trials(deepcopy=False)


def counted(trials) -> list:
    return [t for t in trials if t.state.name != "RUNNING" and "cnnprof" in t.user_attrs
            and "cnnprof_stale" not in t.user_attrs]


def outcome(tmp_path: Path, out: str) -> tuple[list[dict], set[str]]:
    """(every row of OUT/trials.json, names of the configs in OUT/pareto)."""
    rows = json.loads((tmp_path / out / "trials.json").read_text())
    return rows, {p.name for p in (tmp_path / out / "pareto").iterdir()}


def same_rows(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "config"} for r in rows]


def test_two_machines_fill_one_study_exactly(postgres_url, tmp_path):
    trials = 40
    procs = [start(tmp_path, postgres_url, "together", out, trials, seed) for out, seed in (("a", 1), ("b", 2))]
    results = [p.communicate(timeout=600) for p in procs]
    for p, (stdout, stderr) in zip(procs, results):
        assert p.returncode == 0, stderr
    ran = [int(re.search(r"This run: (\d+) trials", stdout).group(1)) for stdout, _ in results]
    assert sum(ran) == trials and min(ran) > 0  # both worked, and together ran exactly the budget
    stored = study_trials(postgres_url, "together")
    assert len(counted(stored)) == trials and not [t for t in stored if t.state.name == "RUNNING"]
    (rows_a, front_a), (rows_b, front_b) = outcome(tmp_path, "a"), outcome(tmp_path, "b")
    assert same_rows(rows_a) == same_rows(rows_b) and len(rows_a) == trials
    assert len({r["trial"] for r in rows_a}) == trials  # no trial twice
    assert front_a == front_b and front_a == {Path(r["config"]).name for r in rows_a if r["pareto"]}


def test_a_machine_killed_mid_run_loses_at_most_its_running_trials(postgres_url, tmp_path):
    from cnnprof.design.search import BATCH

    trials = 60
    victim = start(tmp_path, postgres_url, "killed", "a", trials, 1)
    survivor = start(tmp_path, postgres_url, "killed", "b", trials, 2)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and victim.poll() is None:
            try:
                if len(counted(study_trials(postgres_url, "killed"))) >= 12:
                    break
            except Exception:  # noqa: BLE001 - the study is not created yet
                pass
            time.sleep(0.5)
        assert victim.poll() is None, "the first search ended before it could be killed"
        victim.send_signal(signal.SIGKILL)
        assert victim.wait(60) == -signal.SIGKILL
        stdout, stderr = survivor.communicate(timeout=600)
    finally:
        victim.kill()
        survivor.kill()
    assert survivor.returncode == 0, stderr
    stored = study_trials(postgres_url, "killed")
    stale = [t for t in stored if "cnnprof_stale" in t.user_attrs]
    assert len(counted(stored)) == trials and not [t for t in stored if t.state.name == "RUNNING"]
    assert len(stale) <= BATCH  # the killed process's running trials, no more
    for t in stale:  # each failed as stale, its sample queued again and run by the survivor
        assert t.state.name == "FAIL"
        if t.params:
            assert [r.params for r in stored if r.user_attrs.get("cnnprof_rerun_of") == t.number] == [t.params]
    rows, front = outcome(tmp_path, "b")
    assert len(rows) == trials and len({r["trial"] for r in rows}) == trials
    assert front == {Path(r["config"]).name for r in rows if r["pareto"]}
