// Messages as Markdown, made safe: marked renders, DOMPurify keeps only inert HTML. Nothing a
// model or a person writes can run script: no event handlers, no `javascript:` or other
// non-http(s)/mailto links, no forms, no styles; every link opens in a new tab without the
// page's window. The page's Content-Security-Policy (no inline script) stands behind this.

import { Marked } from "./vendor/marked.esm.js";
import DOMPurify from "./vendor/purify.es.mjs";

const marked = new Marked({ gfm: true, breaks: true, async: false });

const SAFE_URL = /^(?:https?:|mailto:|#|\/(?!\/))/i;

DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  for (const name of ["href", "src"]) {
    const value = node.getAttribute?.(name);
    if (value !== null && value !== undefined && !SAFE_URL.test(value.trim())) node.removeAttribute(name);
  }
  if (node.tagName === "A" && node.hasAttribute("href")) {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer nofollow");
  }
});

const POLICY = {
  ALLOWED_TAGS: [
    "a", "b", "blockquote", "br", "code", "del", "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i",
    "img", "li", "ol", "p", "pre", "s", "strong", "sub", "sup", "table", "tbody", "td", "th", "thead",
    "tr", "ul",
  ],
  ALLOWED_ATTR: ["href", "src", "alt", "title", "start", "align"],
  ALLOW_DATA_ATTR: false,
};

/** Markdown as a sanitized fragment, ready to append. */
export function renderMarkdown(text) {
  const html = marked.parse(String(text ?? ""));
  return DOMPurify.sanitize(html, { ...POLICY, RETURN_DOM_FRAGMENT: true });
}
