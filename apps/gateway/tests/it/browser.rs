//! The chat page at `/` in a real browser: headless Chromium (Debian's `chromium`), driven by
//! playwright-core from npm (`tests/web/chat.test.mjs`), against the `colloquy` binary and a
//! mock OpenAI-compatible server that answers by prompt. The binary runs as a process so the
//! test can kill it mid-turn and start it again on the same port and database.
//!
//! npm packages (playwright-core, and marked and DOMPurify, whose files the page vendors) are
//! installed at the versions of `tests/web/package-lock.json` into `target/web-tests`, never
//! into the repository. Screenshots of the main states go to `target/web-screenshots`.
//!
//! Where Chromium or Node.js is missing these tests say so and pass (`cargo xtask test`);
//! with `COLLOQUY_REQUIRE_BROWSER=1` (`cargo xtask ci`) they fail instead.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use colloquy_tests::mock_openai::chunks;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::OnceCell;

use crate::process::{Served, start_with};

/// How long the whole browser run may take before it counts as hung.
const RUN_LIMIT: Duration = Duration::from_secs(300);

/// The model every conversation of these tests uses.
const MODEL: &str = "gpt-test";

/// Whether a missing browser fails the test instead of skipping it.
fn required() -> bool {
    std::env::var("COLLOQUY_REQUIRE_BROWSER").is_ok_and(|value| value == "1")
}

/// Passes with a message, or fails under `COLLOQUY_REQUIRE_BROWSER=1`.
fn unavailable(why: &str) -> anyhow::Result<()> {
    if required() {
        bail!("{why}; COLLOQUY_REQUIRE_BROWSER=1 requires the browser tests (.ci/run installs chromium)");
    }
    eprintln!(
        "SKIPPED the chat page's browser tests: {why}. Install it (`apt-get install chromium nodejs npm`) to run \
         them; `cargo xtask ci` requires them"
    );
    Ok(())
}

/// The first of `names` found on PATH.
fn on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).flat_map(|dir| names.iter().map(move |name| dir.join(name))).find(|p| p.is_file())
}

/// The Chromium to drive: `COLLOQUY_CHROMIUM`, or `chromium` on PATH.
fn chromium() -> Option<PathBuf> {
    std::env::var_os("COLLOQUY_CHROMIUM").map(PathBuf::from).or_else(|| on_path(&["chromium", "chromium-browser"]))
}

/// The target directory (`CARGO_TARGET_DIR`, or the workspace's `target/`).
fn target_dir() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).to_path_buf()
}

/// The test's own files: `package.json`, its lock and the browser script.
fn web_tests_source() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/web")
}

/// Installs the locked npm packages into `target/web-tests` once per run (again only when the
/// lock changed) and returns that directory.
async fn npm_packages() -> anyhow::Result<PathBuf> {
    static INSTALLED: OnceCell<PathBuf> = OnceCell::const_new();
    INSTALLED
        .get_or_try_init(|| async {
            let dir = target_dir().join("web-tests");
            std::fs::create_dir_all(&dir)?;
            let lock = std::fs::read(web_tests_source().join("package-lock.json"))?;
            let installed = dir.join("node_modules/.package-lock.json");
            let fresh =
                std::fs::read(dir.join("package-lock.json")).is_ok_and(|old| old == lock) && installed.is_file();
            if !fresh {
                std::fs::copy(web_tests_source().join("package.json"), dir.join("package.json"))?;
                std::fs::write(dir.join("package-lock.json"), &lock)?;
                let status = tokio::process::Command::new("npm")
                    .args(["ci", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error"])
                    .current_dir(&dir)
                    .status()
                    .await
                    .context("cannot run npm")?;
                if !status.success() {
                    bail!("`npm ci` in {} failed with {status}: is the npm registry reachable?", dir.display());
                }
            }
            Ok(dir)
        })
        .await
        .cloned()
}

/// The page serves marked and DOMPurify as the very files their npm packages publish, at the
/// versions `package-lock.json` pins: no hand edits, no drift.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_vendored_scripts_are_the_npm_packages_files_byte_for_byte() -> anyhow::Result<()> {
    if on_path(&["npm"]).is_none() {
        return unavailable("npm is not installed");
    }
    let modules = npm_packages().await?.join("node_modules");
    let vendor = Path::new(env!("CARGO_MANIFEST_DIR")).join("web/assets/vendor");
    let pairs = [
        ("marked.esm.js", "marked/lib/marked.esm.js"),
        ("marked.LICENSE", "marked/LICENSE"),
        ("purify.es.mjs", "dompurify/dist/purify.es.mjs"),
        ("dompurify.LICENSE", "dompurify/LICENSE"),
    ];
    for (vendored, published) in pairs {
        let ours = std::fs::read(vendor.join(vendored)).with_context(|| format!("web/assets/vendor/{vendored}"))?;
        let theirs = std::fs::read(modules.join(published))?;
        assert!(
            ours == theirs,
            "web/assets/vendor/{vendored} differs from node_modules/{published}: copy it from the package \
             (after changing a version in tests/web/package.json, run `npm install` there and copy the files)"
        );
    }
    let mut vendored: Vec<String> = std::fs::read_dir(&vendor)?
        .filter_map(|entry| entry.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    vendored.sort();
    let mut checked: Vec<String> = pairs.iter().map(|(name, _)| (*name).to_owned()).collect();
    checked.sort();
    assert_eq!(vendored, checked, "every vendored file is checked against its package");
    Ok(())
}

/// One scripted answer of the mock model.
struct Reply {
    /// `chat.completion.chunk` objects, sent one by one.
    chunks: Vec<Value>,
    /// Wait before each chunk, so a person (and the test) can watch tokens arrive.
    pace: Duration,
    /// Whether the stream then hangs instead of ending (a model still writing).
    stall: bool,
}

impl Reply {
    fn text(pieces: &[&str]) -> Self {
        Self { chunks: chunks::text(MODEL, pieces, Some((40, 12))), pace: Duration::from_millis(60), stall: false }
    }

    fn tool(id: &str, name: &str, arguments: &str) -> Self {
        Self {
            chunks: chunks::tool_calls(MODEL, &[(id, name, &[arguments])], Some((30, 8))),
            pace: Duration::from_millis(60),
            stall: false,
        }
    }

    /// The first pieces of a text reply, then nothing more: the turn stays running.
    fn stalled(pieces: &[&str]) -> Self {
        let mut chunks = chunks::text(MODEL, pieces, None);
        chunks.truncate(pieces.len() + 1);
        Self { chunks, pace: Duration::from_millis(100), stall: true }
    }
}

/// Replies by prompt: a request is answered by the next reply of the first rule whose marker
/// its newest user message contains (a tool round's follow-up request has the same prompt).
type Rules = Arc<Mutex<Vec<(&'static str, VecDeque<Reply>)>>>;

fn rules() -> Rules {
    let xss = concat!(
        "Here is some HTML: <img src=x onerror=\"window.__pwned = 'img'\"> and ",
        "[a link](javascript:window.__pwned='markdown-link') and ",
        "<a href=\"javascript:window.__pwned='html-link'\">another</a> ",
        "<script>window.__pwned = 'script'</script> ",
        "<svg><a xlink:href=\"javascript:window.__pwned='svg'\">svg</a></svg> and **bold text**."
    );
    let rules: Vec<(&'static str, Vec<Reply>)> = vec![
        (
            "[stream]",
            vec![
                Reply::tool("call_clock", "clock", "{\"time_zone\": \"Europe/Paris\"}"),
                Reply::text(&["The ", "time ", "in ", "Paris ", "is ", "on ", "the ", "**clock** ", "card ", "above."]),
            ],
        ),
        ("[cancel]", vec![Reply::stalled(&["Once ", "upon ", "a ", "time"])]),
        ("[queued]", vec![Reply::text(&["Answered ", "after ", "the ", "cancel."])]),
        (
            "[approve]",
            vec![
                Reply::tool("call_calc", "calculator", "{\"expression\": \"6*7\"}"),
                Reply::text(&["6 ", "times ", "7 ", "is ", "42."]),
            ],
        ),
        ("[multi]", vec![Reply::text(&["Hello ", "bob ", "and ", "admin!"])]),
        ("[xss]", vec![Reply::text(&[xss])]),
        (
            "[restart]",
            vec![
                Reply::stalled(&["Writing ", "slowly ", "before ", "the ", "crash"]),
                Reply::text(&["Recovered ", "after ", "the ", "restart."]),
            ],
        ),
    ];
    Arc::new(Mutex::new(rules.into_iter().map(|(marker, replies)| (marker, replies.into())).collect()))
}

/// The text of the newest user message of a chat completions request.
fn last_user_text(request: &Value) -> String {
    let messages = request["messages"].as_array().cloned().unwrap_or_default();
    let Some(user) = messages.iter().rev().find(|m| m["role"] == "user") else { return String::new() };
    match &user["content"] {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts.iter().filter_map(|p| p["text"].as_str()).collect::<Vec<_>>().join(" "),
        _ => String::new(),
    }
}

async fn completions(State(rules): State<Rules>, body: Bytes) -> Response {
    let request: Value = serde_json::from_slice(&body).unwrap_or_default();
    let prompt = last_user_text(&request);
    let reply = {
        let mut rules = rules.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        rules.iter_mut().find(|(marker, _)| prompt.contains(marker)).and_then(|(_, replies)| replies.pop_front())
    };
    let Some(Reply { chunks, pace, stall }) = reply else {
        let message = format!("the browser test's mock model has no reply left for the prompt {prompt:?}");
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({ "error": { "message": message, "type": "invalid_request_error" } })),
        )
            .into_response();
    };
    let events = futures::stream::iter(chunks).then(move |chunk| async move {
        tokio::time::sleep(pace).await;
        Ok::<_, Infallible>(format!("data: {chunk}\n\n"))
    });
    let body = if stall {
        Body::from_stream(events.chain(futures::stream::pending()))
    } else {
        Body::from_stream(events.chain(futures::stream::once(async { Ok("data: [DONE]\n\n".to_owned()) })))
    };
    ([(header::CONTENT_TYPE, "text/event-stream"), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

/// Starts the mock model on a free port; returns its API root.
async fn mock_model() -> anyhow::Result<String> {
    let data: Vec<Value> = [MODEL, "gpt-other"]
        .iter()
        .map(|id| json!({ "id": id, "object": "model", "created": 1_700_000_000, "owned_by": "mock" }))
        .collect();
    let models = json!({ "object": "list", "data": data });
    let app = axum::Router::new()
        .route("/v1/chat/completions", post(completions))
        .route("/v1/models", get(move || async move { axum::Json(models) }))
        .with_state(rules());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(format!("http://{addr}/v1"))
}

/// `colloquy serve` on `listen` with the test's configuration.
async fn serve(config: &Path, database: &Path, model: &str, listen: &str) -> anyhow::Result<Served> {
    let config = config.to_string_lossy();
    start_with(&["--config", &config, "serve", "--listen", listen], database, model, &[]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chat_page_works_in_a_real_browser() -> anyhow::Result<()> {
    let Some(chromium) = chromium() else { return unavailable("chromium is not installed") };
    if on_path(&["node"]).is_none() || on_path(&["npm"]).is_none() {
        return unavailable("Node.js (node and npm) is not installed");
    }
    let packages = npm_packages().await?;
    let script = packages.join("chat.test.mjs");
    std::fs::copy(web_tests_source().join("chat.test.mjs"), &script)?;
    let screenshots = target_dir().join("web-screenshots");
    std::fs::create_dir_all(&screenshots)?;

    let model = mock_model().await?;
    let dir = tempfile::tempdir()?;
    let database = dir.path().join("colloquy.db");
    let config = dir.path().join("colloquy.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\ntools = [\"clock\", \"calculator\"]\n\n\
             [providers.mock]\npricing.{MODEL} = {{ input = 2.5, output = 10.0 }}\n\n\
             [tools]\nrequire_approval = [\"calculator\"]\n\n\
             [limits]\nrequests_per_second_per_key = 1000\nframes_per_second = 1000\n"
        ),
    )?;
    let mut served = serve(&config, &database, &model, "127.0.0.1:0").await?;
    let link = served.printed_line(|line| line.contains("/#key=")).await?;
    let link = link.split_whitespace().find(|word| word.starts_with("http://")).context("no link")?.to_owned();
    let addr = served.addr.clone();

    let mut node = tokio::process::Command::new("node")
        .arg(&script)
        .current_dir(&packages)
        .env("COLLOQUY_LINK", &link)
        .env("COLLOQUY_URL", format!("http://{addr}"))
        .env("COLLOQUY_CHROMIUM", &chromium)
        .env("COLLOQUY_SCREENSHOTS", &screenshots)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start node")?;
    let mut stdin = node.stdin.take().context("no stdin")?;
    let mut lines = BufReader::new(node.stdout.take().context("no stdout")?).lines();
    let run = async {
        while let Some(line) = lines.next_line().await? {
            println!("browser: {line}");
            if line.trim() == "colloquy-test: restart" {
                // Killed mid-turn, as a crash would; started again on the same port and file.
                served.child.kill().await?;
                served = serve(&config, &database, &model, &addr).await?;
                stdin.write_all(b"restarted\n").await?;
                stdin.flush().await?;
            }
        }
        node.wait().await.map_err(anyhow::Error::from)
    };
    let status = tokio::time::timeout(RUN_LIMIT, run).await.context("the browser run hung")??;
    assert!(
        status.success(),
        "the browser scenarios failed ({status}): see the output above and {}",
        screenshots.display()
    );
    Ok(())
}

/// Without a browser too: the page and its assets need no key and carry the strict policy,
/// everything with data still needs one, and the page is not part of the REST API's document.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_public_and_served_under_a_strict_content_security_policy() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let served = crate::process::start(&dir.path().join("colloquy.db"), "http://127.0.0.1:9/v1", &[]).await?;
    let http = reqwest::Client::new();
    let url = |path: &str| format!("http://{}{path}", served.addr);

    let page = http.get(url("/")).send().await?;
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"].to_str()?.to_owned();
    assert!(csp.contains("script-src 'self'") && csp.contains("object-src 'none'"), "{csp}");
    assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{csp}");
    assert!(page.headers()["content-type"].to_str()?.starts_with("text/html"));
    assert_eq!(page.headers()["x-content-type-options"], "nosniff");
    let html = page.text().await?;
    assert!(html.contains(r#"<script type="module" src="/assets/app.js"></script>"#), "{html}");
    let handler = html.split(" on").skip(1).any(|rest| {
        let name = rest.chars().take_while(char::is_ascii_alphabetic).count();
        name > 0 && rest[name..].starts_with('=')
    });
    assert!(!html.contains("<script>") && !handler, "no inline script or handler in the page");

    let script = http.get(url("/assets/app.js")).send().await?;
    assert_eq!(script.status(), 200);
    assert!(script.headers()["content-type"].to_str()?.contains("javascript"));
    let etag = script.headers()["etag"].clone();
    let again = http.get(url("/assets/app.js")).header("if-none-match", etag).send().await?;
    assert_eq!(again.status(), 304, "a page the browser has is not sent again");

    let missing = http.get(url("/assets/nothing.js")).send().await?;
    assert_eq!(missing.status(), 404);
    let body: Value = missing.json().await?;
    assert_eq!(body["error"]["code"], "not_found");

    let data = http.get(url("/v1/conversations")).send().await?;
    assert_eq!(data.status(), 401, "data still needs a key");
    let document = http.get(url("/openapi.json")).send().await?.text().await?;
    assert!(!document.contains("/assets"), "the page is not part of the REST API");
    Ok(())
}
