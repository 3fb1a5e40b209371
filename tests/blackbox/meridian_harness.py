"""Black-box harness: start the real `meridian` binary, real nginx and small
fault backends on free loopback ports, and talk to them as a client would.

Everything here is stdlib only. Every process is started in its own process
group and registered in ACTIVE so that conftest.py can print its log when a
test fails and kill the whole group when the test (or module) is over.
"""

import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

# Processes started and not yet finalised; conftest prints their logs on failure.
ACTIVE = []

SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                     "runtime error:", "SUMMARY: UndefinedBehaviorSanitizer")


def meridian_bin():
    """The binary under test: $MERIDIAN_BIN, else <repo>/build/meridian."""
    return os.environ.get("MERIDIAN_BIN") or str(REPO / "build" / "meridian")


# ---------------------------------------------------------------- utilities

def _listen_port_range():
    """Ports below the kernel's ephemeral range: an outgoing connection takes
    its local port from that range, so it could take a port picked there
    before the test's process binds it (seen as "Address already in use")."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return 10000, max(10001, low - 1)


# Ports this test process has handed out. A port handed out for something
# that never listens (a dead backend) is free again at once; without this
# record a later call could hand it out again as a listen port (a clean CI
# run failed so: a node's peer port was the test's dead backend's).
_HANDED_OUT = set()


def free_ports(n=1):
    """n distinct loopback ports that were free a moment ago (bound, closed),
    chosen at random below the ephemeral range and never handed out before
    by this process (until half the range has been)."""
    lo, hi = _listen_port_range()
    if len(_HANDED_OUT) + n > (hi - lo) // 2:
        _HANDED_OUT.clear()
    rng = random.SystemRandom()
    ports, socks = [], []
    try:
        while len(ports) < n:
            port = rng.randint(lo, hi)
            if port in ports or port in _HANDED_OUT:
                continue
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                s.close()
                continue
            socks.append(s)
            ports.append(port)
        _HANDED_OUT.update(ports)
        return ports
    finally:
        for s in socks:
            s.close()


def free_port():
    return free_ports(1)[0]


def poll(fn, timeout=10.0, interval=0.02, what="condition"):
    """Calls fn until it returns something truthy; returns it. Fails after timeout."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            v = fn()
            if v:
                return v
        except Exception as e:  # the condition may raise until it holds
            last_exc = e
        if time.monotonic() > deadline:
            msg = f"timed out after {timeout}s waiting for {what}"
            if last_exc is not None:
                msg += f" (last error: {last_exc!r})"
            raise AssertionError(msg)
        time.sleep(interval)


def connect_refused(port):
    """True when a TCP connect to the port is refused (nothing accepting)."""
    s = socket.socket()
    s.settimeout(1.0)
    try:
        s.connect(("127.0.0.1", port))
        return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    finally:
        s.close()


def tail(path, limit=20000):
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        return f"<cannot read {path}: {e}>"
    text = data[-limit:].decode("utf-8", "replace")
    return ("...\n" if len(data) > limit else "") + text


def kill_group(proc, sig=signal.SIGKILL):
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


# ---------------------------------------------------------------- HTTP client

def nginx_conf_head(b, access_log="off"):
    """The opening of a test nginx's config: foreground, one worker, every
    temporary path under `b`; the caller continues inside `http {`."""
    return f"""
daemon off;
master_process off;
worker_processes 1;
pid {b}/nginx.pid;
error_log {b}/nginx-error.log info;
events {{ worker_connections 1024; }}
http {{
  access_log {access_log};
  client_body_temp_path {b}/www/tmp;
  proxy_temp_path {b}/tmp/proxy;
  fastcgi_temp_path {b}/tmp/fastcgi;
  uwsgi_temp_path {b}/tmp/uwsgi;
  scgi_temp_path {b}/tmp/scgi;"""


class Resp:
    def __init__(self, status, reason, version, headers, body, raw_head=b""):
        self.status = status
        self.reason = reason
        self.version = version
        self.headers = headers          # list of (name, value) as received
        self.body = body
        self.raw_head = raw_head

    def header(self, name, default=None):
        """Last value of header `name` (case-insensitive)."""
        name = name.lower()
        v = default
        for k, val in self.headers:
            if k.lower() == name:
                v = val
        return v

    def header_all(self, name):
        name = name.lower()
        return [val for k, val in self.headers if k.lower() == name]

    def has_header(self, name):
        return any(k.lower() == name.lower() for k, _ in self.headers)

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError as e:
            raise AssertionError(f"body is not JSON ({e}): {self.body[:500]!r}")

    def __repr__(self):
        return (f"<Resp {self.status} {self.reason!r} headers={self.headers!r} "
                f"body={self.body[:300]!r}{'...' if len(self.body) > 300 else ''}>")


def request(port, method, path, body=None, headers=None, timeout=10.0, host="127.0.0.1"):
    """One request on a fresh connection with http.client; returns Resp."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        return Resp(r.status, r.reason, r.version, list(r.getheaders()), data)
    finally:
        conn.close()


class RawConn:
    """A plain socket with a buffered HTTP/1.x response reader, for the tests
    that need control over the bytes (pipelining, chunking, garbage, timing)."""

    def __init__(self, port, timeout=10.0, host="127.0.0.1"):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def settimeout(self, t):
        self.sock.settimeout(t)

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("connection closed by peer")
        self.buf += data

    def read_until(self, delim):
        while True:
            i = self.buf.find(delim)
            if i >= 0:
                out, self.buf = self.buf[:i + len(delim)], self.buf[i + len(delim):]
                return out
            self._fill()

    def read_exact(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_to_eof(self):
        while True:
            try:
                self._fill()
            except EOFError:
                break
        out, self.buf = self.buf, b""
        return out

    def read_head(self):
        head = self.read_until(b"\r\n\r\n")
        lines = head[:-4].split(b"\r\n")
        m = re.match(rb"(HTTP/\d\.\d) (\d{3})(?: (.*))?$", lines[0])
        if not m:
            raise AssertionError(f"bad status line: {lines[0]!r} (head {head!r})")
        headers = []
        for line in lines[1:]:
            k, _, v = line.partition(b":")
            headers.append((k.decode("latin-1"), v.strip().decode("latin-1")))
        return m.group(1).decode(), int(m.group(2)), (m.group(3) or b"").decode("latin-1"), headers, head

    def read_response(self, method="GET", interim=False):
        """Reads one response. 1xx answers are skipped unless interim=True,
        in which case a 1xx is returned as its own (bodiless) Resp."""
        while True:
            version, status, reason, headers, head = self.read_head()
            r = Resp(status, reason, version, headers, b"", head)
            if 100 <= status < 200:
                if interim or status == 101:
                    return r
                continue
            break
        if method == "HEAD" or status in (204, 304):
            return r
        te = (r.header("transfer-encoding") or "").lower()
        if "chunked" in te:
            r.body = self.read_chunked()
        elif r.has_header("content-length"):
            r.body = self.read_exact(int(r.header("content-length")))
        else:
            r.body = self.read_to_eof()
        return r

    def read_chunked(self):
        body = b""
        while True:
            line = self.read_until(b"\r\n")
            size = int(line.split(b";")[0].strip(), 16)
            if size == 0:
                while self.read_until(b"\r\n") != b"\r\n":
                    pass  # trailers
                return body
            body += self.read_exact(size)
            if self.read_exact(2) != b"\r\n":
                raise AssertionError("chunk not followed by CRLF")

    def wait_closed(self, timeout):
        """True if the peer closes (EOF or reset) within timeout; data that
        arrives meanwhile is kept in self.buf."""
        deadline = time.monotonic() + timeout
        old = self.sock.gettimeout()
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.sock.settimeout(left)
                try:
                    data = self.sock.recv(65536)
                except socket.timeout:
                    return False
                except (ConnectionResetError, BrokenPipeError):
                    return True
                if not data:
                    return True
                self.buf += data
        finally:
            self.sock.settimeout(old)


def get_req(path, host="test.local", extra=""):
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode()


def chunked(body, sizes=None):
    """Chunked transfer coding of body, in chunks of the given (cycled) sizes."""
    sizes = sizes or [1, 7, 100, 4096, 3]
    out, i, k = [], 0, 0
    while i < len(body):
        n = sizes[k % len(sizes)]
        k += 1
        piece = body[i:i + n]
        i += n
        out.append(b"%x\r\n" % len(piece) + piece + b"\r\n")
    out.append(b"0\r\n\r\n")
    return b"".join(out)


# ---------------------------------------------------------------- processes

class Proc:
    """A child process in its own process group, its output in a log file."""

    label = "process"

    def __init__(self, log_path):
        self.log_path = Path(log_path)
        self.proc = None

    def spawn(self, argv, env=None):
        self.log_file = open(self.log_path, "ab")
        self.log_file.write(f"==== {time.strftime('%H:%M:%S')} start: {' '.join(argv)}\n".encode())
        self.log_file.flush()
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.log_file,
                                     stderr=self.log_file, start_new_session=True, env=env)
        if self not in ACTIVE:
            ACTIVE.append(self)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait(self, timeout):
        """Exit code, or AssertionError if still running after timeout."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.label} still running after {timeout}s")

    def kill9(self):
        kill_group(self.proc, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def log(self):
        return tail(self.log_path)

    def log_mark(self):
        """Where the log ends now: log_lines_since(mark) gives what follows."""
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def log_lines_since(self, mark):
        with open(self.log_path, "rb") as f:
            f.seek(mark)
            return f.read().decode("utf-8", "replace").splitlines()

    def finalize(self):
        if self.proc is not None and self.proc.poll() is None:
            kill_group(self.proc, signal.SIGKILL)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        elif self.proc is not None:
            kill_group(self.proc, signal.SIGKILL)  # stray children, if any
        if getattr(self, "log_file", None):
            self.log_file.close()
        if self in ACTIVE:
            ACTIVE.remove(self)


class Nginx(Proc):
    """nginx in the foreground with its own prefix: static JSON under /static/,
    header echo under /echo/, WebDAV under /dav/, chunked answers under
    /chunked/ (sub_filter drops Content-Length, so nginx chunks)."""

    label = "nginx"

    def __init__(self, base):
        self.base = Path(base)
        self.base.mkdir(parents=True, exist_ok=True)
        super().__init__(self.base / "nginx.log")
        self.port = free_port()
        self.www = self.base / "www"
        for d in ("static/n", "chunked", "dav", "orders", "tmp"):
            (self.www / d).mkdir(parents=True, exist_ok=True)
        (self.base / "tmp").mkdir(exist_ok=True)
        self._write_content()
        self._write_conf()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def _write_content(self):
        rnd = random.Random(1234)
        doc = {"id": "doc", "tenantId": "t1", "items": []}
        while len(json.dumps(doc)) < 1000:
            doc["items"].append({"sku": f"sku-{rnd.randrange(10**6)}", "qty": rnd.randrange(100)})
        self.doc_bytes = json.dumps(doc).encode()
        (self.www / "static/doc.json").write_bytes(self.doc_bytes)
        # ~3 MiB of JSON with varied content, so a proxy that buffers or
        # truncates somewhere shows up as a byte difference.
        rows = [{"n": i, "v": "%032x" % rnd.getrandbits(128)} for i in range(50000)]
        self.big_bytes = json.dumps(rows).encode()
        (self.www / "static/big.json").write_bytes(self.big_bytes)
        for i in range(100):
            (self.www / f"static/n/{i}.json").write_bytes(
                json.dumps({"n": i, "pad": "x" * (i * 37 % 1500)}).encode())
        (self.www / "orders/doc.json").write_bytes(b'{"from":"nginx-orders"}')
        small = b'{"name":"@@NAME@@","n":[1,2,3]}\n'
        (self.www / "chunked/small.json").write_bytes(small)
        big = b"".join(b'{"row":%d,"name":"@@NAME@@","pad":"%s"},\n' % (i, b"y" * (i % 200))
                       for i in range(20000))
        (self.www / "chunked/big.json").write_bytes(big)
        self.chunked_small = small.replace(b"@@NAME@@", b"meridian")
        self.chunked_big = big.replace(b"@@NAME@@", b"meridian")

    def _write_conf(self):
        b = self.base
        echo = "\n".join(
            f"      add_header X-Seen-{n} $http_{v} always;" for n, v in [
                ("XFF", "x_forwarded_for"), ("Proto", "x_forwarded_proto"), ("Via", "via"),
                ("Custom", "x_custom"), ("Secret", "x_secret"), ("Connection", "connection"),
                ("Keep-Alive", "keep_alive"), ("Proxy-Connection", "proxy_connection"),
                ("TE", "te"), ("Trailer", "trailer"), ("Upgrade", "upgrade"),
                ("Transfer-Encoding", "transfer_encoding"), ("CL", "content_length"),
                ("Host", "host"), ("Expect", "expect")]) + """
      add_header X-Seen-URI $request_uri always;
      add_header X-Seen-Method $request_method always;"""
        conf = nginx_conf_head(b, f"{b}/nginx-access.log") + f"""
  types {{ application/json json; }}
  default_type application/octet-stream;
  keepalive_requests 100000;
  server {{
    listen 127.0.0.1:{self.port};
    root {b}/www;
    location /static/ {{ }}
    location /orders/ {{ }}
    location /echo/ {{
      default_type application/json;
{echo}
      return 200 '{{"echo":true}}\\n';
    }}
    location /dav/ {{
      dav_methods PUT DELETE;
      create_full_put_path on;
      client_max_body_size 50m;
    }}
    location /chunked/ {{
      sub_filter '@@NAME@@' 'meridian';
      sub_filter_once off;
      sub_filter_types application/json;
    }}
  }}
}}
"""
        self.conf_path = b / "nginx.conf"
        self.conf_path.write_text(conf)

    def start(self):
        self.spawn([NGINX, "-p", str(self.base), "-c", str(self.conf_path),
                    "-e", str(self.base / "nginx-error.log")])
        poll(lambda: self._ready(), timeout=10, what="nginx to answer")
        return self

    def _ready(self):
        if not self.alive():
            raise AssertionError(f"nginx exited: {self.log()}\n{tail(self.base / 'nginx-error.log')}")
        return request(self.port, "GET", "/static/doc.json", timeout=2).status == 200

    def log(self):
        return super().log() + "\n--- nginx error log ---\n" + tail(self.base / "nginx-error.log")

    def stop(self):
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill9()


DEFAULT_CONTAINERS = [
    {"name": "orders", "route": "/orders/", "partition_key": "/tenantId",
     "conflict_resolution": {"mode": "last_writer_wins", "path": "/version"}},
]


def _yaml_scalar(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _yaml_flow(d):
    return "{ " + ", ".join(
        f"{k}: {_yaml_flow(v) if isinstance(v, dict) else _yaml_scalar(v)}" for k, v in d.items()) + " }"


def render_config(regions, containers=None, limits=None, proxy=None, log=None, account=None):
    """The YAML text of a Meridian configuration (block style, as users write it)."""
    account = account or {"multi_region_writes": True, "consistency": "session"}
    lines = ["account:"]
    lines += [f"  {k}: {_yaml_flow(v) if isinstance(v, dict) else _yaml_scalar(v)}"
              for k, v in account.items()]
    lines.append("regions:")
    for r in regions:
        first = True
        for k, v in r.items():
            lines.append(f"  {'- ' if first else '  '}{k}: {_yaml_scalar(v)}")
            first = False
    lines.append("containers:")
    for c in (DEFAULT_CONTAINERS if containers is None else containers):
        first = True
        for k, v in c.items():
            val = _yaml_flow(v) if isinstance(v, dict) else _yaml_scalar(v)
            lines.append(f"  {'- ' if first else '  '}{k}: {val}")
            first = False
    for section, values in (("limits", limits), ("proxy", proxy), ("log", log)):
        if values:
            lines.append(f"{section}:")
            lines += [f"  {k}: {_yaml_scalar(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


# Defaults the suite runs with: the contract's, except a short drain so a test
# that leaves a request hanging does not hold teardown for 30 s.
SUITE_LIMITS = {"drain_timeout_ms": 3000}


class Meridian(Proc):
    """One Meridian node (region `east`) on free ports, data under base/."""

    label = "meridian"

    def __init__(self, base, backend, containers=None, limits=None, proxy=None,
                 log=None, name="east"):
        self.base = Path(base)
        self.base.mkdir(parents=True, exist_ok=True)
        super().__init__(self.base / f"meridian-{name}.log")
        self.name = name
        self.label = f"meridian {name}"
        self.port, self.peer_port = free_ports(2)
        self.backend = backend
        self.data_dir = self.base / "data" / name
        lim = dict(SUITE_LIMITS)
        lim.update(limits or {})
        self.config_text = render_config(
            [{"name": name, "id": 1, "listen": f"127.0.0.1:{self.port}",
              "peer_listen": f"127.0.0.1:{self.peer_port}", "backend": backend,
              "data_dir": str(self.data_dir)}],
            containers=containers, limits=lim, proxy=proxy,
            log=log or {"level": "info", "access": False})
        self.config_path = self.base / f"meridian-{name}.yaml"
        self.config_path.write_text(self.config_text)
        self.extra_args = []

    def start(self, timeout=20.0):
        binary = meridian_bin()
        if not os.access(binary, os.X_OK):
            raise AssertionError(
                f"meridian binary not found at {binary}: build it with "
                f"`cmake -S . -B build && cmake --build build` or set MERIDIAN_BIN")
        self.spawn([binary, "--config", str(self.config_path), "--region", self.name,
                    *self.extra_args])
        poll(self._healthy, timeout=timeout, what=f"{self.label} /_meridian/health")
        return self

    def _healthy(self):
        if not self.alive():
            raise AssertionError(f"{self.label} exited with {self.proc.returncode} during "
                                 f"start-up; log:\n{self.log()}\nconfig:\n{self.config_text}")
        try:
            return request(self.port, "GET", "/_meridian/health", timeout=2).status == 200
        except OSError:
            return False

    def request(self, method, path, body=None, headers=None, timeout=10.0):
        return request(self.port, method, path, body=body, headers=headers, timeout=timeout)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def raw(self, timeout=10.0):
        return RawConn(self.port, timeout=timeout)

    def sanitizer_report(self):
        text = tail(self.log_path, 200000)
        if any(m in text for m in SANITIZER_MARKERS):
            return text
        return None

    def stop(self):
        """Graceful stop (SIGTERM; a second SIGTERM if drain takes long); SIGKILL as last resort."""
        if not self.alive():
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill9()
            return None


# ---------------------------------------------------------------- fault backends

class FaultServer:
    """A tiny threaded TCP server that misbehaves as a backend in one way:

      silent      reads the request, never answers
      close       reads the request, closes without a byte
      half_reset  sends half a status line + headers, then resets (RST)
      body_reset  sends headers with Content-Length and part of the body, then resets
      hold        answers 200 when `release` is set (or after `delay` seconds)
      ok          answers 200 at once (keep-alive)
      ok_close    answers 200 (keep-alive framing), then silently closes after 0.1 s
      raw         sends `raw` as the whole response, then closes

    `headers` adds raw header lines to the 200 answers of ok/hold/ok_close.

    `received` is set when a request has been read; `count` counts them.
    """

    def __init__(self, mode, delay=None, body=b'{"slow":true}', port=0, headers=b"", raw=b""):
        self.mode = mode
        self.headers = headers
        self.raw = raw
        self.closed_conns = 0
        self.delay = delay
        self.body = body
        self.release = threading.Event()
        self.received = threading.Event()
        self.count = 0
        self.lock = threading.Lock()
        self.conns = []
        self.closed = False
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", port))
        self.lsock.listen(128)
        self.port = self.lsock.getsockname()[1]
        self.thread = threading.Thread(target=self._accept_loop, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def _accept_loop(self):
        while not self.closed:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            with self.lock:
                self.conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _read_request(self, c, buf):
        while b"\r\n\r\n" not in buf:
            data = c.recv(65536)
            if not data:
                return None, b""
            buf += data
        head, _, rest = buf.partition(b"\r\n\r\n")
        m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        n = int(m.group(1)) if m else 0
        while len(rest) < n:
            data = c.recv(65536)
            if not data:
                return None, b""
            rest += data
        return head, rest[n:]

    @staticmethod
    def _reset(c):
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        c.close()

    def _serve(self, c):
        buf = b""
        try:
            while True:
                head, buf = self._read_request(c, buf)
                if head is None:
                    return
                with self.lock:
                    self.count += 1
                self.received.set()
                if self.mode == "silent":
                    while c.recv(65536):
                        pass
                    return
                if self.mode == "close":
                    c.close()
                    return
                if self.mode == "half_reset":
                    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Ty")
                    time.sleep(0.05)
                    self._reset(c)
                    return
                if self.mode == "body_reset":
                    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                              b"Content-Length: 100000\r\n\r\n" + b"x" * 1000)
                    time.sleep(0.2)
                    self._reset(c)
                    return
                if self.mode == "raw":
                    c.sendall(self.raw)
                    c.close()
                    return
                if self.mode == "hold":
                    self.release.wait(self.delay)
                body = self.body
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + self.headers +
                          b"Content-Length: %d\r\n\r\n" % len(body) + body)
                if self.mode == "ok_close":
                    time.sleep(0.1)
                    c.close()
                    return
        except OSError:
            return
        finally:
            with self.lock:
                self.closed_conns += 1

    def close(self):
        self.closed = True
        self.release.set()
        try:
            self.lsock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.lsock.close()
        with self.lock:
            for c in self.conns:
                try:
                    c.close()
                except OSError:
                    pass


class Blackhole:
    """A listening socket whose accept queue is full, so further connects hang
    (SYNs are dropped): a backend that times out at connect."""

    def __init__(self):
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(0)
        self.port = self.lsock.getsockname()[1]
        self.fillers = []
        for _ in range(8):
            s = socket.socket()
            s.setblocking(False)
            try:
                s.connect(("127.0.0.1", self.port))
            except BlockingIOError:
                pass
            self.fillers.append(s)
        time.sleep(0.05)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def connect_hangs(self, timeout=0.5):
        s = socket.socket()
        s.settimeout(timeout)
        try:
            s.connect(("127.0.0.1", self.port))
            return False
        except socket.timeout:
            return True
        except OSError:
            return False
        finally:
            s.close()

    def close(self):
        for s in self.fillers:
            s.close()
        self.lsock.close()


# ---------------------------------------------------------------- metrics

METRIC_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\d+)?$')
LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?')


def parse_metrics(text):
    """Prometheus text format -> list of (name, {labels}, value). Fails on a malformed line."""
    out = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        m = METRIC_LINE.match(line)
        assert m, f"malformed metrics line: {line!r}"
        labels = {}
        if m.group(3):
            pos, s = 0, m.group(3)
            while pos < len(s):
                lm = LABEL.match(s, pos)
                assert lm and lm.end() > pos, f"malformed labels in metrics line: {line!r}"
                labels[lm.group(1)] = lm.group(2)
                pos = lm.end()
        out.append((m.group(1), labels, float(m.group(4))))
    return out


def metric_sum(samples, name, **labels):
    """Sum of the samples called `name` whose labels include `labels`."""
    return sum(v for n, l, v in samples
               if n == name and all(l.get(k) == str(val) for k, val in labels.items()))


def metric_present(samples, name, **labels):
    return any(n == name and all(l.get(k) == str(val) for k, val in labels.items())
               for n, l, _ in samples)
