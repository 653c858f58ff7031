"""A fake Gemini API for driving the real Gemini CLI offline.

Usage: fake_gemini.py REQUEST_LOG COMMAND

Listens on 127.0.0.1 (a free port, printed as the first line on stdout) and
answers `POST /v1beta/models/<model>:streamGenerateContent?alt=sse` (as
server-sent events) and `:generateContent` (as one JSON answer):

- a request that offers the `run_shell_command` tool and whose last turn
  carries no `functionResponse` (the first turn): a `functionCall` of
  `run_shell_command` running COMMAND;
- anything else (the turn after the tool's result): the final text
  `All done.`

Every request is appended to REQUEST_LOG as one JSON line (`method`, `path`,
`body`), so a test can see what the model was told. The server exits when
its stdin closes.
"""

import http.server
import json
import sys
import threading


def parts(request):
    """The parts of the answer to `request`."""
    tools = [
        declaration.get("name")
        for tool in request.get("tools") or []
        if isinstance(tool, dict)
        for declaration in tool.get("functionDeclarations") or []
        if isinstance(declaration, dict)
    ]
    contents = request.get("contents") or []
    last = contents[-1].get("parts") if contents and isinstance(contents[-1], dict) else None
    answered = isinstance(last, list) and any(isinstance(part, dict) and "functionResponse" in part for part in last)
    if "run_shell_command" in tools and not answered:
        call = {"name": "run_shell_command", "args": {"command": COMMAND, "description": "create the marker"}}
        return [{"functionCall": call}]
    return [{"text": "All done."}]


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send(self, status, body, content_type="application/json"):
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def record(self, body):
        with LOCK, open(LOG_PATH, "a", encoding="utf-8") as log:
            log.write(json.dumps({"method": self.command, "path": self.path, "body": body}) + "\n")

    def not_found(self):
        self.send(404, b'{"error": {"code": 404, "message": "not here", "status": "NOT_FOUND"}}')

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
        path = self.path.split("?", 1)[0]
        if not isinstance(request, dict) or not path.startswith("/v1beta/models/"):
            return self.not_found()
        if path.endswith(":countTokens"):
            return self.send(200, b'{"totalTokens": 12}')
        answer = {
            "candidates": [{"content": {"role": "model", "parts": parts(request)}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 7, "totalTokenCount": 19},
            "modelVersion": "gemini-fake",
        }
        if path.endswith(":streamGenerateContent"):
            return self.send(200, f"data: {json.dumps(answer)}\r\n\r\n".encode(), "text/event-stream")
        if path.endswith(":generateContent"):
            return self.send(200, json.dumps(answer).encode())
        self.not_found()


if __name__ == "__main__":
    LOG_PATH, COMMAND = sys.argv[1], sys.argv[2]
    LOCK = threading.Lock()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sys.stdin.read()
