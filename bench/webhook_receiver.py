#!/usr/bin/env python3
"""A webhook receiver for bench/loghook.sh: counts the JSON log records POSTed to it (one
object per request, or an array per batch) by type, and the requests ("posts"); GET / answers the counts."""
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

counts = {}
TYPES = [b"Reception", b"Delivery", b"Bounce", b"TransientFailure", b"Expiration", b"Feedback", b"AdminBounce"]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        counts["posts"] = counts.get("posts", 0) + 1
        # counted by the serialized type field, not parsed: on this 2-core bench host the
        # receiver's CPU is taken from the MTA, and a real receiver runs elsewhere (the
        # tests parse every record; tests/log_hooks.rs)
        for kind in TYPES:
            n = body.count(b'"type":"' + kind + b'"')
            if n:
                counts[kind.decode()] = counts.get(kind.decode(), 0) + n
        self.reply(b"ok")

    def do_GET(self):
        self.reply(json.dumps(counts).encode())

    def reply(self, body):
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
