"""ota.intake.Intake.admit, what the session-21 run left: an unsigned duplicate is printed with its
own id (the catalogue holds "duplicate job ignored: None" from a signed duplicate without id, so it
cannot tell the id from None). CPython, a real jobs.Jobs on a temporary file."""
import json

import fakes  # noqa: F401  (puts lib/ on sys.path)
from ota import intake, jobs, trigger

DEV = "a0b1c2d3e4f5"
OWN = "/switch/cmd/" + DEV


def test_an_unsigned_duplicate_is_printed_with_its_id(tmp_path, capsys):
    taker = intake.Intake(DEV, OWN, jobs.Jobs(str(tmp_path / "ota_job.json")))
    taker.jobs.start({"id": "j-old", "type": "ota_trigger"}, "failed")
    job = trigger.parse(json.dumps({"type": "ota_trigger", "url": "https://fw.example.com/a.bin",
                                    "id": "j-old"}).encode())
    capsys.readouterr()
    assert taker.admit(job, OWN) is None
    assert "agent: duplicate job ignored: j-old\n" in capsys.readouterr().out
