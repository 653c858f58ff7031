"""What the fake model servers of the agent-CLI tests share.

A fake is run as `FAKE.py REQUEST_LOG COMMAND`: it listens on 127.0.0.1 (a
free port, printed as the first line on stdout), appends every request it
gets to REQUEST_LOG as one JSON line (`method`, `path`, `body`: the parsed
JSON body, or null), answers with its API's tool call running COMMAND and
then a final text, and exits when its stdin closes.

A fake subclasses `Handler`, implements `answer(path, request)` (the path
without its query; `request` the parsed body, or None) and calls
`serve(Handler)`.
"""

import http.server
import json
import sys
import threading
import uuid

LOCK = threading.Lock()


def unique_id(prefix, digits=24):
    """An id unique to this server, as the real APIs' ids are."""
    return f"{prefix}{uuid.uuid4().hex[:digits]}"


def names(items):
    """The `name` of each object in `items` (a request's tools or declarations), if a list."""
    return [item.get("name") for item in items or [] if isinstance(item, dict)]


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Set by `serve`.
    log_path = None
    # The shell command of the model's tool call.
    tool_command = None

    def log_message(self, *args):
        pass

    def send(self, status, body, content_type="application/json"):
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def send_events(self, events):
        """Sends `(name, data)` pairs as one stream of server-sent events."""
        body = "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events)
        self.send(200, body.encode(), "text/event-stream")

    def not_found(self):
        self.send(404, b'{"error": {"message": "not here"}}')

    def record(self, body):
        with LOCK, open(self.log_path, "a", encoding="utf-8") as log:
            log.write(json.dumps({"method": self.command, "path": self.path, "body": body}) + "\n")

    def do_GET(self):
        self.record(None)
        self.not_found()

    def do_POST(self):
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            request = json.loads(raw)
        except ValueError:
            request = None
        self.record(request)
        self.answer(self.path.split("?", 1)[0], request)

    def answer(self, path, request):
        self.not_found()


def serve(handler):
    """Serves `handler` with the command line's REQUEST_LOG and COMMAND until stdin closes."""
    handler.log_path, handler.tool_command = sys.argv[1], sys.argv[2]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    print(server.server_address[1], flush=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sys.stdin.read()
