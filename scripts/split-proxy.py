#!/usr/bin/env python3
"""A tiny HTTP/1.1 reverse proxy that splits writes from everything else:
"load balancer mode" for a test, where a client that knows one URL writes
through one front door and reads through another.

    split-proxy.py [--listen HOST:PORT] [--port-file FILE] WRITE_URL READ_URL

POST /write and POST /api/v2/write (what a front door replicates) go to
WRITE_URL; every other request goes to READ_URL. The request target is
forwarded byte for byte as the client sent it (no re-encoding: a request
line the proxy can split on spaces reaches the upstream unchanged), headers
are kept except the hop-by-hop ones, and request and response bodies are
buffered (a chunked body is forwarded de-chunked, with Content-Length). One
upstream connection per request. For tests on loopback only: no TLS, no
limits beyond Python's own, no streaming.
"""

import argparse
import http.client
import http.server
import os
import socket
import sys
import urllib.parse

HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-connection", "proxy-authenticate",
    "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade",
    "expect", "content-length", "host",
}
WRITE_PATHS = {b"/write", b"/api/v2/write"}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes
    write_to = read_to = None  # (host, port), set in main()

    def parse_request(self):
        # Python splits the request line on any Unicode whitespace (which in
        # latin-1 includes bytes 0x85 and 0xa0 of UTF-8 text) and decodes it;
        # keep the raw target and let the base class parse the rest.
        words = self.raw_requestline.rstrip(b"\r\n").split(b" ")
        self.raw_target = words[1] if len(words) == 3 else None
        if self.raw_target is not None:
            self.raw_requestline = b" ".join((words[0], b"/", words[2])) + b"\r\n"
        ok = super().parse_request()
        if ok and self.raw_target is not None:
            self.path = self.raw_target.decode("latin-1")
        elif ok:
            self.raw_target = self.path.encode("latin-1")
        return ok

    def do_request(self):
        body = self.read_body()
        path = self.raw_target.split(b"?", 1)[0]
        host, port = self.write_to if (self.command == "POST" and path in WRITE_PATHS) else self.read_to
        head = [b"%s %s HTTP/1.1" % (self.command.encode("latin-1"), self.raw_target),
                b"Host: %s:%d" % (host.encode(), port), b"Connection: close"]
        for k, v in self.headers.items():
            if k.lower() not in HOP_BY_HOP:
                head.append(("%s: %s" % (k, v)).encode("latin-1"))
        if body or self.command in ("POST", "PUT", "PATCH"):
            head.append(b"Content-Length: %d" % len(body))
        try:
            with socket.create_connection((host, port), timeout=300) as s:
                s.sendall(b"\r\n".join(head) + b"\r\n\r\n" + body)
                resp = http.client.HTTPResponse(s, method=self.command)
                resp.begin()
                data = resp.read()
        except (OSError, http.client.HTTPException) as e:
            self.send_error(502, "upstream %s:%d: %s" % (host, port, e))
            return
        self.send_response_only(resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() not in HOP_BY_HOP:
                self.send_header(k, v)
        no_body = self.command == "HEAD" or resp.status in (204, 304) or resp.status < 200
        if self.command == "HEAD" and resp.getheader("Content-Length") is not None:
            self.send_header("Content-Length", resp.getheader("Content-Length"))
        elif not no_body:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if not no_body:
            self.wfile.write(data)

    def read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_OPTIONS = do_PATCH = do_request

    def log_message(self, fmt, *args):
        sys.stderr.write("%s\n" % (fmt % args))


def host_port(url):
    u = urllib.parse.urlsplit(url)
    return u.hostname, u.port or 80


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--listen", default="127.0.0.1:0")
    p.add_argument("--port-file", help="write the port listened on here")
    p.add_argument("write_url")
    p.add_argument("read_url")
    a = p.parse_args()
    Handler.write_to, Handler.read_to = host_port(a.write_url), host_port(a.read_url)
    host, port = a.listen.rsplit(":", 1)
    srv = http.server.ThreadingHTTPServer((host, int(port)), Handler)
    port = srv.server_address[1]
    print("split-proxy on %s:%d: writes to %s, the rest to %s" % (host, port, a.write_url, a.read_url),
          file=sys.stderr, flush=True)
    if a.port_file:
        with open(a.port_file + ".tmp", "w") as f:
            f.write("%d\n" % port)
        os.replace(a.port_file + ".tmp", a.port_file)
    srv.serve_forever()


if __name__ == "__main__":
    main()
