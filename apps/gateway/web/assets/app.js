// Colloquy's chat page: signs in with an API key, lists the caller's conversations, and shows
// one conversation as its event log says (docs/protocol.md): the page subscribes from the first
// event, so what it shows is rebuilt from the same durable events after every reconnect, and
// running turns, queued prompts and waiting approvals appear as they are.
//
// Everything that comes from the gateway is put into the page as text nodes, except message
// text, which goes through markdown.js (sanitized). No inline script or style: the
// Content-Security-Policy forbids both.

import { ApiError, api, forgetKey, signedInKey, storeKey } from "./api.js";
import { Live } from "./live.js";
import { renderMarkdown } from "./markdown.js";

const $ = (selector, root = document) => root.querySelector(selector);

/** An element with attributes and children (strings become text nodes). */
function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") element.className = value;
    else if (name === "dataset") Object.assign(element.dataset, value);
    else if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else element.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

/** A random id for `client_msg_id` (crypto.randomUUID needs a secure context; this does not). */
function randomId() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return "web-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** A stable colour per speaker. */
function speakerColour(id) {
  let hash = 0;
  for (const c of String(id)) hash = (hash * 31 + c.charCodeAt(0)) >>> 0;
  return `hsl(${hash % 360} 65% 38%)`;
}

function formatTime(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  const today = new Date().toDateString() === date.toDateString();
  return today ? date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }) : date.toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
}

function formatCost(cost) {
  if (cost === undefined || cost === null) return "";
  return `$${cost.toFixed(cost < 0.01 ? 6 : 4)}`;
}

function formatUsage(usage) {
  if (!usage) return "";
  const parts = [`${usage.input_tokens} in / ${usage.output_tokens} out tokens`];
  if (usage.cost_usd !== undefined && usage.cost_usd !== null) parts.push(formatCost(usage.cost_usd));
  if (usage.estimated) parts.push("estimated");
  return parts.join(" · ");
}

/** What a stop reason means and what to do about it. */
function explainStop(end) {
  switch (end.stop_reason) {
    case "cancelled":
      return "Stopped: the turn was cancelled. Send a message, or press Continue to let the agent go on.";
    case "max_tokens":
      return "Stopped: the reply reached its token limit (max_tokens). Press Continue, or raise max_tokens in the conversation's options.";
    case "max_turn_requests":
      return "Stopped: the agent used every LLM request this turn may make (max_turn_requests). Send a message or press Continue to go on.";
    case "refusal":
      return "Stopped: the model refused to answer. Rephrase the request.";
    case "budget_exceeded":
      return `Stopped: the conversation's ${end.limit ?? ""} budget is used up. Raise it in the conversation's options, or fork the conversation.`;
    case "error":
      return `Failed (${end.error?.kind ?? "error"}): ${end.error?.message ?? "the turn failed"}. Fix what it says, then press Continue.`;
    default:
      return `Stopped: ${end.stop_reason}.`;
  }
}

// ---------------------------------------------------------------------------------------------
// Page-wide state.

const page = {
  me: null,
  live: null,
  providers: [],
  tools: [],
  accounts: null,
  conversations: [],
  view: null,
};

function notify(message, { error = true } = {}) {
  const region = $("#notice");
  region.replaceChildren(
    h("p", {}, message),
    h("button", { type: "button", class: "link", onclick: () => { region.hidden = true; } }, "Dismiss"),
  );
  region.className = error ? "notice error" : "notice";
  region.hidden = false;
}

function describe(error) {
  if (error instanceof ApiError || error?.code) return `${error.message} (${error.code})`;
  return String(error?.message ?? error);
}

async function attempt(action) {
  try {
    return await action();
  } catch (error) {
    if (error?.status === 401 || error?.code === "unauthenticated") {
      signOut("The gateway refused your key (revoked, expired or mistyped): sign in with a valid key.");
    } else {
      notify(describe(error));
    }
    return undefined;
  }
}

// ---------------------------------------------------------------------------------------------
// Signing in and out.

function showSignIn(message) {
  $("#app").hidden = true;
  $("#signin").hidden = false;
  $("#signin-error").textContent = message ?? "";
  $("#key-input").value = "";
  $("#key-input").focus();
}

async function start() {
  const key = signedInKey();
  if (!key) {
    showSignIn();
    return;
  }
  try {
    page.me = await api("GET", "/v1/me");
  } catch (error) {
    forgetKey();
    showSignIn(
      error.status === 401
        ? "The gateway refused this key (revoked, expired or mistyped): paste a valid key."
        : `Cannot reach the gateway: ${describe(error)}`,
    );
    return;
  }
  $("#signin").hidden = true;
  $("#app").hidden = false;
  $("#me").textContent = `${page.me.display_name || page.me.name} (${page.me.kind})`;
  page.live = new Live(key);
  page.live.addEventListener("state", (event) => connectionChanged(event.detail));
  page.live.addEventListener("revoked", () => signOut("Your key was revoked or has expired: sign in with another key."));
  page.live.addEventListener("problem", (event) => {
    const frame = event.detail;
    if (page.view && frame.conversation_id === page.view.id && ["forbidden", "conversation_not_found"].includes(frame.code)) {
      closeConversation();
      refreshList();
    }
    notify(`${frame.message} (${frame.code})`);
  });
  setBanner("Connecting to the gateway…");
  page.live.connect();
  [page.providers, page.tools] = await Promise.all([
    api("GET", "/v1/providers").catch(() => []),
    api("GET", "/v1/tools").catch(() => []),
  ]);
  if (page.me.kind === "admin") page.accounts = await api("GET", "/v1/accounts").catch(() => null);
  await refreshList();
}

function signOut(message) {
  forgetKey();
  page.live?.stop();
  page.live = null;
  closeConversation();
  setBanner(null);
  showSignIn(message);
}

function setBanner(text) {
  const banner = $("#banner");
  banner.textContent = text ?? "";
  banner.hidden = !text;
}

function connectionChanged({ online, retryInMs, attempt }) {
  document.body.dataset.connection = online ? "online" : "offline";
  if (online) {
    setBanner(null);
    if (page.view) page.view.clearTyping();
    refreshList();
  } else {
    setBanner(`Connection lost: reconnecting (attempt ${attempt}, next try in ${Math.ceil(retryInMs / 1000)} s)…`);
  }
}

// ---------------------------------------------------------------------------------------------
// The sidebar.

let searchTimer = null;

async function refreshList() {
  const q = $("#search").value.trim();
  const query = new URLSearchParams({ limit: "100" });
  if (q) query.set("q", q);
  const answer = await attempt(() => api("GET", `/v1/conversations?${query}`));
  if (!answer) return;
  page.conversations = answer.conversations;
  renderList();
  const results = $("#message-results");
  results.replaceChildren();
  if (q) {
    const found = await api("GET", `/v1/search?${new URLSearchParams({ q, limit: "20" })}`).catch(() => ({ messages: [] }));
    if (found.messages.length) {
      results.append(
        h("h3", {}, `Messages containing “${q}”`),
        h("ul", {}, found.messages.map((m) =>
          h("li", {}, h("button", { type: "button", class: "result", onclick: () => openConversation(m.conversation_id) },
            m.content.filter((p) => p.type === "text").map((p) => p.text).join(" ").slice(0, 120))))),
      );
    }
  }
}

function renderList() {
  const list = $("#conversation-list");
  list.replaceChildren();
  if (!page.conversations.length) {
    list.append(h("li", { class: "empty" }, $("#search").value ? "No conversation matches." : "No conversations yet: create one."));
  }
  for (const c of page.conversations) {
    const current = page.view?.id === c.id;
    list.append(
      h("li", {},
        h("button", {
          type: "button",
          class: "conversation-item",
          "aria-current": current ? "true" : undefined,
          dataset: { conversationId: c.id },
          onclick: () => openConversation(c.id),
        },
        h("span", { class: "title" }, c.title || "Untitled"),
        h("span", { class: "meta" },
          h("time", { datetime: c.last_activity }, formatTime(c.last_activity)),
          " · ", c.kind.replace("_", "-"),
          c.status !== "active" ? h("span", { class: `status ${c.status}` }, c.status) : null),
        ),
      ),
    );
  }
}

// ---------------------------------------------------------------------------------------------
// One conversation.

function closeConversation() {
  if (page.view) page.live?.unsubscribe(page.view.id);
  page.view = null;
  $("#conversation-view").hidden = true;
  $("#empty").hidden = false;
}

async function openConversation(id) {
  const conversation = await attempt(() => api("GET", `/v1/conversations/${id}`));
  if (!conversation) return;
  closeConversation();
  page.view = new ConversationView(conversation);
  renderList();
  document.body.classList.remove("sidebar-open");
  $("#menu-toggle").setAttribute("aria-expanded", "false");
  $("#composer-input").focus();
}

class ConversationView {
  constructor(conversation) {
    this.id = conversation.id;
    this.conversation = conversation;
    this.participants = new Map(conversation.participants.map((p) => [p.id, p]));
    this.messages = $("#messages");
    this.messages.replaceChildren();
    this.messageItems = new Map();
    this.cards = new Map();
    this.drafts = new Map();
    this.turns = new Map();
    this.running = new Set();
    this.online = new Set();
    this.typing = new Map();
    this.totals = { input_tokens: 0, output_tokens: 0, cost_usd: 0, costed: false };
    $("#empty").hidden = true;
    $("#conversation-view").hidden = false;
    $("#typing").textContent = "";
    this.renderHeader();
    this.renderParticipants();
    this.renderTotals();
    this.updateRunning();
    page.live.subscribe(this.id, 0, (event, seq) => this.onEvent(event, seq), (online) => {
      this.online = new Set(online);
      this.renderParticipants();
    });
  }

  get mine() {
    const own = [...this.participants.values()].filter((p) => p.account === page.me.id && p.kind !== "agent");
    return own[0] ?? null;
  }

  get isOwner() {
    return page.me.kind === "admin" || this.mine?.role === "owner";
  }

  get canPost() {
    return this.conversation.status === "active" && (page.me.kind === "admin" || (this.mine && this.mine.role !== "observer"));
  }

  name(id) {
    return this.participants.get(id)?.display_name ?? "someone";
  }

  renderHeader() {
    const c = this.conversation;
    $("#conversation-title").textContent = c.title || "Untitled";
    const status = $("#conversation-status");
    status.textContent = c.status === "active" ? c.kind.replace("_", "-") : `${c.kind.replace("_", "-")} · ${c.status}`;
    $("#archive").textContent = c.status === "archived" ? "Unarchive" : "Archive";
    for (const id of ["#rename", "#archive", "#delete"]) $(id).hidden = !this.isOwner;
    $("#archive").disabled = c.status === "closed";
    const input = $("#composer-input");
    input.disabled = !this.canPost;
    $("#send").disabled = !this.canPost;
    input.placeholder = this.canPost
      ? this.conversation.kind === "multi_party" ? "Message (type @ to mention an agent; Enter sends, Shift+Enter for a new line)" : "Message (Enter sends, Shift+Enter for a new line)"
      : c.status !== "active" ? `This conversation is ${c.status}: unarchive it or branch from a message to go on.` : "You may read this conversation but not post in it.";
  }

  renderParticipants() {
    const list = $("#participant-list");
    list.replaceChildren();
    for (const p of this.participants.values()) {
      const online = p.kind === "agent" || this.online.has(p.id) || p.id === this.mine?.id;
      const item = h("li", { dataset: { participantId: p.id, presence: online ? "online" : "offline" } },
        h("span", { class: "presence", "aria-hidden": "true" }),
        h("span", { class: "speaker" }, p.display_name),
        h("span", { class: "role" }, `${p.kind}${p.kind === "agent" ? "" : ", " + p.role}`),
        h("span", { class: "sr-only" }, online ? "online" : "offline"));
      item.style.setProperty("--speaker", speakerColour(p.id));
      list.append(item);
    }
    $("#participant-count").textContent = String(this.participants.size);
  }

  renderTotals() {
    const t = this.totals;
    $("#totals").textContent = t.input_tokens || t.output_tokens
      ? `Total: ${t.input_tokens} in / ${t.output_tokens} out tokens${t.costed ? " · " + formatCost(t.cost_usd) : ""}`
      : "";
  }

  updateRunning() {
    $("#stop").hidden = this.running.size === 0;
    $("#conversation-view").dataset.running = this.running.size ? "true" : "false";
  }

  clearTyping() {
    for (const timer of this.typing.values()) clearTimeout(timer);
    this.typing.clear();
    this.renderTyping();
  }

  renderTyping() {
    const names = [...this.typing.keys()].map((id) => this.name(id));
    $("#typing").textContent = names.length ? `${names.join(", ")} ${names.length > 1 ? "are" : "is"} typing…` : "";
  }

  onEvent(event, seq) {
    if (typeof seq === "number") this.messages.dataset.lastSeq = String(seq);
    switch (event.type) {
      case "message_posted":
        this.removeItem(event.message.id);
        this.appendMessage(event.message, {});
        this.touch();
        break;
      case "message_queued":
        this.appendMessage(event.message, { queued: true });
        break;
      case "message_updated": {
        const item = this.messageItems.get(event.message.id);
        if (item) item.replaceWith(this.messageItem(event.message, {}));
        break;
      }
      case "message_removed":
        this.removeItem(event.message_id);
        break;
      case "agent_start":
        this.turns.set(event.turn_id, { agent: event.agent });
        this.running.add(event.turn_id);
        this.updateRunning();
        break;
      case "message_start":
        this.dropOrphanDrafts(event.turn_id);
        this.startDraft(event);
        break;
      case "message_update":
        this.updateDraft(event);
        break;
      case "message_end":
        this.endDraft(event);
        break;
      case "approval_requested":
        this.card(event.tool_call_id, event.tool_name).waitForApproval(event);
        break;
      case "tool_execution_start":
        this.card(event.tool_call_id, event.tool_name).running(event.arguments);
        break;
      case "tool_execution_update":
        this.card(event.tool_call_id).progress(event.progress);
        break;
      case "tool_execution_end":
        this.card(event.tool_call_id, event.tool_name).finished(event);
        break;
      case "agent_end":
        this.endTurn(event);
        break;
      case "participant_joined":
      case "participant_updated":
        this.participants.set(event.participant.id, event.participant);
        this.renderParticipants();
        this.renderHeader();
        break;
      case "participant_left":
        this.participants.delete(event.participant_id);
        this.online.delete(event.participant_id);
        this.renderParticipants();
        break;
      case "participant_presence":
        if (event.online) this.online.add(event.participant_id);
        else this.online.delete(event.participant_id);
        this.renderParticipants();
        break;
      case "participant_typing": {
        if (event.participant_id === this.mine?.id) break;
        clearTimeout(this.typing.get(event.participant_id));
        this.typing.set(event.participant_id, setTimeout(() => {
          this.typing.delete(event.participant_id);
          this.renderTyping();
        }, 4000));
        this.renderTyping();
        break;
      }
      case "conversation_updated":
        Object.assign(this.conversation, event.changes ?? {});
        this.renderHeader();
        this.touch();
        break;
      default:
        break;
    }
  }

  /** The sidebar entry moves to the top, as `GET /v1/conversations` would order it. */
  touch() {
    const entry = page.conversations.find((c) => c.id === this.id);
    if (!entry) return;
    Object.assign(entry, { title: this.conversation.title, status: this.conversation.status, last_activity: new Date().toISOString() });
    page.conversations = [entry, ...page.conversations.filter((c) => c !== entry)];
    renderList();
  }

  removeItem(id) {
    this.messageItems.get(id)?.remove();
    this.messageItems.delete(id);
  }

  appendMessage(message, options) {
    if (message.role === "tool") {
      for (const part of message.content) if (part.type === "tool_result") this.card(part.tool_call_id, part.name).result(part);
      return;
    }
    const item = this.messageItem(message, options);
    this.messageItems.get(message.id)?.remove();
    this.messageItems.set(message.id, item);
    this.messages.append(item);
    this.scroll();
  }

  speakerOf(message) {
    if (message.sender) return message.sender;
    const turn = message.turn_id && this.turns.get(message.turn_id);
    return turn?.agent ?? null;
  }

  messageItem(message, { queued = false }) {
    const sender = this.speakerOf(message);
    const name = sender ? this.name(sender) : message.role;
    const body = h("div", { class: "content" });
    for (const part of message.content) body.append(this.part(part));
    const actions = h("div", { class: "actions" });
    if (!queued && message.seq) {
      actions.append(h("button", {
        type: "button",
        class: "link branch",
        "aria-label": `Branch from here: a new conversation with the history up to this message from ${name}`,
        onclick: () => this.branch(message.seq),
      }, "Branch from here"));
    }
    const item = h("li", {
      class: `message ${message.role}${queued ? " queued" : ""}`,
      dataset: { messageId: message.id, seq: String(message.seq ?? ""), role: message.role },
      "aria-label": `${name}${queued ? " (queued)" : ""}`,
    },
    h("header", {},
      h("span", { class: "speaker" }, name),
      h("time", { datetime: message.created_at }, formatTime(message.created_at)),
      queued ? h("span", { class: "badge queued-badge" }, "queued: answered after the current reply") : null),
    body,
    message.usage ? h("p", { class: "usage" }, [formatUsage(message.usage), message.model ? ` · ${message.model}` : "", message.latency_ms ? ` · ${message.latency_ms} ms` : ""].join("")) : null,
    actions);
    if (sender) item.style.setProperty("--speaker", speakerColour(sender));
    return item;
  }

  part(part) {
    switch (part.type) {
      case "text":
        return h("div", { class: "markdown" }, renderMarkdown(part.text));
      case "tool_call": {
        const card = this.card(part.id, part.name);
        card.requested(part.arguments);
        return card.element;
      }
      case "image":
        if (part.source?.type === "base64" && /^image\/(png|jpeg|gif|webp)$/.test(part.source.mime_type)) {
          return h("img", { src: `data:${part.source.mime_type};base64,${part.source.data}`, alt: "an image in the message", class: "attachment" });
        }
        return h("p", { class: "attachment" }, `Image at ${part.source?.url ?? "an unknown place"} (not loaded)`);
      case "file":
        return h("p", { class: "attachment" }, `File: ${part.name ?? "unnamed"}`);
      case "custom":
        return h("pre", { class: "custom" }, JSON.stringify(part.value, null, 2));
      default:
        return h("p", {}, `[${part.type}]`);
    }
  }

  card(id, name) {
    let card = this.cards.get(id);
    if (!card) {
      card = new ToolCard(this, id, name);
      this.cards.set(id, card);
    } else if (name && !card.name) {
      card.setName(name);
    }
    return card;
  }

  startDraft(event) {
    const turn = this.turns.get(event.turn_id);
    const sender = turn?.agent;
    const name = sender ? this.name(sender) : "assistant";
    const text = h("div", { class: "markdown" });
    const calls = h("div", { class: "calls" });
    const item = h("li", {
      class: "message assistant streaming",
      dataset: { messageId: event.message_id, role: "assistant" },
      "aria-label": `${name} (writing)`,
      "aria-busy": "true",
    },
    h("header", {}, h("span", { class: "speaker" }, name), h("span", { class: "badge" }, "writing…")),
    h("div", { class: "content" }, text, calls));
    if (sender) item.style.setProperty("--speaker", speakerColour(sender));
    this.messageItems.get(event.message_id)?.remove();
    this.messageItems.set(event.message_id, item);
    this.drafts.set(event.message_id, { item, text, calls, buffer: "", turn: event.turn_id, toolCalls: [], frame: 0 });
    this.messages.append(item);
    this.scroll();
  }

  updateDraft(event) {
    const draft = this.drafts.get(event.message_id);
    if (!draft) return;
    const delta = event.delta;
    if (delta.type === "text") {
      draft.buffer += delta.text;
      if (!draft.frame) {
        draft.frame = requestAnimationFrame(() => {
          draft.frame = 0;
          draft.text.replaceChildren(renderMarkdown(draft.buffer));
          this.scroll();
        });
      }
    } else if (delta.type === "tool_call") {
      let call = draft.toolCalls[delta.index];
      if (!call) {
        call = { id: delta.id, name: delta.name, arguments: "" };
        draft.toolCalls[delta.index] = call;
      }
      call.id ??= delta.id;
      call.name ??= delta.name;
      call.arguments += delta.arguments ?? "";
      if (call.id) {
        const card = this.card(call.id, call.name);
        card.streamingArguments(call.arguments);
        if (card.element.parentNode !== draft.calls) draft.calls.append(card.element);
      }
    }
  }

  endDraft(event) {
    const draft = this.drafts.get(event.message.id);
    if (draft) cancelAnimationFrame(draft.frame);
    this.drafts.delete(event.message.id);
    const item = this.messageItem(event.message, {});
    const old = this.messageItems.get(event.message.id);
    this.messageItems.set(event.message.id, item);
    if (old) old.replaceWith(item);
    else this.messages.append(item);
    this.scroll();
  }

  /** A message that began streaming and never ended (the server stopped mid-reply): the turn
   * went on with a new message, so the partial one is not kept. */
  dropOrphanDrafts(turnId) {
    for (const [id, draft] of this.drafts) {
      if (draft.turn !== turnId) continue;
      cancelAnimationFrame(draft.frame);
      draft.item.remove();
      this.messageItems.delete(id);
      this.drafts.delete(id);
    }
  }

  endTurn(end) {
    this.dropOrphanDrafts(end.turn_id);
    this.running.delete(end.turn_id);
    this.updateRunning();
    for (const card of this.cards.values()) if (card.turn === end.turn_id) card.turnEnded();
    const usage = end.usage;
    if (usage) {
      this.totals.input_tokens += usage.input_tokens;
      this.totals.output_tokens += usage.output_tokens;
      if (usage.cost_usd !== undefined && usage.cost_usd !== null) {
        this.totals.cost_usd += usage.cost_usd;
        this.totals.costed = true;
      }
      this.renderTotals();
    }
    const agent = this.turns.get(end.turn_id)?.agent;
    const summary = h("li", { class: `turn-summary ${end.stop_reason}`, dataset: { turnId: end.turn_id, stopReason: end.stop_reason } },
      h("p", { class: "usage" }, `${agent ? this.name(agent) + "'s turn" : "Turn"}: ${formatUsage(usage) || "no tokens"}`));
    if (end.stop_reason !== "end_turn") {
      summary.append(h("p", { class: "stop-reason", role: "note" }, explainStop(end)));
      if (this.canPost && ["cancelled", "max_tokens", "max_turn_requests", "error"].includes(end.stop_reason)) {
        summary.append(h("button", { type: "button", class: "link", onclick: () => this.continueTurn() }, "Continue"));
      }
    }
    this.messages.append(summary);
    this.scroll();
  }

  scroll() {
    const scroller = $("#message-scroller");
    if (scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 200) scroller.scrollTop = scroller.scrollHeight;
  }

  async send(text) {
    const content = text.trim();
    if (!content) return false;
    const composer = $("#composer");
    if (composer.dataset.pendingText !== content) {
      composer.dataset.pendingText = content;
      composer.dataset.clientMsgId = randomId();
    }
    try {
      await page.live.request({ type: "send", conversation_id: this.id, content, client_msg_id: composer.dataset.clientMsgId });
      delete composer.dataset.pendingText;
      return true;
    } catch (error) {
      notify(`Not sent, your message is still in the box: ${describe(error)}`);
      return false;
    }
  }

  async cancel() {
    await page.live.request({ type: "cancel", conversation_id: this.id }).catch((error) => notify(describe(error)));
  }

  async continueTurn() {
    await attempt(() => api("POST", `/v1/conversations/${this.id}/continue`));
  }

  async approve(toolCallId, decision, reason) {
    const frame = { type: "approve", conversation_id: this.id, tool_call_id: toolCallId, decision };
    if (decision === "deny" && reason) frame.reason = reason;
    try {
      await page.live.request(frame);
      return true;
    } catch (error) {
      notify(describe(error));
      return false;
    }
  }

  async branch(seq) {
    const fork = await attempt(() => api("POST", `/v1/conversations/${this.id}/fork`, { at_seq: seq }));
    if (!fork) return;
    await refreshList();
    await openConversation(fork.id);
    notify(`Branched: “${fork.title || "Untitled"}” holds the history up to that message.`, { error: false });
  }
}

/** A tool call as a collapsible card: its arguments, progress, and result or error. */
class ToolCard {
  constructor(view, id, name) {
    this.view = view;
    this.id = id;
    this.name = name ?? "";
    this.summaryName = h("span", { class: "tool-name" }, this.name || "tool");
    this.state = h("span", { class: "badge" }, "requested");
    this.argumentsBlock = h("pre", { class: "arguments" });
    this.progressBlock = h("pre", { class: "progress", hidden: true });
    this.resultBlock = h("pre", { class: "result", hidden: true });
    this.approval = h("div", { class: "approval", hidden: true });
    this.element = h("details", { class: "tool-card", dataset: { toolCallId: id, state: "requested" } },
      h("summary", {}, "Tool ", this.summaryName, " ", this.state),
      h("div", { class: "tool-body" },
        h("h4", {}, "Arguments"), this.argumentsBlock,
        this.progressBlock, this.approval,
        this.resultBlock));
  }

  setName(name) {
    this.name = name;
    this.summaryName.textContent = name;
  }

  setState(state, label) {
    this.element.dataset.state = state;
    this.state.textContent = label ?? state;
  }

  streamingArguments(text) {
    this.argumentsBlock.textContent = text;
  }

  requested(args) {
    this.argumentsBlock.textContent = JSON.stringify(args, null, 2);
  }

  waitForApproval(event) {
    this.turn = event.turn_id;
    this.requested(event.arguments);
    // The call's `tool_execution_start` comes before its approval is asked; a finished call
    // (replayed) waits for nothing.
    if (["ok", "error"].includes(this.element.dataset.state)) return;
    this.setState("approval", "waiting for approval");
    this.element.open = true;
    const reason = h("input", { type: "text", class: "reason", "aria-label": `Reason for denying ${this.name}` , placeholder: "reason (optional, for deny)" });
    const decide = async (decision) => {
      for (const button of this.approval.querySelectorAll("button")) button.disabled = true;
      if (!(await this.view.approve(this.id, decision, reason.value.trim()))) {
        for (const button of this.approval.querySelectorAll("button")) button.disabled = false;
      }
    };
    this.approval.replaceChildren(
      h("p", { role: "alert" }, `${this.name} wants to run with these arguments. Allow it?`),
      this.view.isOwner
        ? h("div", { class: "row" },
          h("button", { type: "button", class: "allow", onclick: () => decide("allow") }, "Allow"),
          h("button", { type: "button", class: "deny", onclick: () => decide("deny") }, "Deny"),
          reason)
        : h("p", {}, "An owner of the conversation decides."),
    );
    this.approval.hidden = false;
  }

  running(args) {
    this.requested(args);
    this.approval.hidden = true;
    this.setState("running", "running…");
  }

  progress(progress) {
    this.progressBlock.hidden = false;
    this.progressBlock.textContent = typeof progress === "string" ? progress : JSON.stringify(progress);
  }

  finished(event) {
    this.turn = event.turn_id;
    for (const part of event.message.content) if (part.type === "tool_result") this.result(part);
  }

  result(part) {
    this.approval.hidden = true;
    this.resultBlock.hidden = false;
    let text = part.content;
    try {
      text = JSON.stringify(JSON.parse(part.content), null, 2);
    } catch {
      // Not JSON: shown as it is.
    }
    this.resultBlock.replaceChildren(h("strong", {}, part.is_error ? "Error: " : "Result: "), text);
    this.setState(part.is_error ? "error" : "ok", part.is_error ? "failed" : "done");
  }

  turnEnded() {
    if (this.element.dataset.state === "approval") this.approval.hidden = true;
  }
}

// ---------------------------------------------------------------------------------------------
// The composer: Enter sends, @ completes agents' names, typing is announced to the others.

let lastTyping = 0;

function mentionQuery(input) {
  const before = input.value.slice(0, input.selectionStart);
  const match = /(?:^|\s)@([\p{L}\p{N}_.-]*)$/u.exec(before);
  return match ? match[1] : null;
}

function mentionChoices(query) {
  if (!page.view) return [];
  return [...page.view.participants.values()]
    .filter((p) => p.kind === "agent" && p.display_name.toLowerCase().startsWith(query.toLowerCase()));
}

function renderMentions() {
  const input = $("#composer-input");
  const list = $("#mention-list");
  const query = page.view?.conversation.kind === "multi_party" ? mentionQuery(input) : null;
  const choices = query === null ? [] : mentionChoices(query);
  list.replaceChildren();
  if (!choices.length) {
    list.hidden = true;
    input.setAttribute("aria-expanded", "false");
    input.removeAttribute("aria-activedescendant");
    return;
  }
  const active = Math.min(Number(list.dataset.active ?? 0), choices.length - 1);
  choices.forEach((p, index) => {
    list.append(h("li", {
      id: `mention-${index}`,
      role: "option",
      "aria-selected": index === active ? "true" : "false",
      dataset: { name: p.display_name },
      onmousedown: (event) => {
        event.preventDefault();
        acceptMention(p.display_name);
      },
    }, "@" + p.display_name));
  });
  list.dataset.active = String(active);
  list.hidden = false;
  input.setAttribute("aria-expanded", "true");
  input.setAttribute("aria-activedescendant", `mention-${active}`);
}

function acceptMention(name) {
  const input = $("#composer-input");
  const before = input.value.slice(0, input.selectionStart);
  const after = input.value.slice(input.selectionStart);
  const start = before.lastIndexOf("@");
  input.value = `${before.slice(0, start)}@${name} ${after}`;
  const caret = start + name.length + 2;
  input.setSelectionRange(caret, caret);
  $("#mention-list").dataset.active = "0";
  renderMentions();
}

function composerKeydown(event) {
  const list = $("#mention-list");
  if (!list.hidden) {
    const count = list.children.length;
    const active = Number(list.dataset.active ?? 0);
    if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      event.preventDefault();
      list.dataset.active = String((active + (event.key === "ArrowDown" ? 1 : count - 1)) % count);
      renderMentions();
      return;
    }
    if (event.key === "Enter" || event.key === "Tab") {
      event.preventDefault();
      acceptMention(list.children[active].dataset.name);
      return;
    }
    if (event.key === "Escape") {
      event.preventDefault();
      list.hidden = true;
      event.target.setAttribute("aria-expanded", "false");
      return;
    }
  }
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    $("#composer").requestSubmit();
  }
}

function composerInput() {
  renderMentions();
  const now = Date.now();
  if (page.view?.canPost && page.live?.open && now - lastTyping > 2500 && $("#composer-input").value) {
    lastTyping = now;
    page.live.request({ type: "typing", conversation_id: page.view.id }).catch(() => {});
  }
}

// ---------------------------------------------------------------------------------------------
// Dialogs: new conversation, rename, delete.

function agentFieldset(index) {
  const providerSelect = h("select", { name: "provider" },
    h("option", { value: "" }, "the configured default agent"),
    page.providers.map((p) => h("option", { value: p.name }, `${p.name} (${p.kind})`)));
  const modelSelect = h("select", { name: "model" });
  const modelLabel = h("label", { hidden: true }, "Model ", modelSelect);
  const prompt = h("textarea", { name: "system_prompt", rows: "2" });
  const promptLabel = h("label", { hidden: true }, "System prompt ", prompt);
  const tools = h("fieldset", { class: "tools", hidden: true },
    h("legend", {}, "Tools"),
    page.tools.map((t) => h("label", { class: "check", title: t.description }, h("input", { type: "checkbox", name: "tools", value: t.name }), t.name)));
  providerSelect.addEventListener("change", () => {
    const provider = page.providers.find((p) => p.name === providerSelect.value);
    const custom = Boolean(provider);
    modelLabel.hidden = promptLabel.hidden = tools.hidden = !custom;
    modelSelect.replaceChildren();
    if (provider) {
      const models = [...new Set([provider.default_model, ...(provider.models ?? [])].filter(Boolean))];
      for (const m of models) modelSelect.append(h("option", { value: m }, m));
    }
  });
  const names = ["assistant", "alice", "bob", "carol", "dave"];
  return h("fieldset", { class: "agent" },
    h("legend", {}, `Agent ${index + 1}`),
    h("label", {}, "Name ", h("input", { name: "agent_name", type: "text", value: names[index] ?? `agent${index + 1}`, required: true })),
    h("label", {}, "Provider ", providerSelect),
    modelLabel, promptLabel, tools,
    index > 0 ? h("button", { type: "button", class: "link", onclick: (event) => event.target.closest("fieldset").remove() }, `Remove agent ${index + 1}`) : null);
}

function openNewDialog() {
  const dialog = $("#new-dialog");
  const form = $("#new-form");
  form.reset();
  $("#agents").replaceChildren(agentFieldset(0));
  const people = $("#people");
  people.replaceChildren(h("legend", {}, "People"));
  if (page.accounts) {
    for (const account of page.accounts.filter((a) => a.id !== page.me.id && a.kind !== "admin")) {
      people.append(h("label", { class: "check" }, h("input", { type: "checkbox", name: "account", value: account.id, dataset: { name: account.name, kind: account.kind } }), `${account.display_name || account.name} (${account.kind})`));
    }
  }
  people.append(h("label", {}, "Account ids (comma separated) ", h("input", { type: "text", name: "account_ids" })));
  kindChanged();
  $("#new-error").textContent = "";
  dialog.showModal();
  $("#new-kind").focus();
}

function kindChanged() {
  const kind = $("#new-kind").value;
  $("#people").hidden = kind !== "multi_party";
  $("#policy-label").hidden = kind !== "multi_party";
  const agents = $("#agents");
  if (kind === "agent_agent" && agents.children.length < 2) agents.append(agentFieldset(agents.children.length));
  $("#add-agent").hidden = kind === "user_agent";
  if (kind === "user_agent") while (agents.children.length > 1) agents.lastElementChild.remove();
}

function agentSpec(fieldset) {
  const provider = $("[name=provider]", fieldset).value;
  if (!provider) return undefined;
  return {
    provider,
    model: $("[name=model]", fieldset).value,
    system_prompt: $("[name=system_prompt]", fieldset).value.trim() || undefined,
    tools: [...fieldset.querySelectorAll("[name=tools]:checked")].map((input) => input.value),
  };
}

async function createConversation(event) {
  event.preventDefault();
  const kind = $("#new-kind").value;
  const title = $("#new-title").value.trim() || undefined;
  const agents = [...$("#agents").children].map((fieldset) => ({
    kind: "agent",
    display_name: $("[name=agent_name]", fieldset).value.trim(),
    agent: agentSpec(fieldset),
  }));
  let body;
  if (kind === "user_agent") {
    body = { kind, title, agent: agents[0].agent, agent_name: agents[0].display_name };
  } else {
    const me = { kind: page.me.kind === "service" ? "service" : "user", display_name: page.me.display_name || page.me.name, role: "owner" };
    const people = [];
    if (kind === "multi_party") {
      for (const input of $("#people").querySelectorAll("[name=account]:checked")) {
        people.push({ kind: input.dataset.kind === "service" ? "service" : "user", display_name: input.dataset.name, account_id: input.value, role: "member" });
      }
      for (const id of $("[name=account_ids]").value.split(",").map((s) => s.trim()).filter(Boolean)) {
        people.push({ kind: "user", display_name: `user ${id.slice(-4)}`, account_id: id, role: "member" });
      }
    }
    body = { kind, title, participants: [me, ...people, ...agents] };
    if (kind === "multi_party") body.options = { responder_policy: $("#new-policy").value };
  }
  try {
    const created = await api("POST", "/v1/conversations", body);
    $("#new-dialog").close();
    await refreshList();
    await openConversation(created.id);
  } catch (error) {
    $("#new-error").textContent = describe(error);
  }
}

function openRename() {
  if (!page.view) return;
  $("#rename-input").value = page.view.conversation.title ?? "";
  $("#rename-error").textContent = "";
  $("#rename-dialog").showModal();
  $("#rename-input").select();
}

async function rename(event) {
  event.preventDefault();
  try {
    const updated = await api("PATCH", `/v1/conversations/${page.view.id}`, { title: $("#rename-input").value.trim() });
    page.view.conversation.title = updated.title;
    page.view.renderHeader();
    $("#rename-dialog").close();
    await refreshList();
  } catch (error) {
    $("#rename-error").textContent = describe(error);
  }
}

async function archive() {
  const view = page.view;
  if (!view) return;
  const action = view.conversation.status === "archived" ? "unarchive" : "archive";
  const updated = await attempt(() => api("POST", `/v1/conversations/${view.id}/${action}`));
  if (!updated) return;
  view.conversation.status = updated.status;
  view.renderHeader();
  await refreshList();
}

async function remove(event) {
  event.preventDefault();
  const view = page.view;
  $("#delete-dialog").close();
  if (!view) return;
  const done = await attempt(async () => {
    await api("DELETE", `/v1/conversations/${view.id}`);
    return true;
  });
  if (!done) return;
  closeConversation();
  await refreshList();
  notify("Conversation deleted.", { error: false });
}

// ---------------------------------------------------------------------------------------------
// Wiring.

function wire() {
  $("#signin-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("#key-input").value.trim();
    if (!key) {
      $("#signin-error").textContent = "Paste an API key (it starts with ck_): the first start printed one.";
      return;
    }
    storeKey(key);
    start();
  });
  $("#signout").addEventListener("click", () => signOut("Signed out: the key was removed from this browser."));
  $("#menu-toggle").addEventListener("click", () => {
    const open = document.body.classList.toggle("sidebar-open");
    $("#menu-toggle").setAttribute("aria-expanded", String(open));
    if (open) $("#new-conversation").focus();
  });
  $("#search").addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(refreshList, 250);
  });
  $("#new-conversation").addEventListener("click", openNewDialog);
  $("#new-kind").addEventListener("change", kindChanged);
  $("#add-agent").addEventListener("click", () => $("#agents").append(agentFieldset($("#agents").children.length)));
  $("#new-form").addEventListener("submit", createConversation);
  $("#new-cancel").addEventListener("click", () => $("#new-dialog").close());
  $("#rename").addEventListener("click", openRename);
  $("#rename-form").addEventListener("submit", rename);
  $("#rename-cancel").addEventListener("click", () => $("#rename-dialog").close());
  $("#archive").addEventListener("click", archive);
  $("#delete").addEventListener("click", () => $("#delete-dialog").showModal());
  $("#delete-form").addEventListener("submit", remove);
  $("#delete-cancel").addEventListener("click", () => $("#delete-dialog").close());
  $("#stop").addEventListener("click", () => page.view?.cancel());
  const input = $("#composer-input");
  input.addEventListener("keydown", composerKeydown);
  input.addEventListener("input", composerInput);
  input.addEventListener("blur", () => { $("#mention-list").hidden = true; });
  $("#composer").addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!page.view) return;
    if (await page.view.send(input.value)) input.value = "";
  });
  // A sign-in link opened in a tab that shows the page already.
  window.addEventListener("hashchange", () => {
    if (!location.hash.includes("key=")) return;
    page.live?.stop();
    closeConversation();
    start();
  });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && document.body.classList.contains("sidebar-open")) {
      document.body.classList.remove("sidebar-open");
      $("#menu-toggle").setAttribute("aria-expanded", "false");
      $("#menu-toggle").focus();
    }
  });
}

wire();
start();
