"""A fake Gemini API for driving the real Gemini CLI offline.

Usage: fake_gemini.py REQUEST_LOG COMMAND (the port it prints, the request
log a test reads and its exit: `../agent_cli/fake_server.py`).

It answers `POST /v1beta/models/<model>:streamGenerateContent?alt=sse` (as
server-sent events) and `:generateContent` (as one JSON answer):

- a request that offers the `run_shell_command` tool and whose last turn
  carries no `functionResponse` (the first turn): a `functionCall` of
  `run_shell_command` running COMMAND;
- anything else (the turn after the function's response): the final
  text `All done.`
"""

import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "agent_cli"))
import fake_server  # noqa: E402


def parts(request, command):
    """The parts of the answer to `request`."""
    tools = [
        name
        for tool in request.get("tools") or []
        if isinstance(tool, dict)
        for name in fake_server.names(tool.get("functionDeclarations"))
    ]
    contents = request.get("contents") or []
    last = contents[-1].get("parts") if contents and isinstance(contents[-1], dict) else None
    answered = isinstance(last, list) and any(isinstance(part, dict) and "functionResponse" in part for part in last)
    if "run_shell_command" in tools and not answered:
        call = {"name": "run_shell_command", "args": {"command": command, "description": "create the marker"}}
        return [{"functionCall": call}]
    return [{"text": "All done."}]


class Handler(fake_server.Handler):
    def not_found(self):
        self.send(404, b'{"error": {"code": 404, "message": "not here", "status": "NOT_FOUND"}}')

    def answer(self, path, request):
        if not isinstance(request, dict) or not path.startswith("/v1beta/models/"):
            return self.not_found()
        if path.endswith(":countTokens"):
            return self.send(200, b'{"totalTokens": 12}')
        answer = {
            "candidates": [{"content": {"role": "model", "parts": parts(request, self.tool_command)},
                            "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 7, "totalTokenCount": 19},
            "modelVersion": "gemini-fake",
        }
        if path.endswith(":streamGenerateContent"):
            return self.send(200, f"data: {json.dumps(answer)}\r\n\r\n".encode(), "text/event-stream")
        if path.endswith(":generateContent"):
            return self.send(200, json.dumps(answer).encode())
        self.not_found()


if __name__ == "__main__":
    fake_server.serve(Handler)
