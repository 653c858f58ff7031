"""A fake Anthropic Messages API for driving the real Claude Code CLI offline.

Usage: fake_anthropic.py REQUEST_LOG COMMAND

Listens on 127.0.0.1 (a free port, printed as the first line on stdout) and
answers `POST /v1/messages` (Claude Code adds `?beta=true`), as a stream of
server-sent events when the request asks for one, else as one JSON message:

- a request that offers the `Bash` tool and whose last message carries no
  `tool_result` (the first turn): a `tool_use` of `Bash` running COMMAND;
- anything else (the turn after the tool's result, or a side request without
  tools): the final text `All done.`

Every request is appended to REQUEST_LOG as one JSON line (`method`, `path`,
`body`), so a test can see what the model was told, e.g. the tool result a
hook's block turned into. The server exits when its stdin closes.
"""

import http.server
import json
import sys
import threading
import uuid

# Unique per server, as the real API's ids are (Mandate's HTTP hook keys its
# idempotency on them).
TOOL_USE_ID = f"toolu_{uuid.uuid4().hex[:24]}"


def turn(request):
    """The content blocks and stop reason of the answer to `request`."""
    tools = [tool.get("name") for tool in request.get("tools") or [] if isinstance(tool, dict)]
    messages = request.get("messages") or []
    content = messages[-1].get("content") if messages and isinstance(messages[-1], dict) else None
    answered = isinstance(content, list) and any(
        isinstance(block, dict) and block.get("type") == "tool_result" for block in content
    )
    if "Bash" in tools and not answered:
        call = {"type": "tool_use", "id": TOOL_USE_ID, "name": "Bash", "input": {"command": COMMAND}}
        return [call], "tool_use"
    return [{"type": "text", "text": "All done."}], "end_turn"


def events(message):
    """The server-sent events that stream `message`."""
    blocks = message["content"]
    yield "message_start", {
        "type": "message_start",
        "message": dict(message, content=[], stop_reason=None, usage={"input_tokens": 12, "output_tokens": 1}),
    }
    for index, block in enumerate(blocks):
        if block["type"] == "text":
            start = {"type": "text", "text": ""}
            delta = {"type": "text_delta", "text": block["text"]}
        else:
            start = dict(block, input={})
            delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
        yield "content_block_start", {"type": "content_block_start", "index": index, "content_block": start}
        yield "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
        yield "content_block_stop", {"type": "content_block_stop", "index": index}
    yield "message_delta", {
        "type": "message_delta",
        "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
        "usage": {"output_tokens": 7},
    }
    yield "message_stop", {"type": "message_stop"}


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

    def not_found(self):
        error = {"type": "error", "error": {"type": "not_found_error", "message": f"no {self.path} here"}}
        self.send(404, json.dumps(error).encode())

    def record(self, body):
        with LOCK, open(LOG_PATH, "a", encoding="utf-8") as log:
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
        path = self.path.split("?", 1)[0]
        if path == "/v1/messages/count_tokens":
            return self.send(200, b'{"input_tokens": 12}')
        if path != "/v1/messages" or not isinstance(request, dict):
            return self.not_found()
        blocks, stop = turn(request)
        message = {
            "id": "msg_mandate_e2e",
            "type": "message",
            "role": "assistant",
            "model": request.get("model", "claude-fake"),
            "content": blocks,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {"input_tokens": 12, "output_tokens": 7},
        }
        if not request.get("stream"):
            return self.send(200, json.dumps(message).encode())
        body = "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events(message))
        self.send(200, body.encode(), "text/event-stream")


if __name__ == "__main__":
    LOG_PATH, COMMAND = sys.argv[1], sys.argv[2]
    LOCK = threading.Lock()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sys.stdin.read()
