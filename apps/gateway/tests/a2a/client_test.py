"""An A2A client, written with the protocol's own SDK (a2a-sdk), against a running Colloquy.

Run by apps/gateway/tests/it/a2a.rs: `python client_test.py BASE_URL API_KEY`. The mock model
behind the gateway answers, in order: "Hello there" (a blocking SendMessage), "Forty-two"
(streamed, in the same context), then a reply that stalls mid-answer (streamed, subscribed to
from a second connection, then cancelled). Every check raises on failure; the last line is OK.
"""

import asyncio
import sys
import uuid

import httpx
from a2a.client import A2ACardResolver, ClientConfig, ClientFactory
from a2a.types import (
    CancelTaskRequest,
    GetTaskRequest,
    Message,
    Part,
    Role,
    SendMessageRequest,
    SubscribeToTaskRequest,
    TaskNotCancelableError,
    TaskNotFoundError,
    TaskState,
)

BASE, KEY = sys.argv[1], sys.argv[2]


def user_message(text, context_id=None):
    return Message(role=Role.ROLE_USER, message_id=str(uuid.uuid4()), parts=[Part(text=text)], context_id=context_id)


def state(task):
    return TaskState.Name(task.status.state)


def check(condition, what):
    if not condition:
        raise AssertionError(what)
    print("ok:", what, flush=True)


async def main():
    http = httpx.AsyncClient(headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
    card = await A2ACardResolver(http, BASE).get_agent_card()
    check(card.capabilities.streaming, "the card says it streams")
    check(card.supported_interfaces[0].url == f"{BASE}/a2a/v1", f"the card's interface is {BASE}/a2a/v1")
    check("bearer" in card.security_schemes, "the card declares bearer keys")
    blocking = ClientFactory(ClientConfig(httpx_client=http, streaming=False)).create(card)
    streaming = ClientFactory(ClientConfig(httpx_client=http, streaming=True)).create(card)

    # A blocking send: a new context (conversation), answered.
    responses = [r async for r in blocking.send_message(SendMessageRequest(message=user_message("hi")))]
    task = responses[-1].task
    check(state(task) == "TASK_STATE_COMPLETED", f"SendMessage completes: {state(task)}")
    check(task.artifacts[0].parts[0].text == "Hello there", f"its artifact is the answer: {task.artifacts}")
    check(task.status.message.parts[0].text == "Hello there", "and so is its status message")
    context = task.context_id

    # A streamed send in the same context: the task, working, the deltas, completed.
    kinds, text, last = [], "", None
    async for r in streaming.send_message(SendMessageRequest(message=user_message("6*7?", context))):
        kind = r.WhichOneof("payload")
        kinds.append(kind)
        if kind == "artifact_update":
            text += "".join(p.text for p in r.artifact_update.artifact.parts)
        if kind == "status_update":
            last = r.status_update.status
        if kind == "task":
            check(r.task.context_id == context, "the streamed task is in the same context")
            streamed_id = r.task.id
    check(kinds[0] == "task" and kinds.count("artifact_update") >= 2, f"task first, then deltas: {kinds}")
    check(text == "Forty-two", f"the deltas spell the answer: {text!r}")
    check(TaskState.Name(last.state) == "TASK_STATE_COMPLETED", "the stream ends completed")
    got = await blocking.get_task(GetTaskRequest(id=streamed_id))
    check(state(got) == "TASK_STATE_COMPLETED" and got.history[0].parts[0].text == "6*7?", "GetTask tells the same")

    try:
        await blocking.cancel_task(CancelTaskRequest(id=streamed_id))
        raise AssertionError("a completed task was cancelled")
    except TaskNotCancelableError:
        print("ok: a completed task is not cancelable", flush=True)
    try:
        await blocking.get_task(GetTaskRequest(id=f"{context}:{uuid.uuid4()}"))
        raise AssertionError("a made-up task was found")
    except TaskNotFoundError:
        print("ok: a made-up task is not found", flush=True)

    # A task that stalls mid-answer: followed from a second connection, then cancelled.
    stream = streaming.send_message(SendMessageRequest(message=user_message("think hard", context)))
    first = await stream.__anext__()
    slow = first.task.id
    async for r in stream:
        if r.WhichOneof("payload") == "artifact_update":
            break

    async def follow():
        states = []
        async for r in streaming.subscribe(SubscribeToTaskRequest(id=slow)):
            if r.WhichOneof("payload") == "task":
                states.append(state(r.task))
            if r.WhichOneof("payload") == "status_update":
                states.append(TaskState.Name(r.status_update.status.state))
        return states

    follower = asyncio.create_task(follow())
    await asyncio.sleep(0.5)
    cancelled = await blocking.cancel_task(CancelTaskRequest(id=slow))
    check(state(cancelled) == "TASK_STATE_CANCELED", f"CancelTask returns it canceled: {state(cancelled)}")
    states = await asyncio.wait_for(follower, 20)
    check(states[0] == "TASK_STATE_WORKING" and states[-1] == "TASK_STATE_CANCELED", f"the subscriber saw {states}")
    await http.aclose()
    print("OK", flush=True)


asyncio.run(main())
