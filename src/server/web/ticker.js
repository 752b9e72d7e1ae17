// tickwire live ticker: WebSocket first, Server-Sent Events as the fallback.
// No build step: this file is served as is by the binary.
(() => {
  "use strict";
  const params = new URLSearchParams(location.search);
  const forced = params.get("transport"); // "ws", "sse" or null (auto)
  // An API key given to the page (?token=KEY) goes on to both endpoints
  // exactly as written: the server takes `token` as is, not percent-decoded.
  const rawToken = (location.search.match(/[?&]token=([^&]*)/) || [])[1];
  const tokenParam = rawToken ? "&token=" + rawToken : "";
  const MAX_DEFAULT = 8;       // symbols selected on first load
  const CHART_POINTS = 240;    // trade prices kept per symbol
  const LAT_WINDOW_MS = 5000;  // latency readout window

  const $ = (id) => document.getElementById(id);
  const tbody = document.querySelector("#ticker tbody");
  const rows = new Map();      // sym -> {tr, cells, canvas, prices, last}
  let selected = new Set();
  let transport = null;        // {kind, close, resubscribe}
  let wsFailures = 0;
  let backoff = 500;
  let reconnectTimer = null;
  let latencies = [];          // [arrivalMs, latencyMs]
  let tickCount = 0, rateCount = 0;
  let connectedVia = null;     // "WebSocket" or "SSE" while a transport is open
  let lastTs = null;           // the newest tick's ts, exact (a string)
  // docs/PROTOCOL.md's symbol grammar: checked here so one bad name in
  // ?symbols= does not make the server refuse the whole subscription.
  const SYMBOL_RE = /^[A-Za-z0-9._\/:-]{1,32}$/;

  // The depth ladder's book: levels keyed by their exact JSON text.
  const BOOK_DEPTH = 10;
  const book = { sym: params.get("book") || "", bids: new Map(), asks: new Map(), seq: null, verified: 0, mismatches: 0, gaps: 0, dirty: false };
  if (book.sym && !SYMBOL_RE.test(book.sym)) book.sym = "";

  // Exposed for tests and curious users.
  window.tickwire = {
    get transport() { return transport && transport.kind; }, get ticks() { return tickCount; }, get lastTs() { return lastTs; }, latency: null,
    get book() { return { sym: book.sym, seq: book.seq, bids: book.bids.size, asks: book.asks.size, verified: book.verified, mismatches: book.mismatches, gaps: book.gaps }; },
  };

  // The browser's clock in ms since the epoch, with sub-ms resolution
  // (Date.now() has 1 ms steps, too coarse for a feed's latency).
  const nowMs = () => performance.timeOrigin + performance.now();

  function setState(cls, text) {
    const s = $("state");
    s.className = "state " + cls;
    s.textContent = text;
    if (cls !== "open") connectedVia = null;
  }

  // A connected transport says "live" only while ticks arrive (see updateReadout).
  function setConnected(via) {
    setState("open", `connected · ${via}`);
    connectedVia = via;
  }

  // Errors stay until the page is reloaded (they describe what the page
  // asked for); notices go after 15 s.
  function message(text, cls) {
    const box = $("messages");
    const d = document.createElement("div");
    d.className = cls || "error";
    d.textContent = text;
    box.prepend(d);
    while (box.children.length > 6) box.lastChild.remove();
    if (cls === "info") setTimeout(() => d.remove(), 15000);
  }

  // ---- symbols -----------------------------------------------------------
  const known = new Set();
  const refDecimals = new Map(); // sym -> decimals from the server's reference data
  let firstLoad = true;

  function addSymbol(sym) {
    known.add(sym);
    const box = $("symbols");
    const label = document.createElement("label");
    label.dataset.sym = sym;
    const cb = document.createElement("input");
    cb.type = "checkbox";
    cb.checked = selected.has(sym);
    cb.addEventListener("change", () => {
      if (cb.checked) selected.add(sym); else { selected.delete(sym); dropRow(sym); }
      if (transport) transport.resubscribe();
    });
    label.append(cb, " " + sym);
    addBookOption(sym);
    const after = [...box.querySelectorAll("label")].find((l) => l.dataset.sym > sym);
    box.insertBefore(label, after || null);
  }

  // Loads /v1/symbols; later calls add symbols the server has seen since.
  async function loadSymbols() {
    let list = [];
    try {
      // ?ref=1: objects with reference data (decimals) where the server has it.
      const r = await fetch("/v1/symbols?ref=1", { cache: "no-store" });
      const objs = await r.json();
      list = objs.map((o) => o.sym);
      for (const o of objs) if (typeof o.decimals === "number") refDecimals.set(o.sym, o.decimals);
    } catch (e) {
      if (firstLoad) message("could not load /v1/symbols: " + e);
    }
    list.sort();
    const box = $("symbols");
    if (firstLoad) {
      firstLoad = false;
      const named = (params.get("symbols") || "").split(",").map((s) => s.trim()).filter(Boolean);
      const asked = named.filter((s) => SYMBOL_RE.test(s));
      const invalid = named.filter((s) => !SYMBOL_RE.test(s));
      if (invalid.length) message(`not symbols, left out: ${invalid.map((s) => JSON.stringify(s)).join(", ")} (1–32 of A-Z a-z 0-9 . - _ / :)`);
      selected = new Set(asked.length || named.length ? asked : list.slice(0, MAX_DEFAULT));
      box.textContent = "";
      for (const sym of asked) if (!list.includes(sym)) list.push(sym);
    }
    for (const sym of list) if (!known.has(sym)) addSymbol(sym);
    if (!known.size) box.innerHTML = "<em>no symbols yet (publish some)</em>";
    else box.querySelector("em")?.remove();
  }

  // ---- depth ladder ------------------------------------------------------
  function addBookOption(sym) {
    const sel = $("book-sym");
    if ([...sel.options].some((o) => o.value === sym)) return;
    const o = new Option(sym, sym);
    const after = [...sel.options].find((x) => x.value && x.value > sym);
    sel.insertBefore(o, after || null);
    if (sym === book.sym) sel.value = sym;
  }

  function chooseBook(sym) {
    book.sym = sym; book.bids.clear(); book.asks.clear(); book.seq = null;
    book.verified = 0; book.mismatches = 0; book.gaps = 0; book.dirty = true;
    if (transport) transport.resubscribeBook();
  }

  // CRC-32 (IEEE, as zlib's crc32) of an ASCII string.
  const CRC_TABLE = (() => {
    const t = new Uint32Array(256);
    for (let n = 0; n < 256; n++) { let c = n; for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1; t[n] = c >>> 0; }
    return t;
  })();
  function crc32(str) {
    let c = 0xffffffff;
    for (let i = 0; i < str.length; i++) c = CRC_TABLE[(c ^ str.charCodeAt(i)) & 0xff] ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  }
  // Levels best first: [priceText, sizeText].
  const bestAsks = (n) => [...book.asks].sort((a, b) => Number(a[0]) - Number(b[0])).slice(0, n);
  const bestBids = (n) => [...book.bids].sort((a, b) => Number(b[0]) - Number(a[0])).slice(0, n);
  // docs/PROTOCOL.md "Book checksum": top 10 asks then top 10 bids, each
  // price then size as in the JSON, `.` removed, then leading zeros removed.
  function bookChecksum() {
    const digits = (t) => t.replace(".", "").replace(/^0+/, "");
    const part = (levels) => levels.map(([p, q]) => digits(p) + digits(q)).join("");
    return crc32(part(bestAsks(10)) + part(bestBids(10)));
  }

  // One `book` message (its text: the numbers are read as written, so the
  // checksum sees exactly the server's decimals).
  function onBook(text) {
    const m = JSON.parse(text, (k, v, ctx) => (typeof v === "number" && k !== "cs" ? (ctx && ctx.source) || String(v) : v));
    if (m.sym !== book.sym) return;
    const seq = Number(m.seq), from = Number(m.from);
    if (m.snap) { book.bids.clear(); book.asks.clear(); }
    else if (book.seq === null || from > book.seq + 1 || seq <= book.seq) {
      // Missed something: a fresh snapshot, as the protocol says.
      book.gaps++; book.seq = null;
      if (transport) transport.resubscribeBook();
      return;
    }
    for (const [side, key] of [[book.bids, "bids"], [book.asks, "asks"]]) {
      for (const [p, q] of m[key] || []) { if (Number(q) === 0) side.delete(p); else side.set(p, q); }
    }
    book.seq = seq;
    if (bookChecksum() === m.cs) book.verified++; else book.mismatches++;
    book.dirty = true;
  }

  function drawLadder() {
    if (!book.dirty) return;
    book.dirty = false;
    const state = $("book-state");
    if (!book.sym) { state.textContent = "no book selected"; state.className = "book-state"; }
    else if (book.seq === null) { state.textContent = `${book.sym} · waiting for a snapshot`; state.className = "book-state"; }
    else {
      const bad = book.mismatches > 0;
      state.textContent = `${book.sym} · seq ${book.seq} · ` + (bad ? `checksum MISMATCH ×${book.mismatches} (${book.verified} ok)` : `checksum ok ×${book.verified}`);
      state.className = "book-state " + (bad ? "bad" : "ok");
    }
    const body = document.querySelector("#ladder tbody");
    body.textContent = "";
    const line = (bsz, px, asz, cls) => {
      const tr = document.createElement("tr");
      if (cls) tr.className = cls;
      for (const [v, c] of [[bsz, "bid"], [px, "px"], [asz, "ask"]]) { const td = document.createElement("td"); td.className = c; td.textContent = v; tr.append(td); }
      body.append(tr);
    };
    const asks = bestAsks(BOOK_DEPTH).reverse();
    asks.forEach(([p, q], i) => line("", p, q, i === asks.length - 1 ? "best" : ""));
    for (const [p, q] of bestBids(BOOK_DEPTH)) line(q, p, "", "");
  }

  // ---- table and charts --------------------------------------------------
  const COLS = ["px", "qty", "side", "time", "chg", "bid", "bsz", "ask", "asz", "spread"];
  function row(sym) {
    let r = rows.get(sym);
    if (r) return r;
    const tr = document.createElement("tr");
    const name = document.createElement("td");
    name.textContent = sym;
    tr.append(name);
    const cells = {};
    for (const c of COLS) { const td = document.createElement("td"); td.textContent = "–"; cells[c] = td; tr.append(td); }
    const ctd = document.createElement("td");
    ctd.className = "chart";
    const canvas = document.createElement("canvas");
    canvas.width = 220; canvas.height = 36;
    ctd.append(canvas);
    tr.append(ctd);
    // Keep rows in symbol order.
    const after = [...rows.keys()].sort().find((s) => s > sym);
    tbody.insertBefore(tr, after ? rows.get(after).tr : null);
    r = { tr, cells, canvas, prices: [], last: {}, dirty: false, dec: 2, first: null, bid: null, ask: null };
    rows.set(sym, r);
    return r;
  }

  function dropRow(sym) {
    const r = rows.get(sym);
    if (r) { r.tr.remove(); rows.delete(sym); }
  }

  // Decimals a price needs as written (JSON numbers are the shortest exact
  // decimal): the row keeps the most it has seen, so columns do not jump.
  function decimalsOf(v) {
    const s = String(v);
    const i = s.indexOf(".");
    return i < 0 || /e/i.test(s) ? 0 : s.length - i - 1;
  }
  const fixed = (r, v) => (typeof v === "number" ? v.toFixed(r.dec) : "–");

  function setCell(r, key, value, text) {
    if (value === undefined) return;
    const old = r.last[key];
    if (old === value) return;
    const td = r.cells[key];
    td.textContent = text === undefined ? String(value) : text;
    const cls = typeof value === "number" && typeof old === "number"
      ? (value > old ? "flash-up" : value < old ? "flash-down" : "flash") : "flash";
    td.classList.remove("flash-up", "flash-down", "flash");
    void td.offsetWidth; // restart the animation
    td.classList.add(cls);
    r.last[key] = value;
  }

  function onTick(t) {
    if (!t || !t.sym || !selected.has(t.sym)) return;
    tickCount++; rateCount++;
    const now = nowMs();
    // rx is a string (?ts=string): µs as a Number is exact, ms keep µs.
    if (typeof t.rx === "string" && !t.snap) latencies.push([now, now - Number(BigInt(t.rx) / 1000n) / 1000]);
    if (typeof t.ts === "string") lastTs = t.ts;
    const r = row(t.sym);
    const fixedDec = refDecimals.get(t.sym);
    if (fixedDec !== undefined) r.dec = fixedDec;
    else for (const k of ["px", "bid", "ask"]) if (typeof t[k] === "number") r.dec = Math.max(r.dec, decimalsOf(t[k]));
    if (t.type === "trade") {
      if (r.first === null) r.first = t.px;
      setCell(r, "px", t.px, fixed(r, t.px)); setCell(r, "qty", t.qty); setCell(r, "side", t.side);
      const ms = Number(BigInt(t.ts) / 1000000n);
      setCell(r, "time", t.ts, new Date(ms).toISOString().slice(11, 23));
      const chg = t.px - r.first;
      setCell(r, "chg", chg, (chg > 0 ? "+" : chg < 0 ? "−" : "") + Math.abs(chg).toFixed(r.dec));
      r.cells.chg.classList.toggle("up", chg > 0);
      r.cells.chg.classList.toggle("down", chg < 0);
      r.prices.push(t.px);
      if (r.prices.length > CHART_POINTS) r.prices.shift();
      r.dirty = true;
    } else if (t.type === "quote") {
      setCell(r, "bid", t.bid, fixed(r, t.bid)); setCell(r, "bsz", t.bsz);
      setCell(r, "ask", t.ask, fixed(r, t.ask)); setCell(r, "asz", t.asz);
      r.bid = t.bid; r.ask = t.ask;
      const spread = t.ask - t.bid;
      setCell(r, "spread", spread, spread.toFixed(r.dec));
    }
  }

  function drawCharts() {
    for (const r of rows.values()) {
      if (!r.dirty) continue;
      r.dirty = false;
      const c = r.canvas, g = c.getContext("2d"), p = r.prices;
      g.clearRect(0, 0, c.width, c.height);
      if (p.length < 2) continue;
      const low = Math.min(...p), high = Math.max(...p);
      let lo = low, hi = high;
      if (hi === lo) { hi += 0.5; lo -= 0.5; }
      // The scale: high and low printed at the right, the line left of them.
      g.font = "10px system-ui, sans-serif";
      g.fillStyle = "#7b8794";
      g.textAlign = "right";
      g.textBaseline = "top"; g.fillText(high.toFixed(r.dec), c.width - 1, 0);
      g.textBaseline = "bottom"; g.fillText(low.toFixed(r.dec), c.width - 1, c.height);
      const plotW = c.width - 60;
      g.strokeStyle = p[p.length - 1] >= p[0] ? "#2ecc71" : "#e74c3c";
      g.lineWidth = 1.5;
      g.beginPath();
      p.forEach((v, i) => {
        const x = (i / Math.max(p.length - 1, 1)) * (plotW - 2) + 1;
        const y = c.height - 2 - ((v - lo) / (hi - lo)) * (c.height - 4);
        if (i === 0) g.moveTo(x, y); else g.lineTo(x, y);
      });
      g.stroke();
    }
    drawLadder();
    requestAnimationFrame(drawCharts);
  }

  function pct(sorted, q) {
    return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
  }

  function updateReadout() {
    const cutoff = nowMs() - LAT_WINDOW_MS;
    while (latencies.length && latencies[0][0] < cutoff) latencies.shift();
    const el = $("latency");
    if (!latencies.length) {
      el.textContent = "latency p50 – · p99 –";
      window.tickwire.latency = null;
    } else {
      const s = latencies.map((x) => x[1]).sort((a, b) => a - b);
      const p50 = pct(s, 0.5), p99 = pct(s, 0.99);
      el.innerHTML = `latency p50 <b>${p50.toFixed(1)} ms</b> · p99 <b>${p99.toFixed(1)} ms</b> (${s.length} ticks)`;
      window.tickwire.latency = { p50, p99, n: s.length };
    }
    $("rate").textContent = `${(rateCount * 2).toFixed(0)} ticks/s`;
    if (connectedVia) {
      const s = $("state");
      s.textContent = rateCount > 0 ? `live · ${connectedVia}` : `connected · ${connectedVia} · no ticks`;
      s.className = "state " + (rateCount > 0 ? "open" : "idle");
    }
    rateCount = 0;
  }

  // ---- transports --------------------------------------------------------
  function symbolList() { return [...selected]; }

  function connectWs() {
    const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/v1/stream?ts=string" + tokenParam;
    let opened = false, closedByUs = false, nextId = 1;
    const ws = new WebSocket(url, ["tickwire.json.v1"]);
    let subscribedTo = [];
    let bookSubscribed = "";
    const subscribeBook = () => {
      if (ws.readyState !== WebSocket.OPEN) return;
      // Unsubscribing first makes the subscription (also after a gap) a new
      // one, which starts with a fresh snapshot.
      if (bookSubscribed) ws.send(JSON.stringify({ op: "unsubscribe", id: nextId++, symbols: [bookSubscribed], channels: ["book"] }));
      if (book.sym) ws.send(JSON.stringify({ op: "subscribe", id: nextId++, symbols: [book.sym], channels: ["book"], depth: BOOK_DEPTH }));
      bookSubscribed = book.sym;
    };
    const subscribe = () => {
      if (ws.readyState !== WebSocket.OPEN) return;
      const want = symbolList();
      const gone = subscribedTo.filter((s) => !selected.has(s));
      if (gone.length) ws.send(JSON.stringify({ op: "unsubscribe", id: nextId++, symbols: gone }));
      if (want.length) ws.send(JSON.stringify({ op: "subscribe", id: nextId++, symbols: want }));
      subscribedTo = want;
    };
    ws.onopen = () => { opened = true; wsFailures = 0; backoff = 500; setConnected("WebSocket"); subscribe(); subscribeBook(); };
    ws.onmessage = (ev) => {
      let m;
      try { m = JSON.parse(ev.data); } catch { return; }
      if (m.type === "trade" || m.type === "quote") onTick(m);
      else if (m.type === "book") onBook(ev.data);
      else if (m.type === "error") message(`server error (${m.code}): ${m.message}`);
      else if (m.type === "lagging") message(`the server says this page is ${m.behind_ms} ms behind`, "info");
    };
    ws.onclose = (ev) => {
      if (closedByUs) return;
      if (!opened) {
        // WebSocket never opened (blocked by a proxy, refused): fall back to
        // SSE at once, and stay on it for this page's life.
        wsFailures++;
        if (forced !== "ws") { message("WebSocket unavailable; using Server-Sent Events", "info"); reconnect(0); return; }
      }
      if (ev.code && ev.code !== 1000 && ev.code !== 1006) message(`connection closed: ${ev.code} ${ev.reason}`, "info");
      reconnect();
    };
    return { kind: "ws", resubscribe: subscribe, resubscribeBook: subscribeBook, close: () => { closedByUs = true; ws.close(1000); } };
  }

  function connectSse() {
    let es = null, bookEs = null, closedByUs = false;
    const openBook = () => {
      if (bookEs) bookEs.close();
      bookEs = null;
      if (!book.sym) return;
      bookEs = new EventSource(`/v1/sse?ts=string&channels=book&depth=${BOOK_DEPTH}&symbols=` + encodeURIComponent(book.sym));
      bookEs.addEventListener("book", (ev) => { try { onBook(ev.data); } catch { /* ignore */ } });
    };
    const open = () => {
      const syms = symbolList();
      if (es) es.close();
      if (!syms.length) { setState("idle", "idle · SSE (no symbols)"); return; }
      es = new EventSource("/v1/sse?ts=string" + tokenParam + "&symbols=" + syms.map(encodeURIComponent).join(","));
      es.onopen = () => { backoff = 500; setConnected("SSE"); };
      const tick = (ev) => { try { onTick(JSON.parse(ev.data)); } catch { /* ignore */ } };
      es.addEventListener("trade", tick);
      es.addEventListener("quote", tick);
      es.addEventListener("status", (ev) => {
        const s = JSON.parse(ev.data);
        if (s.missed) message("reconnected: some ticks were skipped (newest values shown)", "info");
      });
      es.addEventListener("lagging", (ev) => message(`the server says this page is ${JSON.parse(ev.data).behind_ms} ms behind`, "info"));
      es.onerror = () => {
        if (closedByUs) return;
        // EventSource retries by itself while the server answers 200; a 400
        // or a refused connection closes it for good: reconnect ourselves.
        if (es.readyState === EventSource.CLOSED) {
          const ac = new AbortController();
          fetch(es.url, { signal: ac.signal })
            .then((r) => r.ok ? ac.abort() : r.text().then((t) => message(`server refused the stream: ${t}`)))
            .catch(() => {}).finally(() => reconnect());
        } else setState("reconnecting", "reconnecting · SSE");
      };
    };
    open();
    openBook();
    return { kind: "sse", resubscribe: open, resubscribeBook: openBook, close: () => { closedByUs = true; if (es) es.close(); if (bookEs) bookEs.close(); } };
  }

  function connect() {
    reconnectTimer = null;
    const useSse = forced === "sse" || (forced !== "ws" && wsFailures >= 1);
    setState("connecting", useSse ? "connecting · SSE" : "connecting · WebSocket");
    transport = useSse ? connectSse() : connectWs();
  }

  function reconnect(delay) {
    if (reconnectTimer) return;
    if (transport) { try { transport.close(); } catch { /* already gone */ } }
    const wait = delay === undefined ? backoff : delay;
    if (delay === undefined) backoff = Math.min(backoff * 2, 5000);
    setState("reconnecting", `reconnecting in ${(wait / 1000).toFixed(1)} s`);
    reconnectTimer = setTimeout(connect, wait);
  }

  $("book-sym").addEventListener("change", (ev) => chooseBook(ev.target.value));
  if (book.sym) { addBookOption(book.sym); book.dirty = true; }
  loadSymbols().then(connect);
  setInterval(loadSymbols, 10000);
  setInterval(updateReadout, 500);
  requestAnimationFrame(drawCharts);
})();
