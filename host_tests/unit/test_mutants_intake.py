"""ota.intake.Intake: which messages become a job, which are dropped silently and which are refused
with a reason, for every combination of signed/unsigned, running/queued and HA's Install (pinned after
`make mutate`). CPython, a real jobs.Jobs on a temporary file."""
import json

import pytest

import fakes  # noqa: F401  (puts lib/ on sys.path)
from ota import intake, jobs, trigger
from ota.errors import OtaError

DEV = "a0b1c2d3e4f5"
OWN = "/switch/cmd/" + DEV
ROOT = b"/switch/cmd/root"
URL = "https://fw.example.com/app-1.1.0.bin"
SIG = "00" * 64


def payload(**fields):
    return json.dumps(dict({"type": "ota_trigger", "url": URL}, **fields)).encode()


@pytest.fixture
def taker(tmp_path):
    return intake.Intake(DEV, OWN, jobs.Jobs(str(tmp_path / "ota_job.json")))


def _reason(call, *args, **kw):
    with pytest.raises(OtaError) as e:
        call(*args, **kw)
    return e.value.reason, e.value.detail


def test_a_bad_trigger_is_raised_with_its_reason_and_printed(taker, capsys):
    assert _reason(taker.take, ROOT, b"{")[0] == "bad_json"
    assert "agent: bad trigger:" in capsys.readouterr().out
    assert taker.take(ROOT, b'{"type": "switch_set"}') is None  # not ours: no answer


def test_wrong_target_on_our_topic_names_both_ids(taker):
    assert _reason(taker.take, OWN, payload(target="ffffffffffff")) == \
        ("wrong_target", "for ffffffffffff, not %s" % DEV)
    assert taker.take(OWN, payload(target="ffffffffffff,%s" % DEV))["target"] == "ffffffffffff,%s" % DEV
    assert taker.take("/switch/cmd/other", payload(target="ffffffffffff")) is None


def test_the_content_id_is_stable_across_firmware_versions(taker):
    # The seen list in the job file outlives an update: the next firmware must give a retained trigger
    # without id the same id, or it would run it again. These values are the ids firmware 1.x gives.
    assert taker.take(ROOT, payload())["id"] == "auto-0b1be6e79723"
    assert taker.take(ROOT, payload(sha256="ab" * 32, version="1.1.0"))["id"] == "auto-d6b90f2e0a54"
    assert taker.take(ROOT, b'{"type": "ota_revert"}')["id"] == "auto-35899b29e3d0"


def test_each_field_of_the_content_id_counts(taker):
    ids = {taker.take(ROOT, p)["id"] for p in (
        payload(), payload(url=URL + "?x"), payload(sha256="ab" * 32), payload(version="1.1.0"),
        b'{"type": "ota_revert"}')}
    assert len(ids) == 5


def test_an_explicit_id_is_kept_and_a_signed_trigger_gets_none(taker):
    assert taker.take(ROOT, payload(id="job-7"))["id"] == "job-7"
    assert taker.take(ROOT, payload(signature=SIG))["id"] is None  # missing_id is signature.check's


def test_a_signed_redelivery_is_dropped_whether_running_or_queued(taker, capsys):
    job = taker.take(ROOT, payload(id="s1", signature=SIG))
    assert taker.take(ROOT, payload(id="s1", signature=SIG), queued=job) is None
    assert taker.take(ROOT, payload(id="s1", signature=SIG), running=job) is None
    assert capsys.readouterr().out.count("duplicate job ignored: s1") == 2
    # Another signature while one runs or waits: busy, not a duplicate.
    other = payload(id="s1", signature="11" * 64)
    assert _reason(taker.take, ROOT, other, running=job)[0] == "busy"
    assert _reason(taker.take, ROOT, other, queued=job)[0] == "busy"


def test_a_signed_trigger_is_not_judged_by_the_seen_list(taker):
    taker.jobs.start({"id": "s1", "type": "ota_trigger"}, "ok")
    job = taker.take(ROOT, payload(id="s1", signature=SIG))
    assert job is not None and job["id"] == "s1"  # its seq decides later (replay.py)


def test_an_unsigned_duplicate_is_dropped_and_a_pressed_one_is_answered(taker):
    taker.jobs.start({"id": "j1", "type": "ota_trigger"}, "failed")
    job = trigger.parse(payload(id="j1"))
    assert taker.admit(dict(job), OWN) is None
    assert _reason(taker.admit, dict(job), OWN, pressed=True) == \
        ("already_run", "job j1 ran before: announce the release again to retry")
    running = trigger.parse(payload(id="other"))
    assert taker.admit(dict(job), OWN, running=running, pressed=True) is None  # the busy job says enough
    queued = trigger.parse(payload(id="q1"))
    assert taker.admit(trigger.parse(payload(id="q1")), OWN, queued=queued) is None  # queued redelivery
    assert _reason(taker.admit, trigger.parse(payload(id="q1")), OWN, queued=queued, pressed=True)[0] == \
        "already_run"


def test_busy_while_running_or_queued_and_free_otherwise(taker):
    running = trigger.parse(payload(id="r1"))
    for kw in ({"running": running}, {"queued": running}, {"running": running, "queued": running}):
        assert _reason(taker.take, ROOT, payload(id="j2"), **kw) == ("busy", "refused j2")
    assert taker.take(ROOT, payload(id="j2"))["id"] == "j2"


def test_too_long_says_the_size_and_the_limit(capsys):
    error = intake.too_long(2000)
    assert (error.reason, error.detail) == ("too_long", "2000 bytes > %d" % trigger.MAX_PAYLOAD)
    assert "too_long: 2000 bytes" in capsys.readouterr().out
