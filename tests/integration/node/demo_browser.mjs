// Headless Chromium driven through playwright-core, for test_demo_browser.py:
// `node demo_browser.mjs`. The test sends one JSON command per line on stdin
// and reads one JSON line per answer on stdout:
//   {"id":N,"cmd":"open","url":U}                      load U in the page, wait for load
//   {"id":N,"cmd":"eval","fn":"(arg) => ...","arg":A}  run fn(A) in the page, answer its value
//   {"id":N,"cmd":"wait","fn":F,"arg":A,"ms":MS}       poll fn(A) until truthy, answer it
//   {"id":N,"cmd":"fill"|"select","selector":S,"value":V} / {"id":N,"cmd":"click","selector":S}
//   {"id":N,"cmd":"screenshot","path":P}               a PNG of the whole page
//   {"id":N,"cmd":"viewport","width":W,"height":H}     resize the window (the page reflows)
//   {"id":N,"cmd":"close"}                             close the browser and exit
// Answers are {"id":N,"ok":true,"value":V} or {"id":N,"ok":false,"error":E};
// page errors and console messages come as {"event":"pageerror"|"console",...},
// each WebSocket the page opens as {"event":"websocket","url":U} and each
// text frame it sends there as {"event":"wsframe","url":U,"payload":P}.
//
// Chromium: DANMAKU_CHROMIUM or /usr/bin/chromium (Debian's package), with a
// fresh profile in a temporary directory, and the flags that keep it from
// reaching for the network (the tests run on loopback only).
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";

const EXECUTABLE = process.env.DANMAKU_CHROMIUM || "/usr/bin/chromium";
const ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync"];
const POLL_MS = 50;

function emit(obj) {
    process.stdout.write(JSON.stringify(obj) + "\n");
}

let chromium;
try {
    ({ chromium } = await import("playwright-core"));
} catch (e) {
    emit({ event: "fatal", error: "playwright-core is not installed: run `npm ci` in " +
                                   "tests/integration/node (" + e.message + ")" });
    process.exit(3);
}

const profile = mkdtempSync(join(tmpdir(), "dm-chromium-"));
let context;
try {
    context = await chromium.launchPersistentContext(profile, {
        executablePath: EXECUTABLE, headless: true, args: ARGS,
        viewport: { width: 1280, height: 860 },
    });
} catch (e) {
    rmSync(profile, { recursive: true, force: true });
    emit({ event: "fatal", error: `cannot start Chromium (${EXECUTABLE}): ${e.message}` });
    process.exit(3);
}
const page = context.pages()[0] || await context.newPage();
page.on("pageerror", (e) => emit({ event: "pageerror", message: String(e) }));
page.on("console", (m) => emit({ event: "console", type: m.type(), text: m.text() }));
page.on("websocket", (ws) => {
    emit({ event: "websocket", url: ws.url() });
    ws.on("framesent", (f) => emit({ event: "wsframe", url: ws.url(), payload: String(f.payload) }));
});
emit({ event: "ready", version: context.browser()?.version() ?? "" });

// Runs in the page through the DevTools protocol, not the page's own eval,
// so the page's Content-Security-Policy (no 'unsafe-eval') stays as served.
function call(fn, arg) {
    return page.evaluate(`(${fn})(${JSON.stringify(arg ?? null)})`);
}

async function poll(fn, arg, timeout) {
    const deadline = Date.now() + (timeout ?? 10000);
    let last;
    for (;;) {
        last = await call(fn, arg);
        if (last) return last;
        if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms: ${fn}`);
        await new Promise((r) => setTimeout(r, POLL_MS));
    }
}

async function run(c) {
    switch (c.cmd) {
    case "open":
        await page.goto(c.url, { waitUntil: "load", timeout: 30000 });
        return null;
    case "eval":
        return call(c.fn, c.arg);
    case "wait":
        return poll(c.fn, c.arg, c.ms);
    case "fill":
        await page.fill(c.selector, c.value);
        return null;
    case "select":
        await page.selectOption(c.selector, c.value);
        return null;
    case "click":
        await page.click(c.selector);
        return null;
    case "viewport":
        await page.setViewportSize({ width: c.width, height: c.height });
        return null;
    case "screenshot":
        await page.screenshot({ path: c.path, fullPage: true });
        return c.path;
    default:
        throw new Error("unknown command " + c.cmd);
    }
}

async function shutdown(code) {
    try {
        await context.close();
    } finally {
        rmSync(profile, { recursive: true, force: true });
        process.exit(code);
    }
}

// One command at a time, in order.
const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
    if (!line.trim()) continue;
    const c = JSON.parse(line);
    if (c.cmd === "close") break;
    try {
        emit({ id: c.id, ok: true, value: (await run(c)) ?? null });
    } catch (e) {
        emit({ id: c.id, ok: false, error: String(e && e.message || e) });
    }
}
await shutdown(0);
