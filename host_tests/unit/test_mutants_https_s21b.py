"""ota.https: an error status names the host and path it came from but never the query, which is
where a signed URL carries its token (the detail goes on the state topic and into the console log).
The session 21 survivors that cut the path at whitespace or at "XX?XX" kept the query."""
import pytest

import fakes  # noqa: F401  (puts lib/ on sys.path)
from ota import https
from ota.errors import OtaError
from test_mutants_https import FakeContext, answer_in_turn, net  # noqa: F401  (net: the fixture)


@pytest.mark.parametrize("status", [403, 404])
def test_an_error_status_quotes_the_path_without_its_query(net, status):  # noqa: F811
    net.reply = b"HTTP/1.1 %d No\r\n\r\n" % status
    with pytest.raises(OtaError) as e:
        https.open("https://fw.example/a/fw.bin?token=secret&x=y", tls_context=FakeContext())
    assert e.value.reason == "http_%d" % status
    assert e.value.detail == "fw.example/a/fw.bin"


def test_an_error_status_after_a_redirect_quotes_the_last_path_without_its_query(net):  # noqa: F811
    replies = [b"HTTP/1.1 302 Found\r\nLocation: https://b.example/z?sig=abc\r\n\r\n",
               b"HTTP/1.1 404 No\r\n\r\n"]
    answer_in_turn(net, replies)
    with pytest.raises(OtaError) as e:
        https.open("https://a.example/x", tls_context=FakeContext())
    assert (e.value.reason, e.value.detail) == ("http_404", "b.example/z")
