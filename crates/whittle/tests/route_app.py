# The route tests' app: an HTTP server that logs every request it serves with its time, turns
# healthy only HEALTHY_AFTER seconds after start, streams on /stream, and stops gracefully on
# SIGTERM (finishes what is in flight, as a real service would).
import http.server, os, signal, socket, socketserver, sys, threading, time

PORT = int(os.environ.get("PORT", "8000"))
HEALTHY_AFTER = float(os.environ.get("HEALTHY_AFTER", "0"))
GRACE = float(os.environ.get("GRACE", "1"))
START = time.time()
NAME = socket.gethostname()
LOG = open("/tmp/access.log", "a", buffering=1)
active = 0
lock = threading.Lock()


class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def reply(self, code, body):
        # One write for the whole response: a SIGKILL (`docker kill`) between the headers and
        # the body cuts a response HAProxy has begun to forward, which no router can retry;
        # killed before the first byte, it is an empty response, which HAProxy retries on
        # another server (`retry-on empty-response`). Seen once in 16k requests with two writes.
        head = "%s %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nX-Container: %s\r\n\r\n" % (
            self.protocol_version,
            code,
            self.responses[code][0],
            len(body),
            NAME,
        )
        self.wfile.write(head.encode() + body)

    def do_GET(self):
        global active
        now = time.time()
        if self.path.startswith("/health"):
            ok = now - START >= HEALTHY_AFTER
            if ok and not os.path.exists("/tmp/healthy-at"):
                with open("/tmp/healthy-at", "w") as f:
                    f.write("%.6f\n" % now)
            self.reply(200 if ok else 503, b"ok\n" if ok else b"starting\n")
            return
        LOG.write("%.6f %s\n" % (now, self.path))
        with lock:
            active += 1
        try:
            if self.path.startswith("/stream"):
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", "100")
                self.send_header("X-Container", NAME)
                self.end_headers()
                for i in range(10):
                    self.wfile.write(b"chunk%04d\n" % i)
                    self.wfile.flush()
                    time.sleep(0.5)
            else:
                self.reply(200, ("hello from %s\n" % NAME).encode())
        finally:
            with lock:
                active -= 1

    def log_message(self, *a):
        pass


class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


srv = S(("", PORT), H)


def stop():
    time.sleep(GRACE)
    deadline = time.time() + 20
    while active > 0 and time.time() < deadline:
        time.sleep(0.05)
    os._exit(0)


signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=stop).start())
print("listening on", PORT, flush=True)
srv.serve_forever()
