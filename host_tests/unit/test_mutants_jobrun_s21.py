"""ota.jobrun.Runner, what the session-21 mutation run over ota.jobrun left (test_mutants_jobrun.py has
the rest): the reason a MemoryError gets, the detail a job refused before it started keeps in its
record, a replayed trigger's detail, and how long ago an expired trigger expired. CPython, the fakes of
test_mutants_jobrun.py."""
import gc

import fakes  # noqa: F401  (puts lib/ on sys.path)
import test_mutants_jobrun
from test_mutants_jobrun import Link, Updater, job
from ota import signature, state
from ota.errors import OtaError

env = test_mutants_jobrun.env  # its fixture, registered here


def test_a_memory_error_is_low_memory_on_the_state_topic_and_in_the_record(env, monkeypatch):
    monkeypatch.setattr(gc, "collect", lambda: None)
    link = Link()
    env.make(link, Updater(error=MemoryError())).run(job())
    fields = link.published("failed")[-1][1]
    assert (fields["reason"], fields["detail"]) == ("low_memory", "MemoryError")
    assert (env.store.current["state"], env.store.current["reason"]) == ("failed", "low_memory")


def test_a_job_refused_before_it_started_keeps_its_detail_in_the_record(env):
    # The record is what the next boot says again ("the last outcome stays visible"): with its detail.
    link = Link()
    env.make(link, Updater(), require_sha256=True).run(job())
    said = link.published("failed")[-1][1]
    record = env.store.current
    assert (record["reason"], record["detail"]) == ("sha256_required", said["detail"])
    assert "require_sha256" in record["detail"]


def test_a_replayed_trigger_is_refused_with_its_detail_and_the_last_state_kept(env, monkeypatch):
    def replayed(*args):
        raise OtaError("replayed", "seq 5 is not above 7")

    monkeypatch.setattr(signature, "check", replayed)
    link = Link()
    env.make(link, Updater()).run(job(sha256="ab" * 32))
    assert link.calls[-1] == ("refuse", "replayed", "seq 5 is not above 7", True)
    assert link.published("failed") == []


def test_an_expired_trigger_says_how_long_ago(env, monkeypatch):
    monkeypatch.setattr(state, "unix_time", lambda: 1800000010)
    link = Link()
    env.make(link, Updater()).run(job(expires=1800000000))
    fields = link.published("failed")[-1][1]
    assert (fields["reason"], fields["detail"]) == ("expired", "expired 10 s ago")
