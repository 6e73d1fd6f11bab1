"""An A2A agent written with the protocol's own SDK (a2a-sdk's server side), for Colloquy's A2A
client to call: `python echo_server.py PORT [VERSION]`, VERSION `1.0` (default) or `0.3` (its
card offers only a 0.3 interface, and it serves the 0.3 methods). It answers a message with
"echo: <text>" in two artifact chunks; a message containing "slow" gets a "tick " every 100 ms
for 30 s instead, until it is cancelled (it prints CANCELED when the cancel reaches it). For
each message it prints `MESSAGE context=<id> method=<JSON-RPC method> key=<Authorization> text=<text>`.
"""

import asyncio
import sys

import uvicorn
from a2a.helpers import new_task_from_user_message, new_text_part
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types import AgentCapabilities, AgentCard, AgentInterface, AgentSkill
from starlette.applications import Starlette

PORT = int(sys.argv[1])
VERSION = sys.argv[2] if len(sys.argv) > 2 else "1.0"
cancelled = set()


class Echo(AgentExecutor):
    async def execute(self, ctx: RequestContext, queue: EventQueue) -> None:
        text = ctx.get_user_input()
        task = ctx.current_task or new_task_from_user_message(ctx.message)
        await queue.enqueue_event(task)
        updater = TaskUpdater(queue, task.id, task.context_id)
        await updater.start_work()
        method = ctx.call_context.state.get("method")
        key = ctx.call_context.state.get("headers", {}).get("authorization", "none").replace(" ", "_")
        print(f"MESSAGE context={task.context_id} method={method} key={key} text={text}", flush=True)
        if "slow" in text:
            for n in range(300):
                if task.id in cancelled:
                    return
                await updater.add_artifact([new_text_part("tick ")], artifact_id="a1", append=n > 0)
                await asyncio.sleep(0.1)
        answer = f"echo: {text}"
        half = len(answer) // 2
        await updater.add_artifact([new_text_part(answer[:half])], artifact_id="a1", last_chunk=False)
        await updater.add_artifact([new_text_part(answer[half:])], artifact_id="a1", append=True, last_chunk=True)
        await updater.complete()

    async def cancel(self, ctx: RequestContext, queue: EventQueue) -> None:
        cancelled.add(ctx.task_id)
        print(f"CANCELED {ctx.task_id}", flush=True)
        await TaskUpdater(queue, ctx.task_id, ctx.context_id).cancel()


card = AgentCard(
    name="echo",
    description="echoes",
    version="1.0.0",
    supported_interfaces=[AgentInterface(url=f"http://127.0.0.1:{PORT}/", protocol_binding="JSONRPC", protocol_version=VERSION)],
    capabilities=AgentCapabilities(streaming=True),
    default_input_modes=["text/plain"],
    default_output_modes=["text/plain"],
    skills=[AgentSkill(id="echo", name="Echo", description="echo back", tags=["echo"])],
)
handler = DefaultRequestHandler(agent_executor=Echo(), task_store=InMemoryTaskStore(), agent_card=card)
app = Starlette(routes=create_agent_card_routes(card) + create_jsonrpc_routes(handler, rpc_url="/", enable_v0_3_compat=VERSION == "0.3"))
uvicorn.run(app, host="127.0.0.1", port=PORT, log_level="warning")
