"""A fake OpenAI Responses API for driving the real Codex CLI offline.

Usage: fake_openai.py REQUEST_LOG COMMAND (the port it prints, the request
log a test reads and its exit: `../agent_cli/fake_server.py`).

It answers `POST /v1/responses` with a stream of server-sent events:

- a request that offers the `exec_command` tool and whose input carries no
  `function_call_output` (the first turn): a `function_call` of
  `exec_command` running COMMAND;
- the turn after the tool's output: the final text `All done.`
"""

import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "agent_cli"))
import fake_server  # noqa: E402

CALL_ID = fake_server.unique_id("call_")


def output(request, command):
    """The output items of the answer to `request`."""
    tools = fake_server.names(request.get("tools"))
    items = request.get("input") or []
    answered = any(isinstance(item, dict) and item.get("type") == "function_call_output" for item in items)
    if "exec_command" in tools and not answered:
        arguments = json.dumps({"cmd": command})
        return [{"type": "function_call", "id": "fc_mandate_e2e", "call_id": CALL_ID, "name": "exec_command",
                 "arguments": arguments, "status": "completed"}]
    text = {"type": "output_text", "text": "All done.", "annotations": []}
    return [{"type": "message", "id": "msg_mandate_e2e", "role": "assistant", "status": "completed",
             "content": [text]}]


class Handler(fake_server.Handler):
    def answer(self, path, request):
        if path != "/v1/responses" or not isinstance(request, dict):
            return self.not_found()
        items = output(request, self.tool_command)
        usage = {"input_tokens": 12, "output_tokens": 7, "total_tokens": 19}
        response = {"id": fake_server.unique_id("resp_", 16), "object": "response", "model": request.get("model"),
                    "status": "completed", "output": items, "usage": usage}
        events = [("response.created", {"type": "response.created",
                                        "response": dict(response, status="in_progress", output=[])})]
        for index, item in enumerate(items):
            events.append(("response.output_item.added",
                           {"type": "response.output_item.added", "output_index": index, "item": item}))
            events.append(("response.output_item.done",
                           {"type": "response.output_item.done", "output_index": index, "item": item}))
        events.append(("response.completed", {"type": "response.completed", "response": response}))
        self.send_events(events)


if __name__ == "__main__":
    fake_server.serve(Handler)
