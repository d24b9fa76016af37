"""Many tune workers, one study: a journal file on disk and a real PostgreSQL server, two worker processes each.

The workers are ``peftsent.tune.main`` in their own processes (real training of the tiny models); a test
barrier holds each worker's first trial until both workers have one, so both always take part. The
PostgreSQL server is Debian's (``/usr/lib/postgresql/*/bin``), started for these tests on a free port of
127.0.0.1 (as the ``postgres`` user when the tests run as root) and stopped at the end; the tests skip,
saying why, where it is not installed.
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from conftest import tiny_recipe

ROOT = Path(__file__).resolve().parent.parent
STUDY = "workers"
#: short heartbeats, so a killed worker's trial is failed within seconds
FAST_HEARTBEAT = ["--heartbeat", "1", "--grace", "3"]

WORKER = '''
import os, sys, time
from pathlib import Path

import peftsent.train as train_module
from peftsent.tune import main

real_train, barrier, parties = train_module.train, Path(os.environ["BARRIER_DIR"]), 2


def train(recipe, *args, **kwargs):
    """The first trial of this worker waits until every worker holds a trial."""
    if not getattr(train, "passed", False):
        (barrier / str(os.getpid())).touch()
        deadline = time.monotonic() + 180
        while len(list(barrier.iterdir())) < parties and time.monotonic() < deadline:
            time.sleep(0.1)
        train.passed = True
    return real_train(recipe, *args, **kwargs)


train_module.train = train
sys.exit(main(sys.argv[1:]))
'''


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# ---------------------------------------------------------------- a throwaway PostgreSQL server


def _postgres_bin() -> Path | None:
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").is_file() and (candidate / "pg_ctl").is_file():
            return candidate
    found = shutil.which("pg_ctl")
    return Path(found).parent if found and shutil.which("initdb") else None


@pytest.fixture(scope="module")
def postgres_url():
    """The SQLAlchemy URL of a fresh PostgreSQL server (trust authentication, 127.0.0.1 only)."""
    pytest.importorskip("psycopg", reason="the PostgreSQL driver is missing: pip install 'psycopg[binary]'")
    bin_dir = _postgres_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql")
    as_postgres = []
    root = Path(tempfile.mkdtemp(prefix="peftsent-pg-"))
    if os.geteuid() == 0:  # the server refuses to run as root
        import pwd

        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the PostgreSQL server as")
        os.chown(root, user.pw_uid, user.pw_gid)
        as_postgres = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", _free_port()
    run = lambda *command: subprocess.run([*as_postgres, *command], capture_output=True, text=True, timeout=120)
    init = run(str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "peftsent", "--no-sync")
    assert init.returncode == 0, init.stderr
    start = run(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-w", "-t", "60",
                "-o", f"-h 127.0.0.1 -p {port} -k {root} -F -c max_connections=50", "start")
    assert start.returncode == 0, start.stderr + (root / "server.log").read_text()
    try:
        yield f"postgresql+psycopg://peftsent@127.0.0.1:{port}/postgres"
    finally:
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------- workers


def _recipe(tiny_models, reviews_csv, tmp_path) -> str:
    raw = tiny_recipe(tiny_models["bert"], reviews_csv, tmp_path / "runs" / "r", max_steps=2, disable_tqdm=True)
    raw["tune"] = {"pruner": "none", "train.learning_rate": {"log_uniform": [1.0e-4, 1.0e-2]},
                   "method.r": {"choice": [2, 4]}}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def _env(**extra) -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **extra}


def _start_workers(recipe, url, out, trials, tmp_path, kill_first_at=None) -> list[subprocess.Popen]:
    """Two workers on one study; the first one is SIGKILLed at ``kill_first_at`` (a rundir kill point)."""
    script, barrier = tmp_path / "worker.py", tmp_path / "barrier"
    script.write_text(WORKER)
    barrier.mkdir()
    command = [sys.executable, str(script), recipe, "--trials", str(trials), "--storage", url,
               "--study-name", STUDY, "--out", str(out), *FAST_HEARTBEAT]
    workers = []
    for i in range(2):
        env = _env(BARRIER_DIR=str(barrier))
        if i == 0 and kill_first_at:
            env["PEFTSENT_TEST_KILL_AT"] = kill_first_at
        log = (tmp_path / f"worker-{i}.log").open("w")
        workers.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path))
    return workers


def _wait(workers, tmp_path, timeout=300) -> list[int]:
    deadline = time.monotonic() + timeout
    codes = []
    for worker in workers:
        try:
            codes.append(worker.wait(timeout=max(1.0, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            for w in workers:
                w.kill()
            pytest.fail("a worker did not finish:\n" + _logs(tmp_path))
    return codes


def _logs(tmp_path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(tmp_path.glob("worker-*.log")))


def _trials(url):
    import optuna

    from peftsent.tune import _storage

    return optuna.load_study(study_name=STUDY, storage=_storage(url)).get_trials()


def _storage_url(kind, tmp_path, request) -> str:
    if kind == "journal":
        return f"journal://{tmp_path / 'shared' / 'study.journal'}"
    return request.getfixturevalue("postgres_url")


def _fresh_study(url) -> None:
    """Delete the study left in the module's PostgreSQL server by an earlier test."""
    import optuna

    if url.startswith("postgresql"):
        try:
            optuna.delete_study(study_name=STUDY, storage=url)
        except KeyError:
            pass


# ---------------------------------------------------------------- the tests


# a few tens of seconds each on 2 idle cores (two or three processes that import torch): one of each storage by default
@pytest.mark.parametrize("kind", ["journal", pytest.param("postgres", marks=pytest.mark.slow)])
def test_two_workers_share_one_study_and_a_third_process_reports(kind, tiny_models, reviews_csv, tmp_path, request):
    url = _storage_url(kind, tmp_path, request)
    _fresh_study(url)
    recipe, out, trials = _recipe(tiny_models, reviews_csv, tmp_path), tmp_path / "tune", 3
    codes = _wait(_start_workers(recipe, url, out, trials, tmp_path), tmp_path)
    assert codes == [0, 0], _logs(tmp_path)

    study = _trials(url)
    finished = [t for t in study if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == trials, [(t.number, t.state.name) for t in study]  # exactly --trials, not one more
    assert len({t.user_attrs["worker"] for t in finished}) == 2  # both workers trained trials
    # one directory per trial, named by the study's trial number: no two trials share one
    assert sorted(p.name for p in (out / "trials").iterdir()) == sorted(f"trial-{t.number}" for t in finished)
    assert all((out / "trials" / f"trial-{t.number}" / "metrics.json").is_file() for t in finished)
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]  # both workers reported, nothing half-written

    # a third process, which trains nothing, writes the reports of the whole study
    reports = ("best.yaml", "trials.csv", "study.json", "history.png", "importance.png")
    for name in reports:
        (out / name).unlink()
    report = subprocess.run([sys.executable, "-m", "peftsent.tune", recipe, "--storage", url, "--study-name", STUDY,
                             "--out", str(out), "--report"], capture_output=True, text=True, env=_env(), timeout=300)
    assert report.returncode == 0, report.stderr[-3000:]
    assert all((out / name).stat().st_size > 0 for name in reports)
    assert sorted(p.name for p in (out / "trials").iterdir()) == sorted(f"trial-{t.number}" for t in finished)
    best = max((t for t in finished if t.state.name == "COMPLETE"), key=lambda t: t.value)
    assert f"trial {best.number}," in (out / "best.yaml").read_text()


@pytest.mark.parametrize("kind", [pytest.param("journal", marks=pytest.mark.slow), "postgres"])
def test_a_killed_workers_trial_fails_by_heartbeat_and_another_worker_retries_it(kind, tiny_models, reviews_csv,
                                                                                  tmp_path, request):
    url = _storage_url(kind, tmp_path, request)
    _fresh_study(url)
    recipe, out, trials = _recipe(tiny_models, reviews_csv, tmp_path), tmp_path / "tune", 2
    killed, survivor = _start_workers(recipe, url, out, trials, tmp_path, kill_first_at="step-1")
    codes = _wait([killed, survivor], tmp_path)
    assert codes == [-signal.SIGKILL, 0], _logs(tmp_path)

    study = _trials(url)
    (dead,) = [t for t in study if t.state.name == "FAIL"]  # the killed worker's trial, failed by heartbeat
    assert dead.user_attrs["worker"].endswith(f":{killed.pid}")
    (retry,) = [t for t in study if t.system_attrs.get("failed_trial") == dead.number]
    assert retry.state.name == "COMPLETE" and retry.params == dead.params  # same values, trained to the end
    assert retry.user_attrs["worker"].endswith(f":{survivor.pid}")
    finished = [t for t in study if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == trials and len(study) == trials + 1
    # the dead trial's staging directory stays (with its lock); the retry trained into its own directory
    names = {p.name for p in (out / "trials").iterdir()}
    assert names == {f"trial-{t.number}" for t in finished} | {f".trial-{dead.number}.partial"}
    assert (out / "best.yaml").is_file()


def test_study_json_never_shows_a_database_password():
    from peftsent.tune import _shown

    assert _shown("postgresql+psycopg://tuner:s3cret@db:5432/optuna") == "postgresql+psycopg://tuner:***@db:5432/optuna"
    assert _shown("journal:///shared/a.journal") == "journal:///shared/a.journal"


def _spec():
    from peftsent.search_space import TuneSpec

    return TuneSpec((), "accuracy", 0)


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_a_trial_asked_for_beyond_the_last_place_is_failed_before_it_trains(tmp_path):
    import optuna

    from peftsent.tune import SurplusTrial, _claimed, _storage

    study = optuna.create_study(storage=_storage(f"journal://{tmp_path / 's.journal'}"), study_name=STUDY,
                                direction="maximize")
    first, second = study.ask(), study.ask()  # two workers asked at the same moment for the last place
    ran = []
    objective = _claimed(lambda trial: ran.append(trial.number) or 0.5, 1, _spec())
    with pytest.raises(SurplusTrial, match="trial 1 not run: the study already has --trials 1"):
        objective(second)
    assert objective(first) == 0.5 and ran == [0]  # the lower trial number holds the place
    assert second.study.get_trials()[1].user_attrs["surplus"] is True


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_journal_heartbeats_fail_a_silent_trial_and_queue_its_retry(tmp_path):
    import optuna

    from peftsent.tune import JOURNAL_HEARTBEAT_ATTR, _storage

    url = f"journal://{tmp_path / 'shared' / 's.journal'}"
    study = optuna.create_study(storage=_storage(url, heartbeat_s=1, grace_s=2), study_name=STUDY,
                                direction="maximize")
    alive, dead = study.ask(), study.ask()
    for trial in (alive, dead):
        trial.suggest_int("r", 2, 8)
    study._storage.record_heartbeat(dead._trial_id)
    time.sleep(2.5)
    study._storage.record_heartbeat(alive._trial_id)
    # another worker (its own storage object on the same file) looks for stale trials
    other = optuna.load_study(study_name=STUDY, storage=_storage(url, heartbeat_s=1, grace_s=2))
    optuna.storages.fail_stale_trials(other)
    states = {t.number: t.state.name for t in other.get_trials()}
    assert states == {0: "RUNNING", 1: "FAIL", 2: "WAITING"}
    retry = other.get_trials()[2]
    assert retry.system_attrs["failed_trial"] == 1 and retry.params == dead.params
    assert JOURNAL_HEARTBEAT_ATTR in other.get_trials()[0].system_attrs


def test_report_of_a_study_that_is_not_there_is_one_message_and_trains_nothing(tiny_models, reviews_csv, tmp_path,
                                                                              capsys):
    from peftsent.tune import main

    recipe = _recipe(tiny_models, reviews_csv, tmp_path)
    assert main([recipe, "--report", "--out", str(tmp_path / "none")]) == 2
    assert "--report: no study in" in capsys.readouterr().err and not (tmp_path / "none").exists()
    url = f"journal://{tmp_path / 'j' / 'study.journal'}"
    assert main([recipe, "--report", "--storage", url, "--study-name", "absent", "--out", str(tmp_path / "o")]) == 2
    assert "no study 'absent' in this storage" in capsys.readouterr().err
    assert main([recipe, "--trials", "2", "--heartbeat", "5", "--grace", "5", "--out", str(tmp_path / "o")]) == 2
    assert "expected 0 < heartbeat < grace seconds" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_a_worker_whose_trial_was_declared_dead_carries_on_with_the_next(tmp_path, capsys):
    import optuna
    from optuna.trial import TrialState

    from peftsent.tune import _claimed, _storage, _work

    study = optuna.create_study(storage=_storage(f"journal://{tmp_path / 's.journal'}", heartbeat_s=1, grace_s=2),
                                study_name=STUDY, direction="maximize")

    def objective(trial):
        if trial.number == 0:  # another worker found no heartbeat for --grace seconds while this one stalled
            study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            trial.set_user_attr("validation", {"accuracy": 0.5})
        return 0.5

    _work(study, _claimed(objective, 1, _spec()), 1, None, 0.1)
    assert [t.state.name for t in study.get_trials()] == ["FAIL", "COMPLETE"]
    assert "trial 0 was marked failed by another worker" in capsys.readouterr().err
