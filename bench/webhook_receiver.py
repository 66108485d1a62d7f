#!/usr/bin/env python3
"""A webhook receiver for bench/loghook.sh: counts the JSON log records POSTed to it (one
object per request, or an array per batch) by type, and the requests ("posts"); GET / answers the counts."""
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

counts = {}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        data = json.loads(body)
        counts["posts"] = counts.get("posts", 0) + 1
        for record in data if isinstance(data, list) else [data]:
            counts[record["type"]] = counts.get(record["type"], 0) + 1
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
