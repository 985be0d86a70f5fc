// Helpers for the browser tests: the real chatd binary, a TCP proxy that can
// cut or hold a page's connections, and Debian's chromium via playwright-core.
import { spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, openSync, closeSync, readFileSync, writeFileSync, existsSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';

export const HERE = dirname(fileURLToPath(import.meta.url));
export const REPO = resolve(HERE, '..', '..');
export const CHATD_BIN = resolve(process.env.CHATD_BIN || join(REPO, 'build', 'chatd'));
export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
// Screenshots and chatd logs of failed tests (created only when one fails).
export const ARTIFACTS = process.env.CHATD_ARTIFACTS || join(tmpdir(), `chatd-browser-artifacts-${process.pid}`);
export const WORK = mkdtempSync(join(tmpdir(), 'chatd-browser-'));

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Every chatd we start, so that nothing outlives the test process.
const live = new Set();
process.on('exit', () => {
  for (const p of live) { try { p.kill('SIGKILL'); } catch (e) { /* gone */ } }
  if (!process.env.CHATD_KEEP) rmSync(WORK, { recursive: true, force: true });
});

// Poll fn until it returns a truthy value; fail with `what` after ms.
export async function until(fn, what, ms = 10000) {
  const end = Date.now() + ms;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) {
      if (typeof what === 'function') what = await what();
      throw new Error(`timed out after ${ms} ms waiting for ${what}` +
        (last instanceof Error ? `: ${last.message}` : last !== undefined ? ` (last: ${JSON.stringify(last)})` : ''));
    }
    await sleep(100);
  }
}

let serial = 0;

// The real chatd: temp config, loopback, a free port (kept across restarts so
// the pages reconnect to the same address), storage in a temp dir if asked.
export class Chatd {
  constructor({ storage = true, toml = '' } = {}) {
    this.dir = join(WORK, 'chatd-' + ++serial);
    mkdirSync(this.dir, { recursive: true });
    this.storage = storage;
    this.toml = toml;
    this.port = 0;
    this.proc = null;
    this.log = join(this.dir, 'chatd.log');
  }

  get url() { return `http://127.0.0.1:${this.port}`; }

  config() {
    let c = `[server]\nlisten = "127.0.0.1"\nport = ${this.port}\nnode_id = "browser-test"\n` +
      'shutdown_timeout = 2\nhandshake_timeout = 5\n';
    if (this.storage) c += `[storage]\npath = "${join(this.dir, 'chat.db')}"\n`;
    return c + this.toml;
  }

  async start({ storage } = {}) {
    if (storage !== undefined) this.storage = storage;
    if (!existsSync(CHATD_BIN)) throw new Error(`chatd binary not found at ${CHATD_BIN} (set CHATD_BIN)`);
    const cfg = join(this.dir, 'chatd.toml');
    writeFileSync(cfg, this.config());
    const from = existsSync(this.log) ? readFileSync(this.log).length : 0;
    const fd = openSync(this.log, 'a');
    const proc = spawn(CHATD_BIN, ['-c', cfg], { stdio: ['ignore', fd, fd], cwd: this.dir });
    closeSync(fd);
    live.add(proc);
    this.proc = proc;
    let exited = null;
    proc.on('exit', (code, sig) => { exited = { code, sig }; live.delete(proc); });
    if (!this.port) {
      this.port = Number(await until(() => {
        if (exited) throw new Error(`chatd exited ${JSON.stringify(exited)}:\n${this.logText()}`);
        const m = /listening on ws:\/\/127\.0\.0\.1:(\d+)\//.exec(readFileSync(this.log, 'utf8').slice(from));
        return m && m[1];
      }, 'chatd to listen'));
    }
    await until(async () => {
      if (exited) throw new Error(`chatd exited ${JSON.stringify(exited)}:\n${this.logText()}`);
      const r = await fetch(this.url + '/healthz', { signal: AbortSignal.timeout(1000) });
      return r.status === 200;
    }, 'chatd /healthz', 10000);
    return this;
  }

  async stop() {
    const p = this.proc;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    const done = new Promise((r) => p.once('exit', r));
    p.kill('SIGTERM');
    const t = setTimeout(() => p.kill('SIGKILL'), 5000);
    await done;
    clearTimeout(t);
    this.proc = null;
  }

  async restart(opts) {
    await this.stop();
    await this.start(opts);
  }

  logText(lines = 200) {
    try { return readFileSync(this.log, 'utf8').split('\n').slice(-lines).join('\n'); } catch (e) { return ''; }
  }
}

// A loopback TCP proxy in front of chatd. A page loaded through it also opens
// its WebSocket through it, so the test can cut that page's connection
// (cut), keep it from reconnecting (hold: new connections wait, unanswered),
// let it through again (open), swallow what the server sends it (deafen) or
// what it sends the server (mute), or both, hiding even a close (freeze).
export class Proxy {
  constructor(targetPort) {
    this.targetPort = targetPort;
    this.mode = 'open';
    this.pairs = new Set();
    this.held = [];
    this.server = net.createServer((c) => this.accept(c));
  }

  async listen() {
    await new Promise((r) => this.server.listen(0, '127.0.0.1', r));
    this.port = this.server.address().port;
    return this;
  }

  get url() { return `http://127.0.0.1:${this.port}`; }

  accept(client) {
    client.on('error', () => {});
    if (this.mode === 'hold') { client.pause(); this.held.push(client); return; }
    this.pipe(client);
  }

  pipe(client) {
    const up = net.connect(this.targetPort, '127.0.0.1');
    const pair = { client, up, deaf: false, mute: false, frozen: false };
    this.pairs.add(pair);
    up.on('error', () => client.destroy());
    client.on('error', () => up.destroy());
    up.on('close', () => { if (!pair.frozen) { client.destroy(); this.pairs.delete(pair); } });
    client.on('close', () => { up.destroy(); this.pairs.delete(pair); });
    client.on('data', (d) => { if (!pair.mute) up.write(d); });
    up.on('data', (d) => { if (!pair.deaf) client.write(d); });
    client.resume();
  }

  cut() {
    for (const p of this.pairs) { p.client.destroy(); p.up.destroy(); }
    this.pairs.clear();
  }

  hold() { this.mode = 'hold'; }

  open() {
    this.mode = 'open';
    const held = this.held;
    this.held = [];
    for (const c of held) if (!c.destroyed) this.pipe(c);
  }

  deafen() { for (const p of this.pairs) p.deaf = true; }   // the server's frames are lost

  mute() { for (const p of this.pairs) p.mute = true; }       // the page's frames are lost

  // Nothing gets through either way, and the page never sees the server's close.
  freeze() { for (const p of this.pairs) p.mute = p.deaf = p.frozen = true; }

  async close() {
    this.cut();
    for (const c of this.held) c.destroy();
    await new Promise((r) => this.server.close(r));
  }
}

export async function launchBrowser() {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
    timeout: 30000,
  });
}

// Per-test resources, released in reverse order; screenshots on failure.
export class Harness {
  constructor(browser, name) {
    this.browser = browser;
    this.name = name.replace(/[^A-Za-z0-9_.-]+/g, '_').slice(0, 60);
    this.pages = [];
    this.cleanups = [];
    this.problems = [];
  }

  async chatd(opts) {
    const s = new Chatd(opts);
    this.cleanups.push(() => s.stop());
    await s.start();
    this.servers = (this.servers || []).concat(s);
    return s;
  }

  async proxy(port) {
    const p = await new Proxy(port).listen();
    this.cleanups.push(() => p.close());
    return p;
  }

  // A page in its own browser context (own storage, like another person).
  async page(label, { width = 1100, height = 720 } = {}) {
    const ctx = await this.browser.newContext({ viewport: { width, height }, locale: 'en-GB', timezoneId: 'UTC' });
    this.cleanups.push(() => ctx.close());
    const page = await ctx.newPage();
    page.setDefaultTimeout(10000);
    page.label = label;
    page.dialogs = [];
    // Every chat.v1 frame the page sends and receives, parsed.
    page.sent = [];
    page.recv = [];
    const parse = (list) => (f) => { try { list.push(JSON.parse(f.payload)); } catch (e) { /* not JSON */ } };
    page.on('websocket', (ws) => {
      ws.on('framesent', parse(page.sent));
      ws.on('framereceived', parse(page.recv));
    });
    page.on('dialog', (d) => { page.dialogs.push(d.message()); d.dismiss().catch(() => {}); });
    page.on('pageerror', (e) => this.problems.push(`${label}: uncaught ${e.message}`));
    page.on('console', (m) => {
      if (m.type() === 'error' && /Content.Security.Policy|Refused to/i.test(m.text())) {
        this.problems.push(`${label}: ${m.text()}`);
      }
    });
    this.pages.push(page);
    return page;
  }

  async screenshots() {
    const dir = join(ARTIFACTS, this.name);
    mkdirSync(dir, { recursive: true });
    for (const p of this.pages) {
      try { await p.screenshot({ path: join(dir, `${p.label}.png`), fullPage: true, timeout: 5000 }); } catch (e) { /* closed */ }
    }
    for (const s of this.servers || []) {
      try { writeFileSync(join(dir, `chatd-${s.port}.log`), readFileSync(s.log)); } catch (e) { /* none */ }
    }
    return dir;
  }

  async close() {
    for (const f of this.cleanups.reverse()) {
      try { await f(); } catch (e) { /* best effort */ }
    }
  }
}

// ---- page actions and queries --------------------------------------------

export async function signIn(page, base, name, rooms = 'lobby') {
  await page.goto(base + '/');
  await page.fill('#name', name);
  await page.fill('#rooms', rooms);
  await page.press('#name', 'Enter');
  await waitJoined(page, rooms.split(',')[0].trim());
}

export async function waitJoined(page, room) {
  await page.waitForSelector(`#room-list li[data-joined="true"] button[data-key="#${room}"]`, { state: 'attached' });
}

export async function online(page) {
  await page.waitForSelector('#conn[data-state="online"]', { timeout: 20000 });
}

export async function openConv(page, key) {
  await page.click(`button.conv-button[data-key="${key}"]`);
}

export async function say(page, text) {
  await page.fill('#msg', text);
  await page.press('#msg', 'Enter');
}

// [{seq, from, body, state}] of the messages shown in a conversation.
export async function messages(page, key) {
  return page.$$eval(`section[data-key="${key}"] li.msg`, (lis) => lis.map((li) => ({
    seq: li.dataset.seq ? Number(li.dataset.seq) : null,
    from: li.querySelector('.from').textContent,
    body: li.querySelector('.body').textContent,
    time: li.querySelector('time').textContent,
    delivered: li.classList.contains('delivered'),
    pending: li.classList.contains('pending'),
  })));
}

export async function bodies(page, key) {
  return (await messages(page, key)).map((m) => m.body);
}

export async function waitBodies(page, key, expected, ms = 10000) {
  return until(async () => {
    const b = await bodies(page, key);
    return JSON.stringify(b) === JSON.stringify(expected) && b;
  }, async () => `${page.label} to show ${JSON.stringify(expected)} in ${key}; it shows ` +
    JSON.stringify(await bodies(page, key).catch(() => null)), ms);
}

// A sender shows its own line at once, pending; the seq arrives with the
// server's echo, which can come after other pages already have the message.
export async function waitSeqs(page, key, ms = 10000) {
  return until(async () => (await messages(page, key)).every((m) => m.seq !== null),
    `${page.label}: every line in ${key} has its seq`, ms);
}

export async function badge(page, key) {
  return page.$eval(`button[data-key="${key}"] .badge`, (b) => (b.hidden ? 0 : parseInt(b.textContent, 10)));
}

export async function members(page) {
  return page.$$eval('#member-list li', (lis) => lis.map((li) => li.dataset.name));
}

// The frame of a test file: one browser for the file, a watchdog on the
// whole file whatever hangs, and the returned bt(): a test with its own
// chatd(s), pages and proxies, which fails on page errors, CSP violations or
// a sanitizer report in a chatd log, and leaves screenshots when it fails.
export function browserTests(label, minutes) {
  let browser;
  const watchdog = setTimeout(() => {
    console.error(`${label}: watchdog fired after ${minutes} minutes`);
    process.exit(1);
  }, minutes * 60 * 1000);
  watchdog.unref();
  before(async () => { browser = await launchBrowser(); });
  after(async () => { if (browser) await browser.close(); });
  return function bt(name, fn, timeout = 90000) {
    test(name, { timeout }, async () => {
      const h = new Harness(browser, name);
      try {
        await fn(h);
        assert.deepEqual(h.problems, [], 'page errors or CSP violations');
        for (const srv of h.servers || []) {
          await srv.stop();
          assert.doesNotMatch(srv.logText(), /AddressSanitizer|LeakSanitizer|runtime error:/, 'chatd log');
        }
      } catch (e) {
        const dir = await h.screenshots();
        e.message += `\n(screenshots and chatd logs: ${dir})`;
        throw e;
      } finally {
        await h.close();
      }
    });
  };
}
