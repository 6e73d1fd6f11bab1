"""An A2A client, written with the protocol's own SDK (a2a-sdk), against a running Colloquy.

Run by apps/gateway/tests/it/a2a.rs: `python client_test.py BASE_URL API_KEY`. The mock model
behind the gateway answers, in order:
- over A2A 1.0: "Hello there" (a blocking SendMessage), "Forty-two" (streamed, in the same
  context), a reply that stalls mid-answer (streamed, subscribed to from a second connection,
  then cancelled);
- over A2A 0.3 (the SDK's 0.3 transport, and once raw JSON-RPC to see the 0.3 wire itself):
  "Old hello" (message/send), "Still here" (message/stream), a stalled reply (followed with
  tasks/resubscribe, cancelled with tasks/cancel);
- the named agent `helper` (its own card and endpoint): "Helper here";
- a calculator call that waits for approval (the task is input-required), approved by a
  message with the task's taskId, then "It is 42".
Every check raises on failure; the last line is OK.
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
    AgentCard,
    SendMessageConfiguration,
    SendMessageRequest,
    SubscribeToTaskRequest,
    TaskNotCancelableError,
    TaskNotFoundError,
    TaskState,
)
from a2a.utils.errors import InvalidParamsError, UnsupportedOperationError

BASE, KEY = sys.argv[1], sys.argv[2]


def user_message(text, context_id=None, task_id=None):
    return Message(
        role=Role.ROLE_USER, message_id=str(uuid.uuid4()), parts=[Part(text=text)], context_id=context_id, task_id=task_id
    )


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
    await follow_and_cancel(streaming, context, "think hard", "CancelTask", "SubscribeToTask")

    await version_0_3(http, card, context)
    await named_agent(http)
    await approval(blocking, context)
    await http.aclose()
    print("OK", flush=True)


async def follow_and_cancel(client, context, text, cancel, resubscribe):
    """A streamed task that stalls mid-answer, followed again from a second stream, then
    cancelled: the cancel returns it canceled, and the follower sees it working, then canceled."""
    stream = client.send_message(SendMessageRequest(message=user_message(text, context)))
    slow = (await stream.__anext__()).task.id
    async for r in stream:
        if r.WhichOneof("payload") == "artifact_update":
            break

    async def follow():
        states = []
        async for r in client.subscribe(SubscribeToTaskRequest(id=slow)):
            if r.WhichOneof("payload") == "task":
                states.append(state(r.task))
            if r.WhichOneof("payload") == "status_update":
                states.append(TaskState.Name(r.status_update.status.state))
        return states

    follower = asyncio.create_task(follow())
    await asyncio.sleep(0.5)
    cancelled = await client.cancel_task(CancelTaskRequest(id=slow))
    check(state(cancelled) == "TASK_STATE_CANCELED", f"{cancel} returns it canceled: {state(cancelled)}")
    states = await asyncio.wait_for(follower, 20)
    check(states[0] == "TASK_STATE_WORKING" and states[-1] == "TASK_STATE_CANCELED", f"{resubscribe} saw {states}")


async def version_0_3(http, card, context):
    """The same endpoint, in A2A 0.3: its method names and wire shapes."""
    legacy = [i for i in card.supported_interfaces if i.protocol_version.startswith("0.3")]
    check(legacy and legacy[0].url == f"{BASE}/a2a/v1", "the card offers 0.3 at the same endpoint")
    raw = await http.post(f"{BASE}/a2a/v1", json={"jsonrpc": "2.0", "id": 7, "method": "message/send", "params": {
        "message": {"kind": "message", "role": "user", "messageId": str(uuid.uuid4()), "contextId": context,
                    "parts": [{"kind": "text", "text": "hello, old friend"}]}}})
    task = raw.json()["result"]
    check(task["kind"] == "task" and task["status"]["state"] == "completed", f"message/send answers a 0.3 task: {task}")
    check(task["artifacts"][0]["parts"][0] == {"kind": "text", "text": "Old hello"}, "with 0.3 parts")
    check(task["history"][0]["role"] == "user", "and 0.3 roles")

    old_card = AgentCard()
    old_card.CopyFrom(card)
    del old_card.supported_interfaces[:]
    old_card.supported_interfaces.extend(legacy)
    old = ClientFactory(ClientConfig(httpx_client=http, streaming=True)).create(old_card)
    check(type(old._transport).__name__ == "CompatJsonRpcTransport", "the SDK talks 0.3 to it")
    text, last = "", None
    async for r in old.send_message(SendMessageRequest(message=user_message("still there?", context))):
        kind = r.WhichOneof("payload")
        if kind == "task":
            streamed = r.task.id
        if kind == "artifact_update":
            text += "".join(p.text for p in r.artifact_update.artifact.parts)
        if kind == "status_update":
            last = TaskState.Name(r.status_update.status.state)
    check(text == "Still here" and last == "TASK_STATE_COMPLETED", f"message/stream streams it: {text!r}, {last}")
    got = await old.get_task(GetTaskRequest(id=streamed))
    check(state(got) == "TASK_STATE_COMPLETED", "tasks/get tells the same")

    await follow_and_cancel(old, context, "think slowly", "tasks/cancel", "tasks/resubscribe")


async def named_agent(http):
    """A named agent: its own card and endpoint, and its own conversations."""
    base = f"{BASE}/a2a/agents/helper"
    card = await A2ACardResolver(http, base).get_agent_card()
    check(card.name == "helper" and card.supported_interfaces[0].url == base, f"helper's card: {card.name}")
    check(card.description == "Helps with everything", "with its configured description")
    client = ClientFactory(ClientConfig(httpx_client=http, streaming=False)).create(card)
    responses = [r async for r in client.send_message(SendMessageRequest(message=user_message("who are you?")))]
    task = responses[-1].task
    check(task.artifacts[0].parts[0].text == "Helper here", "helper answers in a context of its own")
    missing = await http.get(f"{BASE}/a2a/agents/nobody/.well-known/agent-card.json")
    check(missing.status_code == 404 and "helper" in missing.text, "an unknown agent is a 404 that names the agents")


async def approval(blocking, context):
    """A tool call that waits for approval: the task is input-required until a message with its
    taskId answers it."""
    config = SendMessageConfiguration(return_immediately=True)
    request = SendMessageRequest(message=user_message("what is 6*7?", context), configuration=config)
    task = [r async for r in blocking.send_message(request)][-1].task
    for _ in range(200):
        task = await blocking.get_task(GetTaskRequest(id=task.id))
        if state(task) == "TASK_STATE_INPUT_REQUIRED":
            break
        await asyncio.sleep(0.05)
    check(state(task) == "TASK_STATE_INPUT_REQUIRED", f"the task waits for the approval: {state(task)}")
    try:
        await anext(blocking.send_message(SendMessageRequest(message=user_message("maybe", context, task.id))))
        raise AssertionError("an unclear answer was taken")
    except InvalidParamsError as error:
        check("approve" in str(error), f"an unclear answer is refused with what to say: {error}")
    answered = [r async for r in blocking.send_message(SendMessageRequest(message=user_message("approve", context, task.id)))]
    done = answered[-1].task
    check(done.id == task.id and state(done) == "TASK_STATE_COMPLETED", f"approved, it completes: {state(done)}")
    check(done.artifacts[-1].parts[0].text == "It is 42", f"with the answer: {done.artifacts}")
    try:
        await anext(blocking.send_message(SendMessageRequest(message=user_message("again", context, task.id))))
        raise AssertionError("a completed task took a message")
    except UnsupportedOperationError as error:
        check("takes no more messages" in str(error), f"a completed task takes no messages: {error}")


asyncio.run(main())
