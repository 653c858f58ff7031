"""A fake Anthropic Messages API for driving the real Claude Code CLI offline.

Usage: fake_anthropic.py REQUEST_LOG COMMAND (the port it prints, the
request log a test reads, e.g. for the tool result a hook's block turned
into, and its exit: `../agent_cli/fake_server.py`).

It answers `POST /v1/messages` (Claude Code adds `?beta=true`), as a stream
of server-sent events when the request asks for one, else as one JSON
message:

- a request that offers the `Bash` tool and whose last message carries no
  `tool_result` (the first turn): a `tool_use` of `Bash` running COMMAND;
- anything else (the turn after the tool's result, or a side request without
  tools): the final text `All done.`
"""

import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "agent_cli"))
import fake_server  # noqa: E402

# Unique per server, as the real API's ids are (Mandate's HTTP hook keys its
# idempotency on them).
TOOL_USE_ID = fake_server.unique_id("toolu_")


def turn(request, command):
    """The content blocks and stop reason of the answer to `request`."""
    tools = fake_server.names(request.get("tools"))
    messages = request.get("messages") or []
    content = messages[-1].get("content") if messages and isinstance(messages[-1], dict) else None
    answered = isinstance(content, list) and any(
        isinstance(block, dict) and block.get("type") == "tool_result" for block in content
    )
    if "Bash" in tools and not answered:
        call = {"type": "tool_use", "id": TOOL_USE_ID, "name": "Bash", "input": {"command": command}}
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


class Handler(fake_server.Handler):
    def not_found(self):
        error = {"type": "error", "error": {"type": "not_found_error", "message": f"no {self.path} here"}}
        self.send(404, json.dumps(error).encode())

    def answer(self, path, request):
        if path == "/v1/messages/count_tokens":
            return self.send(200, b'{"input_tokens": 12}')
        if path != "/v1/messages" or not isinstance(request, dict):
            return self.not_found()
        blocks, stop = turn(request, self.tool_command)
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
        self.send_events(events(message))


if __name__ == "__main__":
    fake_server.serve(Handler)
