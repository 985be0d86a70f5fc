// End-to-end tests of chatd's web page in a real browser (Debian's chromium,
// driven by playwright-core), against the real chatd binary on loopback.
// Run: CHATD_BIN=build/chatd node --test tests/browser/   (see docs/web.md)
import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import {
  REPO, ARTIFACTS, browserTests, until, sleep, waitSeqs,
  signIn, waitJoined, online, openConv, say, messages, bodies, waitBodies, badge, members,
} from './lib.mjs';

const bt = browserTests('browser tests', 10);

bt('the page is served with CSP and nosniff, no inline code, and signs in', async (h) => {
  const srv = await h.chatd({ storage: false });
  for (const path of ['/', '/?room=lobby&name=x']) {
    const r = await fetch(srv.url + path);
    assert.equal(r.status, 200);
    assert.match(r.headers.get('content-type'), /^text\/html/);
    assert.match(r.headers.get('content-security-policy'), /script-src 'self'/);
    assert.equal(r.headers.get('x-content-type-options'), 'nosniff');
    const html = await r.text();
    assert.doesNotMatch(html, /\sstyle=|<style|\son[a-z]+=|<script>/i, 'no inline style or script');
  }
  for (const [path, type] of [['/app.js', /javascript/], ['/style.css', /css/], ['/favicon.svg', /svg/]]) {
    const r = await fetch(srv.url + path);
    assert.equal(r.status, 200, path);
    assert.match(r.headers.get('content-type'), type);
  }
  const page = await h.page('alice');
  await page.goto(srv.url + '/');
  assert.equal(await page.evaluate(() => document.activeElement.id), 'name', 'the name field has the focus');
  await page.fill('#name', 'alice');
  await page.press('#name', 'Enter');
  await waitJoined(page, 'lobby');
  await online(page);
  assert.equal(await page.textContent('#conn-text'), 'Connected');
  assert.equal(await page.evaluate(() => document.activeElement.id), 'msg', 'message box focused after joining');
  assert.deepEqual(await members(page), ['alice']);
});

bt('two pages join the same room and exchange messages', async (h) => {
  const srv = await h.chatd({ storage: false });
  const alice = await h.page('alice');
  const bob = await h.page('bob');
  await signIn(alice, srv.url, 'alice');
  await signIn(bob, srv.url, 'bob');
  await until(async () => (await members(alice)).join() === 'alice,bob', 'alice to see bob join');

  await say(alice, 'hi bob');
  await waitBodies(bob, '#lobby', ['hi bob']);
  await say(bob, 'hello alice');
  await waitBodies(alice, '#lobby', ['hi bob', 'hello alice']);   // ordered before alice types again
  await say(alice, 'two\nlines');
  const want = ['hi bob', 'hello alice', 'two\nlines'];
  await waitBodies(alice, '#lobby', want);
  await waitBodies(bob, '#lobby', want);
  for (const p of [alice, bob]) await waitSeqs(p, '#lobby');

  const ma = await messages(alice, '#lobby');
  const mb = await messages(bob, '#lobby');
  assert.deepEqual(ma.map((m) => m.seq), [1, 2, 3]);
  assert.deepEqual(mb.map((m) => m.seq), [1, 2, 3]);
  assert.deepEqual(ma.map((m) => m.from), ['alice', 'bob', 'alice']);
  for (const m of ma) assert.match(m.time, /^\d\d:\d\d$/, 'each message shows its time');
  await until(async () => (await messages(alice, '#lobby')).filter((m) => m.from === 'alice').every((m) => m.delivered),
    'alice\'s messages marked delivered (ack)');
  assert.equal(await alice.$$eval('li.msg.mine .state', (s) => s.every((x) => x.textContent.includes('delivered'))), true);

  // Shift+Enter is a new line, not a send.
  await bob.fill('#msg', 'a');
  await bob.press('#msg', 'Shift+Enter');
  assert.equal(await bob.inputValue('#msg'), 'a\n');

  // Protocol: every command carries a ref; each send got an ack with its id.
  for (const p of [alice, bob]) {
    assert.deepEqual(p.sent.filter((f) => typeof f.ref !== 'string'), [], `${p.label}: every command has a ref`);
    for (const s of p.sent.filter((f) => f.type === 'send')) {
      assert.ok(p.recv.some((f) => f.type === 'ack' && f.id === s.id && f.ref === s.ref), `ack for ${s.id}`);
    }
  }

  // Live presence: bob leaves, alice's member list follows.
  await bob.close();
  await until(async () => (await members(alice)).join() === 'alice', 'alice to see bob leave');
});

bt('a message body with HTML is shown as text', async (h) => {
  const srv = await h.chatd({ storage: false });
  const alice = await h.page('alice');
  const bob = await h.page('bob');
  await signIn(alice, srv.url, 'alice');
  await signIn(bob, srv.url, 'bob');
  const evil = '<img src=x onerror=alert(1)>';
  await say(alice, evil);
  await say(alice, '<b>not bold</b> & <script>alert(2)</script>');
  await waitBodies(bob, '#lobby', [evil, '<b>not bold</b> & <script>alert(2)</script>']);
  await sleep(300);
  assert.equal(await bob.$$eval('#logs img, #logs b, #logs script', (x) => x.length), 0);
  assert.deepEqual(bob.dialogs, []);
  assert.deepEqual(alice.dialogs, []);
});

bt('rooms, unread counts and direct messages', async (h) => {
  const srv = await h.chatd({ storage: false });
  const alice = await h.page('alice');
  const bob = await h.page('bob');
  await signIn(alice, srv.url, 'alice', 'lobby, dev');
  await signIn(bob, srv.url, 'bob', 'lobby');
  assert.equal(await alice.getAttribute('button[data-key="#lobby"]', 'aria-current'), 'true');

  // bob joins dev from the sidebar form.
  await bob.fill('#join-room', 'dev');
  await bob.press('#join-room', 'Enter');
  await waitJoined(bob, 'dev');
  assert.equal(await bob.textContent('#conv-title'), '#dev');
  await say(bob, 'build is green');
  await say(bob, 'deploying');
  await until(async () => (await badge(alice, '#dev')) === 2, 'an unread count of 2 on #dev for alice');
  assert.equal(await badge(alice, '#lobby'), 0);
  assert.equal(await alice.textContent('#total-unread'), '2');
  await openConv(alice, '#dev');
  await waitBodies(alice, '#dev', ['build is green', 'deploying']);
  assert.equal(await badge(alice, '#dev'), 0, 'opening the room clears its count');

  // A direct message: alice picks bob in the member list.
  await alice.click('#member-list button:has-text("bob")');
  assert.equal(await alice.textContent('#conv-title'), '@bob');
  await say(alice, 'psst, lunch?');
  await until(async () => (await badge(bob, '@alice')) === 1, 'an unread dm badge for bob');
  await openConv(bob, '@alice');
  await waitBodies(bob, '@alice', ['psst, lunch?']);
  await say(bob, 'sure');
  await waitBodies(alice, '@bob', ['psst, lunch?', 'sure']);
  await until(async () => (await messages(alice, '@bob'))[0].delivered, 'the dm marked delivered');

  // A dm to someone who went offline waits for them in the conversation
  // (kept by the server while it holds the room), and reaches them on return.
  await bob.close();
  await openConv(alice, '#lobby');
  await until(async () => (await members(alice)).join() === 'alice', 'alice to see bob leave');
  await openConv(alice, '@bob');
  await say(alice, 'still there?');
  await until(async () => (await messages(alice, '@bob')).at(-1).delivered, 'the dm to offline bob accepted');
  const bob2 = await h.page('bob again');
  await signIn(bob2, srv.url, 'bob', 'lobby');
  await until(async () => (await badge(bob2, '@alice')) === 1, 'bob, back, sees one unread dm');
  await openConv(bob2, '@alice');
  await waitBodies(bob2, '@alice', ['psst, lunch?', 'sure', 'still there?']);

  // Leaving a room removes it.
  await alice.click('button[aria-label="Leave #dev"]');
  await alice.waitForSelector('button[data-key="#dev"]', { state: 'detached' });
});

bt('a shareable link alone does not sign in or join', async (h) => {
  const srv = await h.chatd({ storage: false });
  const alice = await h.page('alice');
  await signIn(alice, srv.url, 'alice', 'lobby');
  // A crafted link, opened by a visitor: nothing is sent, nothing is saved.
  const visitor = await h.page('visitor');
  await visitor.goto(srv.url + '/?name=mallory&room=lobby');
  await sleep(1500);
  assert.equal(visitor.sent.length, 0, 'no WebSocket frame before a click');
  assert.equal(await visitor.isVisible('#signin'), true);
  assert.equal(await visitor.isVisible('#chat'), false);
  assert.equal(await visitor.evaluate(() => localStorage.getItem('chatd.name')), null, 'the name is not saved');
  assert.match(await visitor.textContent('#link-notice'), /mallory.*#lobby/);
  assert.deepEqual(await members(alice), ['alice'], 'nobody joined lobby');
  const m = await (await fetch(srv.url + '/metrics')).text();
  assert.match(m, /^chatd_sessions 1$/m, 'only alice has a session');
});

bt('a shareable link prefills the form; one click joins and focuses the message box', async (h) => {
  const srv = await h.chatd({ storage: false });
  const carol = await h.page('carol');
  await carol.goto(srv.url + '/?name=carol&room=lobby,dev&room=ops');
  assert.equal(await carol.inputValue('#name'), 'carol');
  assert.equal(await carol.inputValue('#rooms'), 'lobby, dev, ops');
  assert.equal(await carol.evaluate(() => document.activeElement.id), 'signin-button', 'Join has the focus');
  await carol.keyboard.press('Enter');
  for (const r of ['lobby', 'dev', 'ops']) await waitJoined(carol, r);
  assert.equal(await carol.getAttribute('button[data-key="#lobby"]', 'aria-current'), 'true');
  assert.equal(await carol.evaluate(() => document.activeElement.id), 'msg');
  await carol.keyboard.type('typed at once');
  await carol.keyboard.press('Enter');
  await waitBodies(carol, '#lobby', ['typed at once']);

  // /?room=... without a name: the form is prefilled, and the rooms are joined after sign-in.
  const dave = await h.page('dave');
  await dave.goto(srv.url + '/?room=ops');
  assert.equal(await dave.inputValue('#rooms'), 'ops');
  await dave.fill('#name', 'dave');
  await dave.click('#signin-button');
  await waitJoined(dave, 'ops');
  assert.equal(await dave.evaluate(() => document.activeElement.id), 'msg');

  // A name already online is refused on the form.
  const other = await h.page('carol2');
  await other.goto(srv.url + '/?name=carol&room=lobby');
  await other.click('#signin-button');
  await other.waitForSelector('#signin-error:has-text("already online")');
  assert.equal(await other.isVisible('#signin'), true);
});

bt('after a server restart and a cut socket, missed messages show once, in order', async (h) => {
  const srv = await h.chatd({ storage: true });
  const proxy = await h.proxy(srv.port);
  const alice = await h.page('alice');
  const bob = await h.page('bob');
  const carol = await h.page('carol');
  await signIn(alice, srv.url, 'alice', 'lobby');
  await signIn(bob, srv.url, 'bob', 'lobby');
  await signIn(carol, proxy.url, 'carol', 'lobby, side');   // carol's traffic goes through the proxy
  await openConv(carol, '#side');
  await say(alice, 'm1');
  await waitBodies(bob, '#lobby', ['m1']);    // ordered before bob answers
  await say(bob, 'm2');
  await waitBodies(carol, '#lobby', ['m1', 'm2']);
  const expected = ['m1', 'm2'];

  // 1. The server restarts (storage on). carol stays away until alice and bob talked.
  proxy.hold();
  await srv.stop();
  proxy.cut();
  await carol.waitForSelector('#conn[data-state="waiting"], #conn[data-state="connecting"]');
  await until(async () => /^Disconnected.*retrying in \d+ s$/.test(await alice.textContent('#conn-text')),
    'alice to show that she is disconnected and when she retries');
  await srv.start();
  await online(alice);
  await online(bob);
  await waitJoined(alice, 'lobby');
  await waitJoined(bob, 'lobby');
  for (const m of ['m3', 'm4', 'm5']) { await say(alice, m); expected.push(m); }
  await waitBodies(bob, '#lobby', expected);  // ordered before bob answers
  await say(bob, 'm6');
  expected.push('m6');
  await waitBodies(bob, '#lobby', expected);
  // carol wrote while offline: it waits, then goes out with the same id.
  await openConv(carol, '#lobby');
  await say(carol, 'carol offline');
  await carol.waitForSelector('section[data-key="#lobby"] li.msg.pending');
  proxy.open();
  await online(carol);
  expected.push('carol offline');
  await waitBodies(carol, '#lobby', expected, 15000);
  await waitBodies(alice, '#lobby', expected);
  await waitBodies(bob, '#lobby', expected);

  // 2. carol's socket is cut (no restart); she misses more, including her own
  //    message that the server accepted but whose ack she never got.
  proxy.deafen();
  await say(carol, 'ack lost');
  expected.push('ack lost');
  await waitBodies(alice, '#lobby', expected);
  proxy.hold();
  proxy.cut();
  await carol.waitForSelector('#conn:not([data-state="online"])');
  for (const m of ['m8', 'm9']) { await say(alice, m); expected.push(m); }
  await openConv(carol, '#side');
  await waitBodies(alice, '#lobby', expected);
  proxy.open();
  await online(carol);
  await until(async () => (await badge(carol, '#lobby')) === 2, 'carol\'s unread count for the 2 missed messages');
  await openConv(carol, '#lobby');
  await waitBodies(carol, '#lobby', expected, 15000);

  // 3. carol's message is lost on the way to the server; after the cut it is
  //    sent again with the same id, and shows once for everyone.
  proxy.mute();
  await say(carol, 'lost on the way');
  await sleep(300);
  proxy.hold();
  proxy.cut();
  await carol.waitForSelector('#conn:not([data-state="online"])');
  await say(alice, 'm11');
  expected.push('m11', 'lost on the way');   // accepted only after the reconnect
  proxy.open();
  await online(carol);
  await waitBodies(carol, '#lobby', expected, 15000);
  await waitBodies(alice, '#lobby', expected);
  await sleep(500);

  // What went over the wire: carol resumed with join {since, epoch}, never
  // lost anything, sent the lost message twice with the same id, and did not
  // send again the one whose ack was lost (its replay confirmed it).
  const epoch = carol.recv.find((f) => f.type === 'joined' && f.room === 'lobby').epoch;
  const resumes = carol.sent.filter((f) => f.type === 'join' && f.room === 'lobby' && 'since' in f);
  assert.deepEqual(resumes.map((f) => [f.since, f.epoch]), [[2, epoch], [7, epoch], [10, epoch]]);
  const joined = carol.recv.filter((f) => f.type === 'joined' && f.room === 'lobby');
  assert.deepEqual(joined.map((f) => f.recovered), [undefined, true, true, true]);
  const sends = (body) => carol.sent.filter((f) => f.type === 'send' && f.body === body);
  assert.equal(sends('carol offline').length, 1);
  assert.equal(sends('ack lost').length, 1);
  const lost = sends('lost on the way');
  assert.equal(lost.length, 2, 'sent again after the reconnect');
  assert.equal(lost[0].id, lost[1].id, 'with the same id');
  assert.notEqual(lost[0].ref, lost[1].ref);
  for (const p of [alice, bob, carol]) {
    await waitSeqs(p, '#lobby');
    const ms = await messages(p, '#lobby');
    assert.deepEqual(ms.map((m) => m.body), expected, `${p.label} shows every message once, in order`);
    assert.deepEqual(ms.map((m) => m.seq), expected.map((_, i) => i + 1), `${p.label}: seqs 1..n`);
  }
  const mine = (await messages(carol, '#lobby')).filter((m) => m.from === 'carol');
  assert.ok(mine.every((m) => m.delivered), 'carol\'s messages are delivered');
  assert.deepEqual(await carol.$$eval('li.notice', (n) => n.map((x) => x.textContent)), [], 'nothing was lost, so no notice');
});

bt('a long gap is paged in with history {after} when the replay is truncated', async (h) => {
  // A small queue: join's replay stops early (truncated) and history replies are cut.
  const srv = await h.chatd({ storage: true, toml: '[limits]\nsend_queue_bytes = 6000\n' });
  const proxy = await h.proxy(srv.port);
  const alice = await h.page('alice');
  const carol = await h.page('carol');
  await signIn(alice, srv.url, 'alice');
  await signIn(carol, proxy.url, 'carol');
  await say(alice, 'before');
  await waitBodies(carol, '#lobby', ['before']);
  proxy.hold();
  proxy.cut();
  await carol.waitForSelector('#conn:not([data-state="online"])');
  const expected = ['before'];
  for (let i = 1; i <= 40; i++) {
    const m = `missed ${i} ` + 'x'.repeat(100);
    await say(alice, m);
    expected.push(m);
  }
  await waitBodies(alice, '#lobby', expected, 20000);
  proxy.open();
  await online(carol);
  await waitBodies(carol, '#lobby', expected, 20000);
  assert.deepEqual((await messages(carol, '#lobby')).map((m) => m.seq), expected.map((_, i) => i + 1));
  const joined = carol.recv.filter((f) => f.type === 'joined');
  assert.equal(joined.at(-1).truncated, true, 'the replay was truncated');
  const pages = carol.sent.filter((f) => f.type === 'history' && 'after' in f);
  assert.ok(pages.length >= 2, `paged with history {after} (${pages.length} requests)`);
  assert.deepEqual(carol.sent.filter((f) => f.type === 'send'), [], 'carol sent nothing');
});

bt('recovered:false: lost history is announced and reloaded', async (h) => {
  const srv = await h.chatd({ storage: false, toml: '[history]\nmessages_per_room = 5\n' });
  const proxy = await h.proxy(srv.port);
  const alice = await h.page('alice');
  const carol = await h.page('carol');
  await signIn(alice, srv.url, 'alice');
  await signIn(carol, proxy.url, 'carol');
  await say(alice, 'a1');
  await waitBodies(carol, '#lobby', ['a1']);

  // Same epoch, but the server no longer holds the start of carol's gap.
  proxy.hold();
  proxy.cut();
  await carol.waitForSelector('#conn:not([data-state="online"])');
  const all = ['a1'];
  for (let i = 2; i <= 12; i++) { await say(alice, 'a' + i); all.push('a' + i); }
  await waitBodies(alice, '#lobby', all);
  proxy.open();
  await online(carol);
  await waitBodies(carol, '#lobby', ['a1', 'a8', 'a9', 'a10', 'a11', 'a12']);
  assert.match(await carol.textContent('section[data-key="#lobby"] li.notice'), /6 messages are no longer available/);
  assert.equal(carol.recv.filter((f) => f.type === 'joined').at(-1).recovered, false);

  // A restart without storage: a new epoch. The page says so and starts over.
  await srv.restart();
  await online(carol);
  await online(alice);
  await carol.waitForSelector('li.notice:has-text("lost the history")');
  await say(alice, 'after restart');
  await waitBodies(carol, '#lobby', ['after restart']);
  assert.deepEqual((await messages(carol, '#lobby')).map((m) => m.seq), [1]);
});

bt('an idle page keeps its session through the heartbeat', async (h) => {
  const srv = await h.chatd({ storage: false, toml: '[heartbeat]\ninterval = 1\ntimeout = 3\n' });
  const alice = await h.page('alice');
  const bob = await h.page('bob');
  await signIn(alice, srv.url, 'alice');
  await signIn(bob, srv.url, 'bob');
  await until(async () => (await members(alice)).join() === 'alice,bob', 'alice to see bob');
  await sleep(7000);   // idle for more than twice heartbeat.timeout
  assert.equal(await bob.getAttribute('#conn', 'data-state'), 'online');
  assert.deepEqual(await members(alice), ['alice', 'bob'], 'no presence leave');
  assert.equal(bob.sent.filter((f) => f.type === 'hello').length, 1, 'no reconnect');
  assert.ok(bob.sent.some((f) => f.type === 'ping'), 'the idle page pinged');
  await say(bob, 'still here');
  await waitBodies(alice, '#lobby', ['still here']);
});

bt('a connection that silently died is noticed and replaced', async (h) => {
  const srv = await h.chatd({ storage: false, toml: '[heartbeat]\ninterval = 1\ntimeout = 3\n' });
  const proxy = await h.proxy(srv.port);
  const alice = await h.page('alice');
  const carol = await h.page('carol');
  await signIn(alice, srv.url, 'alice');
  await signIn(carol, proxy.url, 'carol');
  await say(alice, 'before');
  await waitBodies(carol, '#lobby', ['before']);
  // Nothing gets through any more; the server evicts carol after 3 s, but
  // her page never sees a close: it has to notice the silence by itself.
  proxy.freeze();
  const frozenAt = Date.now();
  await say(alice, 'during');
  // The page pings every second and gives up after 11 s of silence.
  await until(async () => carol.sent.filter((f) => f.type === 'hello').length === 2, 'carol to reconnect', 20000);
  const noticed = Date.now() - frozenAt;
  assert.ok(noticed >= 8000, `not before the page's own timeout (${noticed} ms)`);
  await online(carol);
  await waitBodies(carol, '#lobby', ['before', 'during']);
  const resume = carol.sent.filter((f) => f.type === 'join').at(-1);
  assert.equal(resume.since, 1);
}, 60000);

bt('usable on a narrow screen', async (h) => {
  const srv = await h.chatd({ storage: false });
  const page = await h.page('narrow', { width: 360, height: 700 });
  await page.goto(srv.url + '/?name=nina&room=lobby,dev');
  await page.click('#signin-button');
  await waitJoined(page, 'dev');
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  assert.ok(overflow <= 0, `no horizontal scrolling (overflow ${overflow}px)`);
  assert.equal(await page.isVisible('#sidebar'), false, 'rooms are in a drawer');
  await say(page, 'a long line that must wrap on a phone screen instead of making the page wider than it is');
  await waitBodies(page, '#lobby', ['a long line that must wrap on a phone screen instead of making the page wider than it is']);
  assert.ok(await page.evaluate(() => document.documentElement.scrollWidth <= document.documentElement.clientWidth));
  await page.click('#toggle-rooms');
  assert.equal(await page.getAttribute('#toggle-rooms', 'aria-expanded'), 'true');
  await page.click('button[data-key="#dev"]');
  assert.equal(await page.isVisible('#sidebar'), false, 'picking a room closes the drawer');
  assert.equal(await page.textContent('#conv-title'), '#dev');
  await page.click('#toggle-members');
  assert.deepEqual(await members(page), ['nina']);
  assert.equal(await page.isVisible('#members'), true);
  await page.keyboard.press('Escape');
  assert.equal(await page.isVisible('#members'), false);
});

bt('screenshot of a conversation for the docs', async (h) => {
  const srv = await h.chatd({ storage: false });
  const alice = await h.page('alice');
  const bob = await h.page('bob', { width: 1000, height: 560 });
  await signIn(alice, srv.url, 'alice', 'lobby, dev, random');
  await signIn(bob, srv.url, 'bob', 'lobby, dev, random');
  const lines = [
    [alice, 'Morning! Is the release still on for today?'],
    [bob, 'Yes, the last fix landed an hour ago.'],
    [alice, 'Great. I restarted chatd with storage on; history came back.'],
    [bob, 'And the page resumed by itself, no message lost or doubled.'],
    [alice, 'Shipping it then.'],
  ];
  // One at a time: the next line is typed once the previous one is on
  // bob's screen (so the server has ordered it), as people would.
  for (let i = 0; i < lines.length; i++) {
    await say(lines[i][0], lines[i][1]);
    await waitBodies(bob, '#lobby', lines.slice(0, i + 1).map((l) => l[1]));
  }
  // An edit (Up edits the last message) and reactions.
  await alice.click('#msg');
  await alice.press('#msg', 'ArrowUp');
  await alice.fill('#msg', 'Shipping it then. \u{1F680}');
  await alice.press('#msg', 'Enter');
  await waitBodies(bob, '#lobby', lines.slice(0, 4).map((l) => l[1]).concat('Shipping it then. \u{1F680}'));
  const last = 'section[data-key="#lobby"] li.msg:has(.body:text-is("Shipping it then. \u{1F680}"))';
  await bob.hover(last);
  await bob.click(`${last} button[aria-label="React with \u{1F44D}"]`);
  await alice.hover(last);
  await alice.click(`${last} button[aria-label="React with \u{1F389}"]`);
  await until(async () => (await bob.$$(`${last} .chip`)).length === 2, 'two reactions on bob\'s page');
  await openConv(alice, '#dev');
  await say(alice, 'CI is green on main');
  await say(alice, 'tagging v0.1.0');
  await alice.click('#member-list button:has-text("bob")');
  await say(alice, 'Can you look at my review when you have a minute?');
  await until(async () => (await badge(bob, '#dev')) === 2 && (await badge(bob, '@alice')) === 1, 'bob\'s unread badges');
  // alice starts writing in #lobby: bob sees her typing.
  await openConv(alice, '#lobby');
  await alice.click('#msg');
  await alice.keyboard.type('One more thing');
  await until(() => bob.isVisible('#typing'), 'bob to see alice typing');
  await bob.click('#msg');
  await bob.waitForTimeout(200);
  // docs/screenshot.png is refreshed on request, so that a test run does not
  // rewrite a tracked file: CHATD_UPDATE_SCREENSHOT=1 node --test tests/browser/
  const shot = process.env.CHATD_UPDATE_SCREENSHOT ? join(REPO, 'docs', 'screenshot.png')
    : join(ARTIFACTS, 'screenshot.png');
  await mkdir(dirname(shot), { recursive: true });
  await bob.screenshot({ path: shot });
});

process.on('exit', (code) => {
  if (code) console.error(`browser test artifacts (screenshots on failure): ${ARTIFACTS}`);
});
