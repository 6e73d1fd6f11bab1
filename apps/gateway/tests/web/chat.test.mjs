// The chat page's scenarios in headless Chromium, run by apps/gateway/tests/it/browser.rs
// against a real `colloquy serve` and a mock model that answers by the marker in each prompt
// (`[stream]`, `[cancel]`, …). Each scenario prints `ok NAME` or `FAILED NAME`; the process
// exits 1 if any failed. To kill and restart the server it prints `colloquy-test: restart` and
// waits for `restarted` on stdin. Screenshots go to $COLLOQUY_SCREENSHOTS.

import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const base = process.env.COLLOQUY_URL;
const link = process.env.COLLOQUY_LINK;
const shots = process.env.COLLOQUY_SCREENSHOTS;
const adminKey = new URL(link).hash.replace("#key=", "");
const WAIT = 20_000;

const input = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const browser = await chromium.launch({ executablePath: process.env.COLLOQUY_CHROMIUM, headless: true });
const failures = [];
const problems = [];
/** The scenario running, to tell where a problem came from. */
let current = "";
/** Chromium reports (and blocks) the inline handlers of hostile HTML as soon as DOMPurify
 * parses it, in an inert document, before they are removed: expected only where the page is
 * shown such HTML on purpose. */
const HOSTILE = "model and user output cannot run script";

function assert(condition, message) {
  if (!condition) throw new Error(message);
}

function watch(page, who) {
  page.on("pageerror", (error) => problems.push(`${who} in "${current}": uncaught ${error.message}`));
  page.on("console", (message) => {
    const text = message.text();
    if (current === HOSTILE && text.startsWith("Executing inline event handler violates")) return;
    if (/Content.Security.Policy|Refused to/i.test(text)) problems.push(`${who} in "${current}": ${text}`);
  });
  page.on("dialog", (dialog) => {
    problems.push(`${who}: a ${dialog.type()} dialog opened: ${dialog.message()}`);
    dialog.dismiss();
  });
  return page;
}

async function shot(page, name) {
  await page.screenshot({ path: `${shots}/${name}.png`, fullPage: false });
}

async function scenario(name, page, run) {
  const started = Date.now();
  current = name;
  try {
    await run();
    console.log(`ok ${name} (${Date.now() - started} ms)`);
  } catch (error) {
    failures.push(name);
    console.log(`FAILED ${name}: ${error.stack}`);
    await shot(page, `failed-${name.replaceAll(" ", "-")}`).catch(() => {});
  }
}

async function rest(method, path, body, key = adminKey) {
  const response = await fetch(base + path, {
    method,
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  assert(response.ok, `${method} ${path}: ${response.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

/** A conversation made through the page's dialog; resolves once it is open. */
async function createConversation(page, { title, kind = "user_agent", people = [], agentName, provider, tools = [] }) {
  await page.getByRole("button", { name: "New conversation", exact: true }).click();
  const dialog = page.getByRole("dialog", { name: "New conversation" });
  await dialog.getByLabel("Kind").selectOption(kind);
  await dialog.getByLabel("Title").fill(title);
  for (const person of people) await dialog.getByLabel(new RegExp(`^${person} `)).check();
  if (agentName) await dialog.getByLabel("Name").first().fill(agentName);
  if (provider) {
    await dialog.getByLabel("Provider").first().selectOption(provider.name);
    await dialog.getByLabel("Model").first().selectOption(provider.model);
    await dialog.getByLabel("System prompt").first().fill(provider.systemPrompt);
    for (const tool of tools) await dialog.getByRole("checkbox", { name: tool, exact: true }).check();
  }
  await dialog.getByRole("button", { name: "Create" }).click();
  await page.locator("#conversation-title", { hasText: title }).waitFor({ timeout: WAIT });
  await page.locator("#conversation-list button[aria-current=true]", { hasText: title }).waitFor({ timeout: WAIT });
}

/** Types `text` and presses Enter; resolves once the message shows (with `shown` in it). */
async function send(page, text, shown = text) {
  const box = page.getByRole("combobox", { name: "Message" });
  await box.fill(text);
  await box.press("Enter");
  await page.locator(".message.user", { hasText: shown }).first().waitFor({ timeout: WAIT });
}

const assistant = (page, text) => page.locator(".message.assistant:not(.streaming)", { hasText: text });

// ---------------------------------------------------------------------------------------------

const admin = await browser.newContext({ viewport: { width: 1280, height: 860 } });
const page = watch(await admin.newPage(), "admin");

await scenario("sign in", page, async () => {
  const answer = await page.goto(base + "/");
  const csp = answer.headers()["content-security-policy"] ?? "";
  assert(csp.includes("script-src 'self'") && !csp.includes("unsafe-inline"), `a strict CSP on /: ${csp}`);
  const asset = await page.request.get(base + "/assets/app.js");
  assert(asset.status() === 200 && asset.headers()["content-type"].includes("javascript"), "assets are public");
  await page.getByLabel("API key").waitFor({ timeout: WAIT });
  await shot(page, "01-sign-in");

  // The printed link, opened afresh, signs in and takes the key out of the address bar.
  await page.goto("about:blank");
  await page.goto(link);
  await page.getByRole("button", { name: "Sign out" }).waitFor({ timeout: WAIT });
  assert((await page.evaluate(() => location.hash)) === "", "the key left the address bar");
  assert((await page.evaluate(() => localStorage.getItem("colloquy.key"))) === adminKey, "the key is stored");
  await page.locator("#me", { hasText: "admin" }).waitFor();

  // Signing out forgets it; pasting it signs in again.
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByLabel("API key").waitFor();
  assert((await page.evaluate(() => localStorage.getItem("colloquy.key"))) === null, "sign out clears the key");
  await page.getByLabel("API key").fill("ck_not-a-real-key-at-all");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.locator("#signin-error", { hasText: "refused" }).waitFor({ timeout: WAIT });
  await page.getByLabel("API key").fill(adminKey);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("button", { name: "Sign out" }).waitFor({ timeout: WAIT });
  await page.reload();
  await page.getByRole("button", { name: "Sign out" }).waitFor({ timeout: WAIT });
});

await scenario("create a conversation", page, async () => {
  await createConversation(page, {
    title: "Paris time",
    provider: { name: "mock", model: "gpt-test", systemPrompt: "Be brief." },
    tools: ["clock"],
  });
  const [conversation] = (await rest("GET", "/v1/conversations?q=Paris")).conversations;
  const agent = conversation.participants.find((p) => p.kind === "agent");
  assert(agent.agent.model === "gpt-test" && agent.agent.tools.join() === "clock", `agent spec: ${JSON.stringify(agent)}`);
  assert(agent.agent.system_prompt === "Be brief.", "system prompt kept");
  await page.locator("#participant-list li", { hasText: "assistant" }).waitFor();
});

await scenario("send and watch the streamed answer with its tool card", page, async () => {
  await send(page, "What time is it in Paris? [stream]");
  const card = page.locator('.tool-card[data-tool-call-id="call_clock"]');
  await card.waitFor({ timeout: WAIT });
  await page.locator(".message.streaming .markdown", { hasText: "time" }).waitFor({ timeout: WAIT });
  await shot(page, "02-streaming");
  await assistant(page, "card above.").waitFor({ timeout: WAIT });
  assert((await page.locator(".message.streaming").count()) === 0, "no message left streaming");
  assert((await assistant(page, "card above.").locator("strong", { hasText: "clock" }).count()) === 1, "Markdown rendered");
  assert((await card.getAttribute("data-state")) === "ok", "the tool call succeeded");
  await card.locator("summary").click();
  await card.locator(".arguments", { hasText: "Europe/Paris" }).waitFor();
  await card.locator(".result", { hasText: "Europe/Paris" }).waitFor();
  await page.locator(".turn-summary .usage", { hasText: "$" }).waitFor();
  await page.locator("#totals", { hasText: "Total:" }).waitFor();
  await shot(page, "03-tool-card");
});

await scenario("rename, branch from here, archive, delete, search", page, async () => {
  await page.getByRole("button", { name: "Rename" }).click();
  await page.getByRole("dialog").getByLabel("Title").fill("Paris time, renamed");
  await page.getByRole("dialog").getByRole("button", { name: "Rename" }).click();
  await page.locator("#conversation-list .title", { hasText: "Paris time, renamed" }).waitFor({ timeout: WAIT });

  await page.locator(".message.user").first().getByRole("button", { name: /Branch from here/ }).click();
  await page.locator(".notice", { hasText: "Branched" }).waitFor({ timeout: WAIT });
  await page.locator(".message.user").first().waitFor();
  assert((await page.locator(".message.assistant").count()) === 0, "the branch ends at the prompt");
  await page.getByRole("button", { name: "Archive" }).click();
  await page.locator("#conversation-status", { hasText: "archived" }).waitFor({ timeout: WAIT });
  assert(await page.getByRole("combobox", { name: "Message" }).isDisabled(), "an archived conversation takes no messages");
  await page.getByRole("button", { name: "Delete" }).click();
  await page.getByRole("dialog").getByRole("button", { name: "Delete" }).click();
  await page.locator(".notice", { hasText: "deleted" }).waitFor({ timeout: WAIT });

  await page.getByLabel("Search conversations").fill("renamed");
  await page.locator("#conversation-list .title", { hasText: "renamed" }).waitFor({ timeout: WAIT });
  await page.waitForFunction(() => document.querySelectorAll("#conversation-list .title").length === 1);
  await page.getByLabel("Search conversations").fill("nothing is called this");
  await page.locator("#conversation-list .empty", { hasText: "No conversation matches" }).waitFor({ timeout: WAIT });
  await page.getByLabel("Search conversations").fill("");
  await page.locator("#conversation-list .title", { hasText: "renamed" }).waitFor({ timeout: WAIT });
});

await scenario("cancel mid-stream, with a queued prompt", page, async () => {
  await createConversation(page, { title: "A long story" });
  await send(page, "Tell me a long story [cancel]");
  await page.locator(".message.streaming", { hasText: "Once upon a time" }).waitFor({ timeout: WAIT });
  await send(page, "[queued] and then?");
  await page.locator(".message.user.queued", { hasText: "[queued]" }).locator(".queued-badge").waitFor({ timeout: WAIT });
  await shot(page, "04-queued-while-streaming");
  await page.getByRole("button", { name: "Stop" }).click();
  await page.locator('.turn-summary[data-stop-reason="cancelled"]', { hasText: "cancelled" }).waitFor({ timeout: WAIT });
  await assistant(page, "Answered after the cancel.").waitFor({ timeout: WAIT });
  assert((await page.locator(".message.queued").count()) === 0, "the queued prompt joined the history");
  assert((await page.locator(".message.user", { hasText: "[queued]" }).count()) === 1, "shown once");
  await page.getByRole("button", { name: "Stop" }).waitFor({ state: "hidden" });
  await shot(page, "05-cancelled");
});

await scenario("approve a tool", page, async () => {
  await createConversation(page, { title: "Arithmetic" });
  await send(page, "What is 6*7? [approve]");
  const card = page.locator('.tool-card[data-tool-call-id="call_calc"][data-state="approval"]');
  await card.waitFor({ timeout: WAIT });
  await card.locator(".arguments", { hasText: "6*7" }).waitFor();
  await shot(page, "06-approval");
  await card.getByRole("button", { name: "Allow" }).click();
  await page.locator('.tool-card[data-tool-call-id="call_calc"][data-state="ok"] .result', { hasText: "42" }).waitFor({ timeout: WAIT });
  await assistant(page, "is 42.").waitFor({ timeout: WAIT });
});

await scenario("two people in one multi-party conversation see each other live", page, async () => {
  const bob = await rest("POST", "/v1/accounts", { name: "bob", kind: "user", display_name: "bob" });
  const { secret: bobKey } = await rest("POST", `/v1/accounts/${bob.id}/keys`, {});
  await page.reload();
  await page.getByRole("button", { name: "New conversation", exact: true }).waitFor({ timeout: WAIT });
  await createConversation(page, { title: "Team", kind: "multi_party", people: ["bob"], agentName: "helper" });

  const other = await browser.newContext({ viewport: { width: 1024, height: 760 } });
  const bobPage = watch(await other.newPage(), "bob");
  await bobPage.goto(`${base}/#key=${bobKey}`);
  await bobPage.locator("#conversation-list .title", { hasText: "Team" }).click({ timeout: WAIT });
  await bobPage.locator("#conversation-title", { hasText: "Team" }).waitFor({ timeout: WAIT });

  // Presence both ways, roles shown.
  await page.locator('#participant-list li[data-presence="online"]', { hasText: "bob" }).waitFor({ timeout: WAIT });
  await bobPage.locator('#participant-list li[data-presence="online"]', { hasText: "admin" }).waitFor({ timeout: WAIT });
  await page.locator("#participant-list li", { hasText: "bob" }).locator(".role", { hasText: "member" }).waitFor();
  await page.locator("#participant-list li", { hasText: "admin" }).locator(".role", { hasText: "owner" }).waitFor();

  // @mention completion by keyboard, typing seen by the other side.
  const box = bobPage.getByRole("combobox", { name: "Message" });
  await box.click();
  await box.pressSequentially("@hel");
  await bobPage.getByRole("option", { name: "@helper" }).waitFor({ timeout: WAIT });
  await box.press("Enter");
  assert((await box.inputValue()) === "@helper ", `completed: ${await box.inputValue()}`);
  await box.pressSequentially("hi from bob [multi]");
  await page.locator("#typing", { hasText: "bob is typing" }).waitFor({ timeout: WAIT });
  await shot(page, "07-multi-party-typing");
  await box.press("Enter");
  for (const [p, who] of [[page, "admin"], [bobPage, "bob"]]) {
    const message = p.locator(".message.user", { hasText: "hi from bob" });
    await message.waitFor({ timeout: WAIT });
    assert((await message.locator(".speaker").innerText()) === "bob", `${who} sees bob named`);
    const reply = assistant(p, "Hello bob and admin!");
    await reply.waitFor({ timeout: WAIT });
    assert((await reply.locator(".speaker").innerText()) === "helper", `${who} sees helper named`);
    const colours = await p.evaluate(() => [...document.querySelectorAll("#messages .message")].map((m) => m.style.getPropertyValue("--speaker")));
    assert(colours.every(Boolean) && new Set(colours).size === 2, `${who}: each speaker coloured apart: ${colours}`);
  }
  await shot(page, "08-multi-party-admin");
  await shot(bobPage, "09-multi-party-bob");
  await other.close();
});

await scenario(HOSTILE, page, async () => {
  await createConversation(page, { title: "HTML" });
  await send(page, `[xss] <img src=x onerror="window.__pwned='user'"> [x](javascript:window.__pwned='user-link')`, "[xss]");
  const reply = assistant(page, "bold text");
  await reply.waitFor({ timeout: WAIT });
  for (const link of await page.locator("#messages a").all()) await link.click({ timeout: 2000 }).catch(() => {});
  const found = await page.evaluate(() => ({
    pwned: window.__pwned ?? null,
    handlers: [...document.querySelectorAll("#messages *")].flatMap((e) => [...e.attributes].filter((a) => a.name.startsWith("on")).map((a) => a.name)),
    scripts: document.querySelectorAll("#messages script, #messages svg, #messages iframe").length,
    hrefs: [...document.querySelectorAll("#messages [href], #messages [src]")].map((e) => e.getAttribute("href") ?? e.getAttribute("src")),
    bold: document.querySelectorAll("#messages .message.assistant strong").length,
  }));
  assert(found.pwned === null, `script ran: ${found.pwned}`);
  assert(found.handlers.length === 0, `event handlers kept: ${found.handlers}`);
  assert(found.scripts === 0, "no script, svg or iframe");
  assert(found.hrefs.every((h) => !/^\s*javascript:/i.test(h) && h !== "x"), `unsafe URLs kept: ${found.hrefs}`);
  assert(found.bold === 1, "Markdown still rendered");
  await shot(page, "10-sanitized");
});

await scenario("the server restarted mid-turn: the page recovers with nothing duplicated", page, async () => {
  await createConversation(page, { title: "Crash" });
  await send(page, "Write slowly [restart]");
  await page.locator(".message.streaming", { hasText: "Writing slowly" }).waitFor({ timeout: WAIT });
  await page.evaluate(() => {
    const banner = document.getElementById("banner");
    window.__sawReconnecting = false;
    new MutationObserver(() => {
      if (!banner.hidden && /reconnecting/i.test(banner.textContent)) window.__sawReconnecting = true;
    }).observe(banner, { attributes: true, childList: true, characterData: true, subtree: true });
  });
  console.log("colloquy-test: restart");
  await page.waitForFunction(() => window.__sawReconnecting, null, { timeout: WAIT });
  await shot(page, "11-reconnecting");
  const { value } = await input.next();
  assert(value === "restarted", `the harness answered ${value}`);
  await assistant(page, "Recovered after the restart.").waitFor({ timeout: 40_000 });
  await page.locator("#banner").waitFor({ state: "hidden", timeout: WAIT });
  const conversationId = await page.locator("#conversation-list button[aria-current=true]").getAttribute("data-conversation-id");
  const { messages } = await rest("GET", `/v1/conversations/${conversationId}/messages`);
  const stored = messages.filter((m) => m.role !== "tool").map((m) => m.id);
  const shown = await page.evaluate(() => [...document.querySelectorAll("#messages .message")].map((m) => m.dataset.messageId));
  assert(JSON.stringify(shown) === JSON.stringify(stored), `shown ${shown} but stored ${stored}`);
  assert((await page.locator(".message.streaming").count()) === 0, "no half-written message left");
  assert((await page.locator(".message.user", { hasText: "Write slowly" }).count()) === 1, "the prompt once");
  assert((await page.locator(".turn-summary").count()) === 1, "one turn");
  const conversation = await rest("GET", `/v1/conversations/${conversationId}`);
  const lastSeq = await page.locator("#messages").getAttribute("data-last-seq");
  assert(Number(lastSeq) === conversation.last_seq, `the page saw up to seq ${lastSeq} of ${conversation.last_seq}`);
  await shot(page, "12-recovered");
});

await scenario("keyboard alone, labels for screen readers", page, async () => {
  const unlabelled = await page.evaluate(() =>
    [...document.querySelectorAll("button, input, select, textarea, summary, [role=combobox]")]
      .filter((e) => e.offsetParent !== null)
      .filter((e) => {
        const labelled = e.getAttribute("aria-label") || e.getAttribute("aria-labelledby") || e.labels?.length || e.closest("label");
        return !labelled && !e.textContent.trim();
      })
      .map((e) => e.outerHTML.slice(0, 80)),
  );
  assert(unlabelled.length === 0, `controls without a name: ${unlabelled}`);
  assert((await page.getByRole("log", { name: "Messages" }).count()) === 1, "messages are a live log");
  await page.locator("body").focus();
  await page.evaluate(() => document.activeElement.blur());
  let reached = false;
  for (let i = 0; i < 12 && !reached; i++) {
    await page.keyboard.press("Tab");
    reached = await page.evaluate(() => document.activeElement?.id === "new-conversation");
  }
  assert(reached, "Tab reaches New conversation");
  await page.keyboard.press("Enter");
  await page.getByRole("dialog", { name: "New conversation" }).waitFor();
  assert(await page.evaluate(() => document.activeElement?.id === "new-kind"), "the dialog takes the focus");
  await page.keyboard.press("Escape");
  await page.getByRole("dialog", { name: "New conversation" }).waitFor({ state: "hidden" });
  // A conversation opens from the keyboard and the focus goes to the message box.
  await page.locator("#conversation-list button").first().focus();
  await page.keyboard.press("Enter");
  await page.waitForFunction(() => document.activeElement?.id === "composer-input");
});

await scenario("usable at phone width", page, async () => {
  const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
  const small = watch(await phone.newPage(), "phone");
  await small.goto(link);
  await small.getByRole("button", { name: "Conversations" }).click({ timeout: WAIT });
  await small.locator("#conversation-list .title", { hasText: "Arithmetic" }).click();
  await small.locator("#conversation-title", { hasText: "Arithmetic" }).waitFor();
  await assistant(small, "is 42.").waitFor({ timeout: WAIT });
  const overflow = await small.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert(overflow <= 0, `the page is ${overflow}px wider than the phone`);
  assert(await small.getByRole("button", { name: "Send" }).isVisible(), "the composer fits");
  await shot(small, "13-phone");
  await phone.close();
});

await browser.close();
if (problems.length) {
  console.log(`FAILED page problems:\n  ${problems.join("\n  ")}`);
  failures.push("page problems");
}
console.log(failures.length ? `${failures.length} scenario(s) failed: ${failures.join(", ")}` : "every scenario passed");
process.exit(failures.length ? 1 : 0);
