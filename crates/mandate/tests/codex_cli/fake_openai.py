"""A fake OpenAI Responses API for driving the real Codex CLI offline.

Usage: fake_openai.py REQUEST_LOG COMMAND

Listens on 127.0.0.1 (a free port, printed as the first line on stdout) and
answers `POST /v1/responses` with a stream of server-sent events:

- a request that offers the `exec_command` tool and whose input carries no
  `function_call_output` (the first turn): a `function_call` of
  `exec_command` running COMMAND;
- anything else (the turn after the tool's output): the final text
  `All done.`

Every request is appended to REQUEST_LOG as one JSON line (`method`, `path`,
`body`), so a test can see what the model was told. The server exits when
its stdin closes.
"""

import http.server
import json
import sys
import threading
import uuid

# Unique per server, as the real API's are.
CALL_ID = f"call_{uuid.uuid4().hex[:24]}"


def output(request):
    """The output items of the answer to `request`."""
    tools = [tool.get("name") for tool in request.get("tools") or [] if isinstance(tool, dict)]
    items = request.get("input") or []
    answered = any(isinstance(item, dict) and item.get("type") == "function_call_output" for item in items)
    if "exec_command" in tools and not answered:
        arguments = json.dumps({"cmd": COMMAND})
        return [{"type": "function_call", "id": "fc_mandate_e2e", "call_id": CALL_ID, "name": "exec_command",
                 "arguments": arguments, "status": "completed"}]
    text = {"type": "output_text", "text": "All done.", "annotations": []}
    return [{"type": "message", "id": "msg_mandate_e2e", "role": "assistant", "status": "completed",
             "content": [text]}]


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

    def do_GET(self):
        self.record(None)
        self.send(404, b'{"error": {"message": "not here"}}')

    def do_POST(self):
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            request = json.loads(raw)
        except ValueError:
            request = None
        self.record(request)
        if self.path.split("?", 1)[0] != "/v1/responses" or not isinstance(request, dict):
            return self.send(404, b'{"error": {"message": "not here"}}')
        items = output(request)
        usage = {"input_tokens": 12, "output_tokens": 7, "total_tokens": 19}
        response = {"id": f"resp_{uuid.uuid4().hex[:16]}", "object": "response", "model": request.get("model"),
                    "status": "completed", "output": items, "usage": usage}
        events = [("response.created", {"type": "response.created",
                                        "response": dict(response, status="in_progress", output=[])})]
        for index, item in enumerate(items):
            events.append(("response.output_item.added",
                           {"type": "response.output_item.added", "output_index": index, "item": item}))
            events.append(("response.output_item.done",
                           {"type": "response.output_item.done", "output_index": index, "item": item}))
        events.append(("response.completed", {"type": "response.completed", "response": response}))
        body = "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events)
        self.send(200, body.encode(), "text/event-stream")


if __name__ == "__main__":
    LOG_PATH, COMMAND = sys.argv[1], sys.argv[2]
    LOCK = threading.Lock()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sys.stdin.read()
