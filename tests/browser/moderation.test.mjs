// The web page's moderation (issue 15): moderators see kick, ban, mute and
// delete; a kicked or banned user sees why; read-only rooms say so. Real
// chatd with token authentication, tokens minted here (HS256), Debian's
// chromium through playwright-core.
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import {
  browserTests, until, waitJoined, online, say, bodies, waitBodies, members,
} from './lib.mjs';

const SECRET = 'browser-moderation-secret-0123456789abcdef';
const TOML = `[auth]\nmode = "jwt"\njwt_secret = "${SECRET}"\n` +
  '[[rooms]]\nprefix = "announce-"\nread_only = true\n';

const bt = browserTests('moderation browser tests', 5);

const b64 = (x) => Buffer.from(typeof x === 'string' ? x : JSON.stringify(x)).toString('base64url');

function token(sub, roles) {
  const claims = { sub, exp: Math.floor(Date.now() / 1000) + 600 };
  if (roles) claims.roles = roles;
  const signing = b64({ alg: 'HS256', typ: 'JWT' }) + '.' + b64(claims);
  return signing + '.' + createHmac('sha256', SECRET).update(signing).digest('base64url');
}

async function signInToken(page, base, sub, rooms, roles) {
  await page.goto(base + '/');
  await page.click('summary');
  await page.fill('#token', token(sub, roles));
  await page.fill('#name', '');
  await page.fill('#rooms', rooms);
  await page.click('#signin-button');
  await waitJoined(page, rooms.split(',')[0].trim());
  await online(page);
}

// Answer the next prompt() with text (the harness dismisses dialogs otherwise).
function answerPrompts(page, text) {
  page.removeAllListeners('dialog');
  page.on('dialog', (d) => { page.dialogs.push(d.message()); d.accept(text).catch(() => {}); });
}

bt('a moderator kicks from the member list and the user sees why', async (h) => {
  const srv = await h.chatd({ storage: false, toml: TOML });
  const mod = await h.page('mo');
  const bob = await h.page('bob');
  await signInToken(mod, srv.url, 'mo', 'lobby', { moderator: ['lobby'] });
  await signInToken(bob, srv.url, 'bob', 'lobby');
  await until(async () => (await members(mod)).join() === 'bob,mo', 'mo to see bob');
  // Only the moderator has the tools, and not on itself.
  assert.equal(await mod.locator('#member-list li[data-name="bob"] button.mod').count(), 3);
  assert.equal(await mod.locator('#member-list li[data-name="mo"] button.mod').count(), 0);
  await until(async () => (await members(bob)).join() === 'bob,mo', 'bob to see mo');
  assert.equal(await bob.locator('button.mod').count(), 0, 'members get no moderation buttons');

  answerPrompts(mod, 'spam links');
  await mod.click('#member-list li[data-name="bob"] button[data-action="kick"]');
  const why = await bob.waitForSelector('li.notice.removed');
  assert.match(await why.textContent(), /You were removed from #lobby by mo: spam links/);
  assert.equal(await bob.getAttribute('button[data-key="#lobby"]', 'aria-current'), 'true');
  await bob.waitForSelector('#room-list li[data-joined="false"] button[data-key="#lobby"]', { state: 'attached' });
  assert.equal(await bob.isDisabled('#msg'), true, 'the composer says bob is out');
  await until(async () => (await members(mod)).join() === 'mo', 'mo to see bob gone');
  const ev = await mod.waitForSelector('li.mod-event[data-action="kick"]');
  assert.match(await ev.textContent(), /mo removed bob from the room: spam links/);
  const sent = mod.sent.find((f) => f.type === 'kick');
  assert.deepEqual({ room: sent.room, user: sent.user, reason: sent.reason },
    { room: 'lobby', user: 'bob', reason: 'spam links' });
});

bt('ban, mute and delete from the page', async (h) => {
  const srv = await h.chatd({ storage: false, toml: TOML });
  const mod = await h.page('mo');
  const bob = await h.page('bob');
  const carol = await h.page('carol');
  await signInToken(mod, srv.url, 'mo', 'lobby', { owner: ['lobby'] });
  await signInToken(bob, srv.url, 'bob', 'lobby');
  await signInToken(carol, srv.url, 'carol', 'lobby');
  await until(async () => (await members(mod)).length === 3, 'everyone in');

  await say(carol, 'something rude');
  await waitBodies(mod, '#lobby', ['something rude']);
  await mod.click('section[data-key="#lobby"] li.msg button.delete');
  await until(async () => (await bodies(carol, '#lobby'))[0] === 'Message deleted by a moderator',
    'carol to see her message deleted');
  await until(async () => (await bodies(bob, '#lobby'))[0] === 'Message deleted by a moderator',
    'bob to see it deleted');

  answerPrompts(mod, 'be nice');
  await mod.click('#member-list li[data-name="carol"] button[data-action="mute"]');
  await carol.waitForSelector('li.mod-event[data-action="mute"]');
  await say(carol, 'am I muted?');
  await carol.waitForSelector('li.msg.failed');
  assert.match(await carol.textContent('li.msg.failed .state'), /muted/);

  answerPrompts(mod, 'raid');
  await mod.click('#member-list li[data-name="bob"] button[data-action="ban"]');
  const why = await bob.waitForSelector('li.notice.removed');
  assert.match(await why.textContent(), /You were banned from #lobby by mo: raid/);
  // A reload does not get bob back in: the ban holds and the page says so.
  await bob.reload();
  await bob.click('summary');
  await bob.fill('#token', token('bob'));
  await bob.fill('#name', '');
  await bob.fill('#rooms', 'lobby');
  await bob.click('#signin-button');
  await online(bob);
  const refused = await bob.waitForSelector('li.notice:has-text("Could not join #lobby")');
  assert.match(await refused.textContent(), /banned/);
});

bt('a read-only room: members read, the composer says why', async (h) => {
  const srv = await h.chatd({ storage: false, toml: TOML });
  const mod = await h.page('mo');
  const bob = await h.page('bob');
  await signInToken(mod, srv.url, 'mo', 'announce-news', { moderator: ['announce-*'] });
  await signInToken(bob, srv.url, 'bob', 'announce-news');
  assert.equal(await bob.isDisabled('#msg'), true);
  assert.match(await bob.getAttribute('#msg', 'placeholder'), /Read-only room/);
  assert.equal(await mod.isDisabled('#msg'), false);
  await say(mod, 'release 1.0 is out');
  await waitBodies(bob, '#announce-news', ['release 1.0 is out']);
});
