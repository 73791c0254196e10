# A real nginx serving a directory over HTTPS (and plain HTTP), for end-to-end downloads: the
# device must work against the server people actually deploy, not only against our dev server.
#
#   with Nginx(root, pki.server_cert, pki.server_key) as web:
#       web.url("fw.bin")              https://localhost:PORT/fw.bin
#       web.url("fw.bin", host="127.0.0.1"), web.http_url("fw.bin")
#
# Everything nginx writes (config, pid, logs, temp dirs) lives in a private temp dir; it runs in the
# foreground as our child and is stopped on exit. Range requests work out of the box for static
# files. Fixed routes for the redirect and error tests (see _LOCATIONS):
#   /redirect/two   302 -> /redirect/one -> 301 /<target>     (a chain of 2)
#   /redirect/loop  302 -> itself                               (too_many_redirects)
#   /redirect/http  302 -> http://localhost:HTTP_PORT/<target>  (insecure_redirect)
#   /redirect/other 302 -> https://127.0.0.1:PORT/<target>      (another host name, same server)
#   /status/404, /status/500
# `target` is the file name the redirects lead to (default "firmware.bin").
import os
import shutil
import subprocess
import tempfile
import time

# free_port: bind port 0, read the port the kernel chose, release it (a tiny race we accept).
from devkit.broker import accepts, free_port  # free_port: tests import it from here too

_CONFIG = """
worker_processes 1;
{user}
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log {tmp}/access.log;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    default_type application/octet-stream;
    sendfile on;
    server {{
        listen 127.0.0.1:{port} ssl;
        server_name localhost 127.0.0.1;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        root {root};
{rate}
{locations}
    }}
    server {{
        listen 127.0.0.1:{http_port};
        server_name localhost 127.0.0.1;
        root {root};
    }}
}}
"""

_LOCATIONS = """
        location = /redirect/two {{ return 302 /redirect/one; }}
        location = /redirect/one {{ return 301 /{target}; }}
        location = /redirect/loop {{ return 302 /redirect/loop; }}
        location = /redirect/http {{ return 302 http://localhost:{http_port}/{target}; }}
        location = /redirect/other {{ return 302 https://127.0.0.1:{port}/{target}; }}
        location = /status/404 {{ return 404; }}
        location = /status/500 {{ return 500; }}
"""


def find_nginx():
    """Path of the nginx binary, or None."""
    if os.access("/usr/sbin/nginx", os.X_OK):
        return "/usr/sbin/nginx"
    return shutil.which("nginx")


class Nginx:
    def __init__(self, root, certfile, keyfile, target="firmware.bin", limit_rate=None):
        self.binary = find_nginx()
        if self.binary is None:
            import pytest

            pytest.skip("nginx is not installed")
        self.root = os.path.abspath(str(root))
        self.certfile = os.path.abspath(str(certfile))
        self.keyfile = os.path.abspath(str(keyfile))
        self.target = target
        self.limit_rate = limit_rate  # bytes/s per connection (nginx limit_rate), e.g. a slow link
        self.tmp = None
        self.process = None

    def url(self, path="", host="localhost"):
        return "https://%s:%d/%s" % (host, self.port, path.lstrip("/"))

    def http_url(self, path="", host="localhost"):
        return "http://%s:%d/%s" % (host, self.http_port, path.lstrip("/"))

    def start(self):
        self.tmp = tempfile.mkdtemp(prefix="ota-nginx-")
        self.port, self.http_port = free_port(), free_port()
        values = dict(tmp=self.tmp, port=self.port, http_port=self.http_port, root=self.root,
                      cert=self.certfile, key=self.keyfile, target=self.target)
        # As root, nginx's workers drop to "nobody", who cannot read a private pytest tmp dir.
        values["user"] = "user root;" if os.geteuid() == 0 else ""
        values["locations"] = _LOCATIONS.format(**values)
        values["rate"] = "        limit_rate %d;" % self.limit_rate if self.limit_rate else ""
        conf = os.path.join(self.tmp, "nginx.conf")
        with open(conf, "w") as f:
            f.write(_CONFIG.format(**values))
        self.process = subprocess.Popen(
            [self.binary, "-p", self.tmp, "-c", conf, "-e", os.path.join(self.tmp, "error.log"),
             "-g", "daemon off;"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        self._wait_ready()
        return self

    def _wait_ready(self):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode(errors="replace")
                raise RuntimeError("nginx exited: " + err + self.error_log())
            if accepts("127.0.0.1", self.port) and accepts("127.0.0.1", self.http_port):
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("nginx did not start listening: " + self.error_log())

    def error_log(self):
        try:
            with open(os.path.join(self.tmp, "error.log")) as f:
                return f.read()
        except OSError:
            return ""

    def stop(self):
        if self.process is not None:
            self.process.terminate()  # SIGTERM: fast shutdown of master and worker
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process.stderr.close()
            self.process = None
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
