"""The lab's queue across stations (procrastinate on the real PostgreSQL server), as a lab
uses it: three stations served by ``nvmlab emulate``, a worker per station, nine jobs,
one worker killed with SIGKILL and one stopped with SIGTERM in the middle of a job, a
second worker for a station started meanwhile; then the bad input a lab meets."""

from __future__ import annotations

import contextlib
import signal
import time
from collections import defaultdict
from pathlib import Path

import pytest
from queuehelp import (
    Worker,
    emulated_station,
    engine_jobs,
    job_file,
    lab_database,
    monitor,
    nvmlab,
    table,
    wait_for,
)

from nvmlab.storage.models import QueueJob, Run, RunProgress, StationWorker, Unit


def _workers_idle(url: str, names: set[str]) -> bool:
    rows = table(url, StationWorker)
    return {r["station"] for r in rows if r["state"] in ("idle", "busy") and r["pid"]} >= names


def _running_on(url: str, station: str, job_id: int, at_least: int) -> bool:
    """Queue job ``job_id`` runs on ``station`` with at least ``at_least`` units done."""
    jobs = {r["job_id"]: r for r in table(url, QueueJob)}
    run_id = jobs.get(job_id, {}).get("run_id")
    if run_id is None or jobs[job_id]["station"] != station:
        return False
    progress = {r["run_id"]: r for r in table(url, RunProgress)}.get(run_id)
    return progress is not None and at_least <= progress["units_done"] < progress["units_total"]


def _submit(url: str, job: Path, *where: str) -> int:
    done = nvmlab("queue", "submit", str(job), *where, "--db", url, cwd=job.parent)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.split()[2].rstrip(":"))


@pytest.mark.timeout(600)
def test_nine_jobs_on_three_stations_survive_a_killed_worker_and_a_stopped_one(
    tmp_path: Path,
) -> None:
    with lab_database() as url, contextlib.ExitStack() as stack:
        # three stations: two hold a 6 x 6 crossbar, one a 5 x 5
        a = stack.enter_context(emulated_station(tmp_path / "a", "st-a", rows=6, cols=6, seed=1))
        b = stack.enter_context(emulated_station(tmp_path / "b", "st-b", rows=6, cols=6, seed=2))
        c = stack.enter_context(emulated_station(tmp_path / "c", "st-c", rows=5, cols=5, seed=3))
        workers: list[Worker] = []
        watch = stack.enter_context(monitor(url, tmp_path / "monitor.log"))

        def start(station: object, tag: str, *extra: str) -> Worker:
            w = Worker(station.station_file, url, tmp_path / f"worker-{tag}.log", *extra)  # type: ignore[attr-defined]
            workers.append(w)
            return w

        try:
            wa, wb = start(a, "a1"), start(b, "b1")
            start(c, "c1")
            wait_for(
                "three workers registered", lambda: _workers_idle(url, {"st-a", "st-b", "st-c"})
            )

            jobs_dir = tmp_path / "jobs"
            jobs_dir.mkdir()
            twice = '\n[[steps]]\nkind = "map"\n'
            named: dict[int, str] = {}
            # the first job of st-a and of st-b is long: two maps (it is interrupted)
            for st in (a, b, c):
                for k in range(2):
                    job = job_file(jobs_dir, f"{st.name}-{k}", chip=f"chip-{st.name}",
                                   rows=st.rows, cols=st.cols,
                                   steps=twice if k == 0 and st is not c else "")  # fmt: skip
                    named[_submit(url, job, "--station", st.name)] = st.name
            anywhere = [
                _submit(url, job_file(jobs_dir, f"any-{k}", chip=f"pool-{k}", rows=6, cols=6),
                        "--any")
                for k in range(3)
            ]  # fmt: skip
            assert len(named) + len(anywhere) == 9
            first_a = next(j for j, s in named.items() if s == "st-a")
            first_b = next(j for j, s in named.items() if s == "st-b")

            # kill st-a's worker in the middle of its first job; start it again
            wait_for("st-a's first job under way", lambda: _running_on(url, "st-a", first_a, 4))
            wa.signal(signal.SIGKILL)
            assert wa.proc.wait(timeout=30) == -signal.SIGKILL
            wa2 = start(a, "a2")
            wait_for("the restarted worker resuming", lambda: "resumes run" in wa2.output())
            # meanwhile a second worker for st-a: it must stand by, running nothing
            wa3 = start(a, "a3")
            wait_for("the second worker standing by", lambda: "standing by" in wa3.output())

            # stop st-b's worker with SIGTERM in the middle of its first job; start it again
            wait_for("st-b's first job under way", lambda: _running_on(url, "st-b", first_b, 4))
            wb.signal(signal.SIGTERM)
            assert wb.proc.wait(timeout=60) == 0, wb.output()
            assert "goes back to the queue" in wb.output()
            stopped = {r["job_id"]: r for r in table(url, QueueJob)}[first_b]["run_id"]
            assert {r["id"]: r for r in table(url, Run)}[stopped]["status"] == "aborted"
            start(b, "b2")
            # the run monitor (read-only) sees the stations, their workers and the queue
            state = watch()
            assert {x["station"] for x in state["stations"]} == {"st-a", "st-b", "st-c"}
            assert {j["job_id"] for j in state["queue"]["jobs"]} == set(named) | set(anywhere)
            assert any(x["state"] == "busy" for x in state["stations"]), state["stations"]

            def all_done() -> bool:
                return all(j["status"] == "succeeded" for j in engine_jobs(url).values())

            wait_for("all nine jobs done", all_done, timeout=400, every=1.0)
            standby_alive = wa3.proc.poll() is None
        finally:
            codes = [w.stop() for w in workers if w.proc.poll() is None]
            for w in workers:
                w.close()
        assert standby_alive and codes == [0] * len(codes)

        engine = engine_jobs(url)
        assert len(engine) == 9 and {j["status"] for j in engine.values()} == {"succeeded"}
        queue = {r["job_id"]: r for r in table(url, QueueJob)}
        runs = {r["id"]: r for r in table(url, Run)}
        # each on a station that can serve it
        for job_id, station in named.items():
            assert queue[job_id]["station"] == station
        for job_id in anywhere:
            assert queue[job_id]["station"] in ("st-a", "st-b")
        # the killed and the stopped job resumed their runs (never afresh), to completion
        for job_id in (first_a, first_b):
            chain = [queue[job_id]["run_id"]]
            while runs[chain[-1]]["resumes_run_id"] is not None:
                chain.append(runs[chain[-1]]["resumes_run_id"])
            assert len(chain) == 2 and chain[-1] == queue[job_id]["first_run_id"]
            assert runs[chain[0]]["status"] == "completed"
        assert runs[queue[first_b]["first_run_id"]]["status"] == "aborted"
        assert engine[first_b]["attempts"] == 2 and engine[first_a]["attempts"] == 2
        # the standby worker ran nothing
        assert wa3.pid not in {r["pid"] for r in runs.values()}
        assert "standing by" in wa3.output() and "run " not in wa3.output().split("standing by")[1]

        # never two jobs at once on a station: the runs of each station do not overlap
        by_station: dict[str, list[dict]] = defaultdict(list)
        for run in runs.values():
            by_station[run["config"]["station"]].append(run)
        for station, station_runs in by_station.items():
            station_runs.sort(key=lambda r: r["started_at"])
            for before, after in zip(station_runs, station_runs[1:], strict=False):
                end = before["ended_at"]
                if end is None:  # the killed run: its process died before the next began
                    assert before["id"] == queue[first_a]["first_run_id"], station
                    continue
                assert after["started_at"] >= end, (station, before["id"], after["id"])

        # every unit stored exactly once: per job, one completed attempt per unit key, and
        # as many as the job has units (a map of 6 x 6 or 5 x 5; the long jobs two maps)
        units = table(url, Unit)
        completed: dict[int, list[str]] = defaultdict(list)
        chain_of = {}
        for job_id, row in queue.items():
            run = row["run_id"]
            while run is not None:
                chain_of[run] = job_id
                run = runs[run]["resumes_run_id"]
        for unit in units:
            if unit["status"] == "completed":
                completed[chain_of[unit["run_id"]]].append(unit["unit_key"])
        per_map = {
            (6, 6): len(
                completed[next(j for j, s in named.items() if s == "st-a" and j != first_a)]
            ),
            (5, 5): len(completed[next(j for j, s in named.items() if s == "st-c")]),
        }
        assert per_map[(6, 6)] > 6 and per_map[(5, 5)] > 5
        for job_id, keys in completed.items():
            assert len(keys) == len(set(keys)), job_id
            shape = (5, 5) if named.get(job_id) == "st-c" else (6, 6)
            maps = 2 if job_id in (first_a, first_b) else 1
            assert len(keys) == maps * per_map[shape], (job_id, len(keys))
        # the killed run never completed: its units in flight were redone by the resume
        assert runs[queue[first_a]["first_run_id"]]["status"] != "completed"


@pytest.mark.timeout(300)
def test_bad_input_is_refused_at_submit_and_a_dead_station_takes_no_job(tmp_path: Path) -> None:
    with lab_database() as url:
        jobs_dir = tmp_path / "jobs"
        jobs_dir.mkdir()
        good = job_file(jobs_dir, "good", chip="chip-q", rows=5, cols=5)

        # an unknown station, before any worker ran
        done = nvmlab("queue", "submit", str(good), "--station", "st-q", "--db", url)
        assert done.returncode == 1
        assert "unknown station 'st-q'" in done.stderr and "nvmlab worker" in done.stderr
        # SQLite holds no queue
        done = nvmlab("queue", "submit", str(good), "--station", "st-q", "--db",
                      f"sqlite:///{tmp_path / 'r.sqlite'}")  # fmt: skip
        assert done.returncode == 1 and "needs the lab's PostgreSQL" in done.stderr

        with emulated_station(tmp_path / "q", "st-q", rows=5, cols=5, seed=4) as q:
            worker = Worker(q.station_file, url, tmp_path / "worker-q.log")
            wait_for("st-q registered", lambda: _workers_idle(url, {"st-q"}))
            assert worker.stop() == 0
            station_file = q.station_file
        # the station is known, its worker gone: a job waits, and says so
        done = nvmlab("queue", "submit", str(good), "--station", "st-q", "--db", url)
        assert done.returncode == 0, done.stderr
        assert "waiting: no worker is running for st-q" in done.stdout
        listed = nvmlab("queue", "list", "--db", url)
        assert "waiting (no worker)" in listed.stdout, listed.stdout

        # a job file that does not validate, refused now (not at 3 a.m.), naming the field
        wrong_size = job_file(jobs_dir, "wrong", chip="chip-w", rows=6, cols=6)
        done = nvmlab("queue", "submit", str(wrong_size), "--station", "st-q", "--db", url)
        assert done.returncode == 1 and "wrong.toml" in done.stderr and "chip." in done.stderr
        broken = jobs_dir / "broken.toml"
        broken.write_text(good.read_text() + '\n[[steps]]\nkind = "map"\nread_v = 9.0\n')
        done = nvmlab("queue", "submit", str(broken), "--station", "st-q", "--db", url)
        assert done.returncode == 1 and "broken.toml" in done.stderr, done.stderr
        assert "read_v" in done.stderr and "0.5" in done.stderr
        done = nvmlab("queue", "submit", str(wrong_size), "--any", "--db", url)
        assert (
            done.returncode == 1
            and "no station of this lab serves a memristor chip of 6 x 6" in done.stderr
        )
        assert len(engine_jobs(url)) == 1

        # a worker whose instruments do not answer (the emulator is gone): a clear error
        # naming them, and the queued job is not taken
        worker = Worker(station_file, url, tmp_path / "worker-dead.log")
        code = worker.proc.wait(timeout=120)
        out = worker.output()
        assert code == 1 and "could not open" in out and "st-q" in out, out
        assert [j["status"] for j in engine_jobs(url).values()] == ["todo"]
        assert all(r["run_id"] is None for r in table(url, QueueJob))


@pytest.mark.timeout(300)
def test_cancel_stops_a_running_job_safely_and_drops_a_queued_one(tmp_path: Path) -> None:
    with lab_database() as url, emulated_station(tmp_path / "s", "st-s", rows=6, cols=6,
                                                 seed=5) as s:  # fmt: skip
        jobs_dir = tmp_path / "jobs"
        jobs_dir.mkdir()
        worker = Worker(s.station_file, url, tmp_path / "worker-s.log")
        try:
            wait_for("st-s registered", lambda: _workers_idle(url, {"st-s"}))
            long = job_file(jobs_dir, "long", chip="chip-s", rows=6, cols=6,
                            steps='\n[[steps]]\nkind = "map"\n')  # fmt: skip
            running = _submit(url, long, "--station", "st-s")
            queued = _submit(url, job_file(jobs_dir, "next", chip="chip-s", rows=6, cols=6),
                             "--station", "st-s")  # fmt: skip
            wait_for("the job under way", lambda: _running_on(url, "st-s", running, 3))
            done = nvmlab("queue", "cancel", str(queued), "--db", url)
            assert done.returncode == 0 and "cancelled" in done.stdout, done.stderr
            done = nvmlab("queue", "cancel", str(running), "--db", url)
            assert done.returncode == 0 and "stop requested" in done.stdout, done.stderr
            wait_for("the running job aborted",
                     lambda: engine_jobs(url)[running]["status"] == "aborted")  # fmt: skip
        finally:
            assert worker.stop() == 0
        jobs = engine_jobs(url)
        assert jobs[queued]["status"] == "cancelled" and jobs[queued]["attempts"] == 0
        run_id = {r["job_id"]: r for r in table(url, QueueJob)}[running]["run_id"]
        run = {r["id"]: r for r in table(url, Run)}[run_id]
        assert run["status"] == "aborted" and "cancelled from the queue" in run["message"]
        progress = {r["run_id"]: r for r in table(url, RunProgress)}[run_id]
        assert 3 <= progress["units_done"] < progress["units_total"]  # stopped mid-step
        assert "cancelled from the queue" in worker.output()
        # cancelling again, or an unknown job: a clear error
        again = nvmlab("queue", "cancel", str(running), "--db", url)
        assert again.returncode == 1 and "is aborted: nothing to cancel" in again.stderr
        unknown = nvmlab("queue", "cancel", "999", "--db", url)
        assert unknown.returncode == 1 and "queue job 999 does not exist" in unknown.stderr


@pytest.mark.timeout(400)
def test_a_station_that_loses_power_has_its_job_put_back_on_that_station_only(
    tmp_path: Path,
) -> None:
    """A power cut, short of cutting power on one machine: st-a's worker is frozen
    (SIGSTOP: no heartbeat, no reply) and the server drops its connection, as its TCP
    keepalives would for a dead PC. st-b's stalled-job sweep finds the job and puts it back
    in st-a's queue, although it came from the 'any' queue st-b serves (the chip is on
    st-a); the worker st-a starts after the reboot resumes it."""
    import psycopg

    from nvmlab.jobs.queue import engine_conninfo
    from nvmlab.jobs.worker import ADVISORY_NAMESPACE

    with lab_database() as url, contextlib.ExitStack() as stack:
        a = stack.enter_context(emulated_station(tmp_path / "a", "st-a", rows=6, cols=6, seed=6))
        b = stack.enter_context(emulated_station(tmp_path / "b", "st-b", rows=6, cols=6, seed=7))
        jobs_dir = tmp_path / "jobs"
        jobs_dir.mkdir()
        wa = Worker(a.station_file, url, tmp_path / "worker-a1.log")
        workers = [wa]
        try:
            wait_for("st-a registered", lambda: _workers_idle(url, {"st-a"}))
            long = job_file(jobs_dir, "long", chip="pool", rows=6, cols=6,
                            steps='\n[[steps]]\nkind = "map"\n')  # fmt: skip
            job = _submit(url, long, "--any")
            wait_for("the job under way on st-a", lambda: _running_on(url, "st-a", job, 3))
            workers.append(Worker(b.station_file, url, tmp_path / "worker-b.log"))
            wait_for("st-b registered", lambda: _workers_idle(url, {"st-a", "st-b"}))
            wa.signal(signal.SIGSTOP)
            with psycopg.connect(engine_conninfo(url), autocommit=True) as admin:
                dropped = admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = "
                    "'advisory' AND classid = %s AND objid = "
                    "(hashtext('st-a')::bigint & 4294967295)::oid AND granted",
                    (ADVISORY_NAMESPACE,),
                ).fetchall()  # fmt: skip
            assert dropped == [(True,)]  # st-a's station lock, and only it

            def put_back() -> bool:
                return (
                    engine_jobs(url)[job]
                    == {"status": "todo", "queue": "station:st-a", "attempts": 0}
                    or engine_jobs(url)[job]["queue"] == "station:st-a"
                )

            wait_for("the job put back in st-a's queue", put_back, timeout=90)
            time.sleep(4)  # st-b, idle and serving the 'any' queue, must not take it
            assert engine_jobs(url)[job]["status"] == "todo"
            wa.signal(signal.SIGKILL)
            wa.proc.wait(timeout=30)
            wa2 = Worker(a.station_file, url, tmp_path / "worker-a2.log")
            workers.append(wa2)
            wait_for("the job done", lambda: engine_jobs(url)[job]["status"] == "succeeded",
                     timeout=180)  # fmt: skip
        finally:
            for w in workers:
                if w.proc.poll() is None:
                    w.stop()
                w.close()
        assert "resumes run" in wa2.output()
        row = {r["job_id"]: r for r in table(url, QueueJob)}[job]
        runs = {r["id"]: r for r in table(url, Run)}
        assert (
            row["station"] == "st-a"
            and runs[row["run_id"]]["resumes_run_id"] == row["first_run_id"]
        )
        assert runs[row["run_id"]]["status"] == "completed"
        assert "stopped beating" in workers[1].output()


@pytest.mark.timeout(300)
def test_a_queued_job_waits_while_a_job_run_by_hand_holds_the_station(tmp_path: Path) -> None:
    """'nvmlab run' by hand on a station holds the station's lock: the queued job taken by
    the station's worker meanwhile does not start; it goes back to the station's queue to
    try again later."""
    from nvmlab.storage import open_database
    from nvmlab.storage.locks import acquire_station_lock, release_station_lock

    with lab_database() as url, emulated_station(tmp_path / "h", "st-h", rows=5, cols=5,
                                                 seed=8) as h:  # fmt: skip
        jobs_dir = tmp_path / "jobs"
        jobs_dir.mkdir()
        with open_database(url) as db:
            acquire_station_lock(db, "st-h")  # this test process is the job run by hand
            worker = Worker(h.station_file, url, tmp_path / "worker-h.log")
            try:
                wait_for("st-h registered", lambda: _workers_idle(url, {"st-h"}))
                job = _submit(url, job_file(jobs_dir, "j", chip="chip-h", rows=5, cols=5),
                              "--station", "st-h")  # fmt: skip
                wait_for("the job sent back", lambda: engine_jobs(url)[job]["attempts"] == 1)
                assert engine_jobs(url)[job]["status"] == "todo"
                assert "is held by a job starting" in worker.output()
                assert "back in the queue, tried again in 30 s" in worker.output()
                assert table(url, Run) == []  # nothing ran on the held station
            finally:
                release_station_lock(db, "st-h")
                assert worker.stop() == 0
