// Browser test of the live ticker page (GET /): headless Debian Chromium
// driven by playwright-core. Starts `tickwire serve` (bundled feed), checks
// that ticks and latency figures appear over WebSocket, over forced SSE
// (?transport=sse) and over the automatic fallback when WebSocket fails,
// checks the depth ladder and its in-page checksum verification on the
// bundled mbo recording, and saves docs/ticker.png and docs/ticker-book.png.
//
//   cargo build && (cd tools/browser-test && npm ci && node ticker.test.mjs)
//
// TICKWIRE_BIN overrides the binary (default target/debug/tickwire),
// CHROMIUM the browser (default /usr/bin/chromium).
import { chromium } from "playwright-core";
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "../..");
const bin = process.env.TICKWIRE_BIN || path.join(root, "target/debug/tickwire");
const browserPath = process.env.CHROMIUM || "/usr/bin/chromium";
const shot = path.join(root, "docs/ticker.png");

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "tickwire-browser-"));
const addrFile = path.join(tmp, "addr");
let server, bookServer, context;
let failed = false;

// The whole run is bounded.
const overall = setTimeout(() => { console.error("FAIL: browser test took over 90 s"); cleanup(1); }, 90_000);

function cleanup(code) {
  clearTimeout(overall);
  for (const p of [server, bookServer]) if (p && p.exitCode === null) p.kill("SIGTERM");
  const done = () => { fs.rmSync(tmp, { recursive: true, force: true }); process.exit(code); };
  if (context) context.close().catch(() => {}).finally(done); else done();
}

function check(cond, what) {
  if (!cond) { failed = true; console.error("FAIL:", what); } else console.log("ok:", what);
}

async function waitFor(what, fn, ms) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

// Starts `tickwire serve` with `extra` arguments; returns [process, address].
async function spawnServer(file, extra) {
  const proc = spawn(bin, ["serve", "--listen", "127.0.0.1:0", "--addr-file", file, ...extra], {
    stdio: ["ignore", "ignore", "inherit"],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG || "warn" },
  });
  proc.on("exit", (c) => { if (c !== null && c !== 0) console.error("server exited with", c); });
  const addr = await waitFor("server address file", () => {
    try { const a = fs.readFileSync(file, "utf8").trim(); return a || null; } catch { return null; }
  }, 10_000);
  return [proc, addr];
}

async function startServer(extra = []) {
  let addr;
  [server, addr] = await spawnServer(addrFile, extra);
  return addr;
}

// The depth ladder on the bundled mbo recording (ESM4), played in a loop:
// levels render, update live, and every checksum verifies in the page.
async function ladderWorks(page, label) {
  const first = await waitFor(`${label}: ladder rows`, () => page.evaluate(() => {
    const b = window.tickwire.book;
    return document.querySelectorAll("#ladder tbody tr").length >= 20 && b.verified > 0 ? b : null;
  }), 10_000);
  const later = await waitFor(`${label}: live book updates`, () => page.evaluate((seq) => {
    const b = window.tickwire.book;
    return b.seq > seq && b.verified > 20 ? b : null;
  }, first.seq), 15_000);
  check(later.mismatches === 0 && later.verified > 20, `${label}: ${later.verified} book checksums verified in the page, ${later.mismatches} mismatches (seq ${first.seq} → ${later.seq})`);
  const ladder = await page.evaluate(() => [...document.querySelectorAll("#ladder tbody tr")].map((tr) => [...tr.children].map((td) => td.textContent)));
  const asks = ladder.filter((r) => r[2] !== "").map((r) => Number(r[1]));
  const bids = ladder.filter((r) => r[0] !== "").map((r) => Number(r[1]));
  const descending = (xs) => xs.every((x, i) => i === 0 || xs[i - 1] > x);
  check(asks.length === 10 && bids.length === 10 && descending(asks) && descending(bids) && asks[asks.length - 1] > bids[0],
    `${label}: ladder shows 10 asks over 10 bids, uncrossed (best ${bids[0]} / ${asks[asks.length - 1]})`);
  const state = await page.textContent("#book-state");
  check(/^ESM4 · seq \d+ · checksum ok ×\d+$/.test(state), `${label}: checksum state shown ("${state}")`);
}

async function ticksAppear(page, label, transport) {
  const t0 = Date.now();
  await waitFor(`${label}: ticks in the table`, () => page.evaluate(() => window.tickwire && window.tickwire.ticks > 0 && document.querySelectorAll("#ticker tbody tr").length > 0), 2_000);
  console.log(`   ${label}: first ticks after ${Date.now() - t0} ms`);
  check(await page.evaluate(() => window.tickwire.transport) === transport, `${label}: transport is ${transport}`);
  const latency = await waitFor(`${label}: latency readout`, () => page.evaluate(() => {
    const t = document.getElementById("latency").textContent;
    return /p50 -?\d+(\.\d+)? ms · p99 -?\d+(\.\d+)? ms/.test(t) ? t : null;
  }), 5_000);
  check(true, `${label}: latency readout shows numbers (${latency})`);
  const state = await page.textContent("#state");
  check(state.startsWith("live"), `${label}: connection state "${state}"`);
}

try {
  const addr = await startServer();
  const base = `http://${addr}/`;
  context = await chromium.launchPersistentContext(path.join(tmp, "profile"), {
    executablePath: browserPath,
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
    viewport: { width: 1100, height: 620 },
  });
  const errors = [];
  context.on("weberror", (e) => errors.push(String(e.error())));
  // Every response the pages get: none may be a 404 (the favicon was).
  const missing = [];
  context.on("response", (r) => { if (r.status() === 404) missing.push(r.url()); });

  // 1. WebSocket.
  const page = await context.newPage();
  await page.goto(base);
  await ticksAppear(page, "WebSocket", "ws");
  // Let the charts fill a little before the screenshot.
  await page.waitForTimeout(2_500);
  await page.screenshot({ path: shot });
  console.log("   screenshot:", path.relative(root, shot));

  // 2. SSE, forced.
  const sse = await context.newPage();
  await sse.goto(base + "?transport=sse");
  await ticksAppear(sse, "SSE (forced)", "sse");
  await sse.close();

  // 3. WebSocket blocked (as by a proxy): the page falls back to SSE.
  const blocked = await context.newPage();
  await blocked.addInitScript(() => {
    window.WebSocket = class {
      constructor() { this.readyState = 3; setTimeout(() => { if (this.onerror) this.onerror(new Event("error")); if (this.onclose) this.onclose({ code: 1006, reason: "" }); }, 20); }
      send() {} close() {}
    };
    window.WebSocket.OPEN = 1;
  });
  await blocked.goto(base);
  await ticksAppear(blocked, "SSE (WebSocket blocked)", "sse");
  const note = await blocked.textContent("#messages");
  check(/Server-Sent Events/.test(note), `fallback is announced ("${note.trim()}")`);

  // 4. A partly invalid ?symbols= list: the valid symbol streams, the bad
  //    one is named in an error that stays.
  const bad = await context.newPage();
  await bad.goto(base + "?symbols=IBM,bad%20sym");
  const shown = await waitFor("error message on the page", () => bad.evaluate(() => {
    const t = document.getElementById("messages").textContent;
    return /bad sym/.test(t) ? t : null;
  }), 3_000);
  check(true, `invalid symbol named ("${shown.trim()}")`);
  await waitFor("IBM ticks beside the invalid name", () => bad.evaluate(() =>
    [...document.querySelectorAll("#ticker tbody tr td:first-child")].some((td) => td.textContent === "IBM")), 5_000);
  check(true, "the valid symbol of a partly invalid list streams");
  check(await bad.evaluate(() => [...document.querySelectorAll("#messages div")].some((d) => /bad sym/.test(d.textContent) && d.className === "error")),
    "the error is an error message (kept, not timed out like notices)");
  await bad.close();

  // 5. Exact timestamps (?ts=string), the new columns, the chart scale.
  const lastTs = await page.evaluate(() => window.tickwire.lastTs);
  check(typeof lastTs === "string" && /^\d{19}$/.test(lastTs), `ts arrives exact, as a string (${lastTs})`);
  const cells = await page.evaluate(() => {
    const tr = [...document.querySelectorAll("#ticker tbody tr")].find((r) => r.children[4].textContent !== "–");
    return tr ? [...tr.children].map((td) => td.textContent) : null;
  });
  check(cells && /^\d\d:\d\d:\d\d\.\d{3}$/.test(cells[4]), `last-trade time shown (${cells && cells[4]})`);
  check(cells && /^[+−]?\d+\.\d{2,}$/.test(cells[5]), `change shown with fixed decimals (${cells && cells[5]})`);
  check(cells && /^\d+\.\d{2,}$/.test(cells[1]), `last price with fixed decimals (${cells && cells[1]})`);

  // 6. Connected but no ticks: not "live".
  const quiet = await context.newPage();
  await quiet.goto(base + "?symbols=NOSUCH");
  const quietState = await waitFor("the idle state", () => quiet.evaluate(() => {
    const t = document.getElementById("state").textContent;
    return /no ticks/.test(t) ? t : null;
  }), 5_000);
  check(!quietState.startsWith("live"), `no "live" badge at 0 ticks/s ("${quietState}")`);
  await quiet.close();

  // 7. /favicon.ico is served, not a 404.
  const icon = await page.evaluate(async () => { const r = await fetch("/favicon.ico"); return [r.status, r.headers.get("content-type")]; });
  check(icon[0] === 200 && icon[1] === "image/svg+xml", `favicon served (${icon.join(" ")})`);

  // 8. With API keys: the page passes its ?token= on to both endpoints.
  server.kill("SIGTERM");
  await new Promise((r) => server.once("exit", r));
  fs.rmSync(addrFile, { force: true });
  const keys = path.join(tmp, "keys.toml");
  fs.writeFileSync(keys, '[[subscriber]]\nname = "page"\nkey = "page-key-0123456789abcdef"\nsymbols = ["*"]\n');
  const keyed = `http://${await startServer(["--config", keys])}/`;
  for (const [transport, query] of [["ws", ""], ["sse", "&transport=sse"]]) {
    const p = await context.newPage();
    await p.goto(keyed + "?token=page-key-0123456789abcdef" + query);
    await ticksAppear(p, `API key via ?token= (${transport})`, transport);
    await p.close();
  }
  const nokey = await context.newPage();
  await nokey.goto(keyed + "?transport=ws");
  await nokey.waitForTimeout(1_500);
  check(await nokey.evaluate(() => window.tickwire.ticks) === 0, "without ?token= a keyed server sends nothing");
  await nokey.close();

  // 9. The depth ladder, over WebSocket and over SSE.
  const [bp, bookAddr] = await spawnServer(path.join(tmp, "book-addr"), ["--replay", path.join(root, "replay-data/esm4-mbo-20240508.twr.zst"), "--loop"]);
  bookServer = bp;
  const ladder = await context.newPage();
  await ladder.goto(`http://${bookAddr}/?book=ESM4&symbols=ESM4`);
  await ladderWorks(ladder, "ladder (WebSocket)");
  await ladder.screenshot({ path: path.join(root, "docs/ticker-book.png") });
  await ladder.close();
  const ladderSse = await context.newPage();
  await ladderSse.goto(`http://${bookAddr}/?book=ESM4&symbols=ESM4&transport=sse`);
  await ladderSse.waitForSelector("#book-sym");
  await ladderWorks(ladderSse, "ladder (SSE)");
  await ladderSse.close();

  check(errors.length === 0, `no page errors ${errors.join("; ")}`);
  check(missing.length === 0, `no 404 while loading the pages ${missing.join(" ")}`);
} catch (e) {
  failed = true;
  console.error("FAIL:", e.message);
}
cleanup(failed ? 1 : 0);
