# workspace.Workspace (issue 13, third pass): the update's buffer, taken at start-up, and its
# SSLContext, made once the radio is on, lent to every update. What must hold: an update with a
# workspace makes no buffer and no context of its own and gives the workspace's context to every
# connection (resumes too); a buffer full of an earlier update's bytes changes nothing in what is
# written; whatever the workspace lacks, the update makes as before (with the same errors); a
# workspace never raises.
import ssl

import pytest

import fakes
from ota import update, workspace
from ota.errors import OtaError

SLOT = 0x40000
URL = "https://fw.example/fw.bin"
OTA = {"ca_path": "ca.der", "chunk_size": 4096}
FAST = {"retry_backoff_ms": 0, "progress_bytes": 8192}


def make_image(version, size=48000):
    from devkit.images import build_image

    return build_image(version, size=size)


class ContextHttps:
    # ota.https's context(), counted; made: the ca_path of every context made.
    def __init__(self, error=None):
        self.made = []
        self.error = error

    def context(self, ca_path):
        self.made.append(ca_path)
        if self.error is not None:
            raise self.error
        return "ctx#%d(%s)" % (len(self.made), ca_path)


class Server(fakes.FakeServer, ContextHttps):
    def __init__(self, content, plans=(), error=None):
        fakes.FakeServer.__init__(self, content, plans)
        ContextHttps.__init__(self, error)


def ready(ota, https):
    # A workspace as the agent has it once Wi-Fi is up.
    ws = workspace.Workspace(ota)
    ws.make_context(https)
    return ws


def run(server, ws, esp=None, **config):
    esp = esp or fakes.make_device(SLOT)
    cfg = dict(FAST, **config)
    result = update.run(URL, config=cfg, https=server, esp32=esp, running="1.0.0",
                        running_project="micropython", sha256=fakes_sha(server.content), workspace=ws)
    return result, esp


def fakes_sha(data):
    import hashlib

    return hashlib.sha256(data).hexdigest()


def test_a_workspace_holds_a_buffer_of_the_chunk_size_and_one_context():
    https = ContextHttps()
    ws = workspace.Workspace({"ca_path": "my.der", "chunk_size": 8192})
    assert isinstance(ws.buf, bytearray) and len(ws.buf) == 8192
    assert ws.tls_context is None and https.made == []  # not before the radio is on
    ws.make_context(https)
    ws.make_context(https)  # once per boot
    assert ws.tls_context == "ctx#1(my.der)" and https.made == ["my.der"] and ws.problem is None
    assert ws.buffer(8192) is ws.buf
    assert ws.buffer(4096) is None  # another chunk size: the update makes its own


def test_without_a_ca_the_workspace_keeps_its_buffer_says_why_and_does_not_raise(capsys):
    error = OtaError("tls_failed", "cannot read CA file ca.der: [Errno 2] ENOENT")
    https = ContextHttps(error)
    ws = ready(OTA, https)
    ws.make_context(https)  # tried once: the file does not appear before the next boot
    assert https.made == ["ca.der"] and ws.tls_context is None and ws.problem is error and len(ws.buf) == 4096
    assert capsys.readouterr().out == ("agent: update workspace incomplete (tls_failed: cannot read CA file "
                                       "ca.der: [Errno 2] ENOENT): the update makes its own\n")


def test_no_room_for_the_context_or_the_buffer_is_no_exception():
    ws = ready(OTA, ContextHttps(MemoryError()))
    assert ws.tls_context is None and ws.problem == "MemoryError" and len(ws.buf) == 4096
    ws = ready({"ca_path": "ca.der", "chunk_size": 1 << 62}, ContextHttps())
    assert ws.buf is None and ws.problem == "MemoryError" and ws.tls_context == "ctx#1(ca.der)"
    assert ws.buffer(1 << 62) is None


def test_the_real_context_requires_the_servers_certificate(tmp_path):
    from devkit.tls import make_pki

    pki = make_pki(str(tmp_path / "pki"))
    ws = ready({"ca_path": pki.ca_der, "chunk_size": 4096}, None)  # the real ota.https
    assert isinstance(ws.tls_context, ssl.SSLContext) and ws.tls_context.verify_mode == ssl.CERT_REQUIRED
    missing = ready({"ca_path": str(tmp_path / "none.der"), "chunk_size": 4096}, None)
    assert missing.tls_context is None and missing.problem.reason == "tls_failed"


def test_an_update_with_a_workspace_makes_no_context_and_gives_every_connection_the_workspaces():
    img = make_image("1.1.0")
    https = ContextHttps()
    ws = ready(OTA, https)
    # the first connection breaks: the resume must get the same context
    server = Server(img, plans=[{"drop_after": 20000}])
    result, esp = run(server, ws)
    assert result["result"] == "ok" and bytes(esp.slots["ota_1"].data[:len(img)]) == img
    assert server.made == [] and https.made == ["ca.der"]
    assert [o[2]["tls_context"] for o in server.opens] == ["ctx#1(ca.der)", "ctx#1(ca.der)"]
    assert [o[1] for o in server.opens] == [0, 20000]


def test_the_update_writes_into_the_workspaces_buffer(monkeypatch):
    seen = []
    real = update.SlotWriter

    def spy(target, buf, running_info):
        seen.append(buf)
        return real(target, buf, running_info)

    monkeypatch.setattr(update, "SlotWriter", spy)
    ws = ready(OTA, ContextHttps())
    run(Server(make_image("1.1.0")), ws)
    assert len(seen) == 1 and seen[0] is ws.buf


def test_an_earlier_updates_bytes_in_the_buffer_change_nothing_that_is_written():
    # The second image is shorter and its last block is partial: whatever the first update left in
    # the buffer must not reach the flash (the padding is 0xFF, the read-back reads the flash).
    ws = ready(OTA, ContextHttps())
    first, second = make_image("1.1.0", size=60000), make_image("1.2.0", size=30016)
    run(Server(first), ws)
    assert any(ws.buf)  # the first update's bytes are still there
    result, esp = run(Server(second), ws)
    slot = esp.slots["ota_1"]
    end = (len(second) + 4095) // 4096 * 4096
    assert result["result"] == "ok" and result["sha256"] == fakes_sha(second)
    assert bytes(slot.data[:len(second)]) == second
    assert bytes(slot.data[len(second):end]) == b"\xff" * (end - len(second))
    assert fakes.image_is_valid(bytes(slot.data[:len(second)]))


def test_what_the_workspace_lacks_the_update_makes_itself_with_its_errors():
    img = make_image("1.1.0")
    lacking = ready(OTA, ContextHttps(OtaError("tls_failed", "bad CA file ca.der: x")))
    server = Server(img)
    result, _ = run(server, lacking, ca_path="other.der")
    assert result["result"] == "ok" and server.made == ["other.der"]
    assert [o[2]["tls_context"] for o in server.opens] == ["ctx#1(other.der)"]
    failing = Server(img, error=OtaError("tls_failed", "cannot read CA file other.der: gone"))
    esp = fakes.make_device(SLOT)
    with pytest.raises(OtaError) as e:
        run(failing, lacking, esp=esp, ca_path="other.der")
    assert e.value.reason == "tls_failed" and failing.opens == []
    assert esp.boot == "ota_0" and esp.slots["ota_1"].set_boot_calls == 0


def test_a_workspace_for_another_chunk_size_lends_its_context_not_its_buffer(monkeypatch):
    seen = []
    real = update.SlotWriter
    monkeypatch.setattr(update, "SlotWriter", lambda t, buf, i: seen.append(buf) or real(t, buf, i))
    ws = ready(OTA, ContextHttps())
    server = Server(make_image("1.1.0"))
    result, _ = run(server, ws, chunk_size=8192)
    assert result["result"] == "ok" and len(seen[0]) == 8192 and seen[0] is not ws.buf
    assert server.made == [] and server.opens[0][2]["tls_context"] == "ctx#1(ca.der)"


def test_any_url_gets_the_workspaces_context_and_only_an_https_one_makes_its_own():
    # An http URL may redirect to https: the workspace's context goes along (https.open uses it
    # only on https hops). Without one, a context is made for an https URL, the scheme in any case.
    def contexts(url, ws):
        server, esp = Server(make_image("1.1.0")), fakes.make_device(SLOT)
        result = update_run(url, server, esp, ws)
        assert result["result"] == "ok"
        return server.made, [o[2]["tls_context"] for o in server.opens]

    def update_run(url, server, esp, ws):
        return update.run(url, config=dict(FAST, allow_http=True), https=server, esp32=esp, running="1.0.0",
                          running_project="micropython", workspace=ws)

    ws = ready(OTA, ContextHttps())
    assert contexts("http://fw.example/fw.bin", ws) == ([], ["ctx#1(ca.der)"])
    bare = workspace.Workspace(OTA)  # the radio never came up: no context yet
    assert contexts("http://fw.example/fw.bin", bare) == ([], [None])
    assert contexts("HTTPS://fw.example/fw.bin", bare) == (["ca.der"], ["ctx#1(ca.der)"])
    assert contexts("HTTPS://fw.example/fw.bin", ws) == ([], ["ctx#1(ca.der)"])


@pytest.mark.parametrize("drop_at", [None, 3000])
@pytest.mark.parametrize("hashed", [False, True])
def test_a_compressed_update_through_a_workspace_full_of_old_bytes(monkeypatch, drop_at, hashed):
    # The compressed path (inflate.Loader) decodes into the workspace's buffer too: a buffer full of
    # 0xA5 from an earlier job changes nothing written, and every connection, the resume included,
    # gets the workspace's context.
    import sys

    import fake_deflate
    from otactl import zimage
    from test_mutants_inflate import artifact

    monkeypatch.setitem(sys.modules, "deflate", fake_deflate)
    img = make_image("1.1.0")
    blob = zimage.pack_image(img, piece_log2=14)
    ws = ready(OTA, ContextHttps())
    ws.buf[:] = b"\xa5" * len(ws.buf)
    server = Server(blob, plans=[{"drop_after": drop_at}] if drop_at else [])
    esp = fakes.make_device(SLOT)
    art = artifact(file_sha256=fakes_sha(blob), file_size=len(blob)) if hashed else artifact()
    result = update.run("https://fw.example/fw.otaz", config=dict(FAST), https=server, esp32=esp,
                        running="1.0.0", running_project="micropython", artifact=art, sha256=fakes_sha(img),
                        size=len(img), workspace=ws)
    assert result["result"] == "ok" and bytes(esp.slots["ota_1"].data[:len(img)]) == img
    assert server.made == [] and len(server.opens) == (2 if drop_at else 1)
    assert all(o[2]["tls_context"] == "ctx#1(ca.der)" for o in server.opens)
