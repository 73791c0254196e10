"""Replay protection of signed triggers (lib/ota/replay.py, signature.check, the agent's intake and
policy step): a signed trigger runs only if its signed seq is above the highest the device accepted
from that key, persisted across resets and power cuts; nothing unauthenticated touches that number or
the job ids a signed trigger is judged by. CPython, the real agent with fake MQTT and flash
(test_agent_unit's fixtures); on MicroPython the same is in test_e2e_signed.py.
"""
import json
import os

import pytest

from ota import replay, signature, state
import test_agent_unit
from test_agent_unit import OTHER_KEY, PUB, Reset, Updater, connected, deliver, signed

# test_agent_unit's fixture (the real agent on fake MQTT and flash), found by pytest under this name.
env = test_agent_unit.env

NOW = 1767225600


def policy_refused(n, **fields):
    # Signed-looking, refused for policy before its signature is looked at: no sha256 on a device that
    # requires one. Anyone on the broker can send it.
    message = {"type": "ota_trigger", "url": "https://fw.example.com/x.bin", "id": "bogus-%d" % n,
               "signature": "00" * 64, "expires": NOW + 600, "seq": 2 ** 52}
    message.update(fields)
    return message


@pytest.fixture
def clock(monkeypatch):
    now = {"t": NOW}
    monkeypatch.setattr(state, "unix_time", lambda: now["t"])
    return now


def _agent(env, up, **ota):
    a = env.make(up, ota=dict({"require_signature": True, "signing_pubkey": PUB, "require_sha256": True},
                              **ota))
    connected(a)
    return a


def _run(a, message):
    deliver(a, message)
    if a.pending is None:
        return "dropped"
    try:
        a.run_pending()
    except Reset:
        return "ran"
    return a.link.client.states()[-1].get("reason")


def test_a_captured_trigger_never_runs_twice_after_any_number_of_bogus_ones(env, clock):
    up = Updater()
    captured = signed(id="job-1", now=NOW)
    assert _run(_agent(env, up), captured) == "ran"
    a = _agent(env, up)  # the reboot into the new image
    for n in range(40):  # more than the 16 ids the device used to remember
        assert _run(a, policy_refused(n)) == "sha256_required"
        assert _run(a, dict(signed(key=OTHER_KEY, id="other-%d" % n, now=NOW))) == "bad_signature"
    assert _run(a, captured) == "replayed"
    assert _run(_agent(env, up), captured) == "replayed"  # and after another reset
    assert len(up.calls) == 1


def test_an_unauthenticated_trigger_cannot_block_a_future_job_id(env, clock):
    up = Updater()
    a = _agent(env, up)
    assert _run(a, policy_refused(0, id="job-9")) == "sha256_required"
    assert _run(a, dict(policy_refused(1, id="job-9"), url="http://fw.example.com/x.bin",
                        sha256="ab" * 32)) == "http_not_allowed"
    assert _run(a, signed(id="job-9", now=NOW)) == "ran"


def test_a_clock_set_back_does_not_revive_an_expired_trigger(env, clock):
    up = Updater()
    first = signed(id="job-1", now=NOW, expires_in=600)
    assert _run(_agent(env, up), first) == "ran"
    clock["t"] = NOW + 3600  # first has expired; the operator's next job runs
    assert _run(_agent(env, up), signed(id="job-2", now=NOW + 3600)) == "ran"
    clock["t"] = NOW + 60  # a forged NTP answer puts the clock back within first's validity
    a = _agent(env, up)
    for n in range(20):
        _run(a, policy_refused(n))
    assert _run(a, first) == "replayed"
    assert len(up.calls) == 2


def test_only_a_verified_trigger_moves_the_sequence(tmp_path):
    store = replay.Replay(str(tmp_path / "seq.json"))
    keys = signature.public_keys({"signing_pubkey": PUB})
    policy = {"require_signature": True}
    good = signed(now=NOW)
    forged = signed(key=OTHER_KEY, now=NOW, seq=good["seq"] + 10)
    with pytest.raises(Exception):
        signature.check(forged, policy, "a0b1c2d3e4f5", NOW + 1, store, keys)
    assert store.highest(replay.key_id(keys[0])) == 0 and not os.path.exists(store.path)
    assert signature.check(good, policy, "a0b1c2d3e4f5", NOW + 1, store, keys) is True
    assert replay.Replay(store.path).highest(replay.key_id(keys[0])) == good["seq"]


def test_the_sequence_file_survives_a_power_cut_at_every_step(tmp_path):
    path = str(tmp_path / "ota_seq.json")
    store = replay.Replay(path)
    store.accept("k1", 100)
    store.accept("k2", 7)
    assert replay.Replay(path).seqs == {"k1": 100, "k2": 7}
    # Cut while the next map was being written: a torn .tmp, the old map intact.
    with open(path + ".tmp", "w") as f:
        f.write('{"k1": 2')
    assert replay.Replay(path).highest("k1") == 100
    # Cut between FAT's remove and rename: only the .tmp holds the new map.
    with open(path + ".tmp", "w") as f:
        json.dump({"k1": 200, "k2": 7}, f)
    os.remove(path)
    assert replay.Replay(path).seqs == {"k1": 200, "k2": 7}
    # Cut after the .tmp was complete but before the rename: the higher of the two wins.
    with open(path, "w") as f:
        json.dump({"k1": 200, "k2": 7}, f)
    with open(path + ".tmp", "w") as f:
        json.dump({"k1": 300, "k2": 7}, f)
    assert replay.Replay(path).highest("k1") == 300
    # Junk of any shape reads as nothing accepted, never as an exception.
    for junk in ('[1, 2]', '{"k1": "9"}', '{"k1": true}', '{"k1": -5}', "\xff"):
        with open(path, "w") as f:
            f.write(junk)
        os.remove(path + ".tmp") if os.path.exists(path + ".tmp") else None
        assert replay.Replay(path).highest("k1") == 0


def test_otactl_assigns_a_rising_seq():
    from otactl import signing

    seqs = [signing.sign_trigger({"type": "ota_revert", "id": "r"}, signing.generate_key(), now=NOW)["seq"]
            for _ in range(3)]
    assert seqs[0] >= NOW * 1000 and seqs[0] < seqs[1] < seqs[2]


def test_a_second_power_cut_after_fats_remove_loses_nothing(tmp_path):
    # Review: a cut between FAT's remove and rename leaves PATH.tmp the only copy. The next accept()
    # opened PATH.tmp for writing (truncating that copy) and a second cut there read back as {}:
    # every captured, unexpired trigger would replay. The store now makes PATH.tmp PATH again first.
    path = str(tmp_path / "ota_seq.json")
    with open(path + ".tmp", "w") as f:
        json.dump({"k1": 200}, f)
    store = replay.Replay(path)
    assert store.highest("k1") == 200 and os.path.exists(path)
    with open(path + ".tmp", "w") as f:  # the second cut: the next write torn at its first byte
        f.write("")
    assert replay.Replay(path).highest("k1") == 200
