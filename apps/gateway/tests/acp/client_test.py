"""An ACP client (an editor), written with the protocol's own SDK (agent-client-protocol),
driving `colloquy acp` over stdio.

Run by apps/gateway/tests/it/acp.rs: `python client_test.py COLLOQUY_BINARY`, with the gateway's
configuration (database, mock model, `tools.require_approval = ["calculator"]`) in the
environment. The mock model answers, in order: "Hello" in two chunks; "Seen" (to a prompt with a
resource link, an editor's @-mention of a file); a calculator call (which asks for permission)
and then "42"; then a reply that stalls (cancelled). A second agent process
on the same database then loads the session and replays it. Every check raises on failure;
the last line is OK.
"""

import asyncio
import os
import sys

from acp import PROTOCOL_VERSION, Client, resource_link_block, spawn_agent_process, text_block
from acp.schema import (
    AllowedOutcome,
    ClientCapabilities,
    Implementation,
    ReadTextFileResponse,
    RequestPermissionResponse,
    WriteTextFileResponse,
)

BINARY = sys.argv[1]


def check(condition, what):
    if not condition:
        raise AssertionError(what)
    print("ok:", what, flush=True)


class Editor(Client):
    def __init__(self):
        self.updates = []
        self.permissions = []

    async def session_update(self, session_id, update, **kwargs):
        self.updates.append(update)

    async def request_permission(self, session_id, tool_call, options, **kwargs):
        self.permissions.append(tool_call.title)
        allow = next(o for o in options if o.kind == "allow_once")
        return RequestPermissionResponse(outcome=AllowedOutcome(outcome="selected", option_id=allow.option_id))

    async def read_text_file(self, session_id, path, line=None, limit=None, **kwargs):
        return ReadTextFileResponse(content="")

    async def write_text_file(self, session_id, path, content, **kwargs):
        return WriteTextFileResponse()

    def take(self):
        updates, self.updates = self.updates, []
        return updates


def texts(updates, kind):
    return "".join(u.content.text for u in updates if u.session_update == kind)


def agent(editor):
    return spawn_agent_process(editor, BINARY, "acp", env=dict(os.environ), transport_kwargs={"stderr": None})


async def main():
    editor = Editor()
    async with agent(editor) as (conn, _process):
        init = await conn.initialize(
            protocol_version=PROTOCOL_VERSION,
            client_capabilities=ClientCapabilities(),
            client_info=Implementation(name="test-editor", version="0"),
        )
        check(init.protocol_version == PROTOCOL_VERSION, f"protocol version {init.protocol_version}")
        check(init.agent_capabilities.load_session, "the agent can load sessions")
        session = (await conn.new_session(cwd=os.getcwd(), mcp_servers=[])).session_id

        done = await conn.prompt(session_id=session, prompt=[text_block("hi")])
        check(done.stop_reason == "end_turn", f"the first prompt ends: {done.stop_reason}")
        check(texts(editor.take(), "agent_message_chunk") == "Hello", "its answer arrived in chunks")

        mention = [text_block("look at"), resource_link_block("main.rs", "file:///src/main.rs")]
        done = await conn.prompt(session_id=session, prompt=mention)
        check(done.stop_reason == "end_turn", f"a prompt with a resource link is served: {done.stop_reason}")
        check(texts(editor.take(), "agent_message_chunk") == "Seen", "and answered")

        done = await conn.prompt(session_id=session, prompt=[text_block("6*7?")])
        updates = editor.take()
        check(done.stop_reason == "end_turn", f"the tool prompt ends: {done.stop_reason}")
        check(editor.permissions == ["calculator"], f"the calculator asked first: {editor.permissions}")
        calls = [u for u in updates if u.session_update == "tool_call"]
        results = [u for u in updates if u.session_update == "tool_call_update"]
        check(len(calls) == 1 and calls[0].title == "calculator", "one tool call was shown")
        check(results[0].status == "completed" and "42" in results[0].content[0].content.text, "with its result")
        check(texts(updates, "agent_message_chunk") == "42", "then the answer")

        running = asyncio.create_task(conn.prompt(session_id=session, prompt=[text_block("think hard")]))
        while not any(u.session_update == "agent_message_chunk" for u in editor.updates):
            await asyncio.sleep(0.05)
        await conn.cancel(session_id=session)
        done = await asyncio.wait_for(running, 20)
        check(done.stop_reason == "cancelled", f"a cancelled prompt says so: {done.stop_reason}")
        editor.take()

    # Another agent process (the editor restarted): the session is in the store.
    again = Editor()
    async with agent(again) as (conn, _process):
        await conn.initialize(protocol_version=PROTOCOL_VERSION, client_capabilities=ClientCapabilities())
        await conn.load_session(cwd=os.getcwd(), session_id=session, mcp_servers=[])
        replayed = again.take()
        users = [u.content.text for u in replayed if u.session_update == "user_message_chunk"]
        want = ["hi", "look at", "[main.rs](file:///src/main.rs)", "6*7?", "think hard"]
        check(users == want, f"load replays the prompts: {users}")
        check(texts(replayed, "agent_message_chunk").startswith("HelloSeen42"), "and the answers")
        check(any(u.session_update == "tool_call" for u in replayed), "and the tool call")
        try:
            await conn.prompt(session_id="not-a-session", prompt=[text_block("hi")])
            raise AssertionError("a made-up session was served")
        except Exception as error:  # the SDK's RequestError
            check(getattr(error, "code", None) == -32602, f"a made-up session is refused: {error}")
    print("OK", flush=True)


asyncio.run(main())
