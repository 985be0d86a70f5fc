// Browser tests of the conversation features (issue 14), two pages each, in
// Debian's chromium against the real chatd binary: edit and delete (Up edits
// the last message), reactions, typing, unread counts from the server's read
// markers across two tabs of one user, DM conversations with history.
// Run: CHATD_BIN=build/chatd node --test tests/browser/features.test.mjs
import assert from 'node:assert/strict';
import {
  browserTests, until, sleep,
  signIn, waitJoined, openConv, say, messages, waitBodies, badge,
} from './lib.mjs';

const bt = browserTests('feature tests', 6);

const li = (key, text) => `section[data-key="${key}"] li.msg:has(.body:text-is("${text}"))`;

bt('edit with the Up key, delete, and the other page follows', async (h) => {
  const srv = await h.chatd({ storage: true });
  const alice = await h.page('alice');
  const bob = await h.page('bob');
  await signIn(alice, srv.url, 'alice');
  await signIn(bob, srv.url, 'bob');
  await say(alice, 'helo wrold');
  await say(alice, 'second');
  await waitBodies(bob, '#lobby', ['helo wrold', 'second']);

  // Up in the empty box edits the last message; Enter saves.
  await alice.click('#msg');
  await alice.press('#msg', 'ArrowUp');
  assert.equal(await alice.inputValue('#msg'), 'second');
  assert.equal(await alice.isVisible('#edit-note'), true);
  await alice.press('#msg', 'Escape');
  assert.equal(await alice.inputValue('#msg'), '');
  // The first one, through its Edit button.
  await alice.hover(li('#lobby', 'helo wrold'));
  await alice.click(`${li('#lobby', 'helo wrold')} button:has-text("Edit")`);
  await alice.fill('#msg', 'hello world');
  await alice.press('#msg', 'Enter');
  await waitBodies(bob, '#lobby', ['hello world', 'second']);
  await bob.waitForSelector(`${li('#lobby', 'hello world')} .edited`);
  assert.ok(bob.recv.some((f) => f.type === 'edit' && f.body === 'hello world'));

  await alice.hover(li('#lobby', 'second'));
  await alice.click(`${li('#lobby', 'second')} button:has-text("Delete")`);
  await waitBodies(bob, '#lobby', ['hello world', 'This message was deleted.']);
  await waitBodies(alice, '#lobby', ['hello world', 'This message was deleted.']);
  // bob cannot edit alice's message: no Edit button on it
  assert.equal(await bob.$(`${li('#lobby', 'hello world')} button:has-text("Edit")`), null);

  // A page that loads later (or after a restart) shows the same state.
  await srv.restart();
  const carol = await h.page('carol');
  await signIn(carol, srv.url, 'carol');
  await waitBodies(carol, '#lobby', ['hello world', 'This message was deleted.']);
  await carol.waitForSelector(`${li('#lobby', 'hello world')} .edited`);
});

bt('reactions: one per user and reaction, counts agree on both pages', async (h) => {
  const srv = await h.chatd({ storage: false });
  const alice = await h.page('alice');
  const bob = await h.page('bob');
  await signIn(alice, srv.url, 'alice');
  await signIn(bob, srv.url, 'bob');
  await say(alice, 'lunch at noon?');
  await waitBodies(bob, '#lobby', ['lunch at noon?']);
  const up = '\u{1F44D}';
  await bob.hover(li('#lobby', 'lunch at noon?'));
  await bob.click(`${li('#lobby', 'lunch at noon?')} button[aria-label="React with ${up}"]`);
  const chip = `${li('#lobby', 'lunch at noon?')} .chip[data-reaction="${up}"]`;
  await until(async () => (await alice.textContent(chip).catch(() => '')) === `${up} 1`, 'alice to see 1 thumbs-up');
  await alice.click(chip);          // alice adds hers by clicking the chip
  await until(async () => (await bob.textContent(chip).catch(() => '')) === `${up} 2`, 'bob to see 2');
  await until(async () => (await alice.getAttribute(chip, 'aria-pressed')) === 'true', 'alice\'s chip pressed');
  await bob.click(chip);            // and bob takes his back
  await until(async () => (await alice.textContent(chip).catch(() => '')) === `${up} 1`, 'alice to see 1 again');
  await until(async () => (await bob.getAttribute(chip, 'aria-pressed')) === 'false', 'bob\'s chip released');
});

bt('"alice is typing…" appears on the other page and goes away', async (h) => {
  const srv = await h.chatd({ storage: false, toml: '[conversations]\ntyping_ttl = 2\n' });
  const alice = await h.page('alice');
  const bob = await h.page('bob');
  await signIn(alice, srv.url, 'alice');
  await signIn(bob, srv.url, 'bob');
  await alice.click('#msg');
  await alice.keyboard.type('hel');
  await until(async () => (await bob.textContent('#typing')) === 'alice is typing\u2026' &&
    await bob.isVisible('#typing'), 'bob to see alice typing');
  assert.equal(await alice.isVisible('#typing'), false, 'not shown to the typist');
  await alice.keyboard.type('lo');
  await alice.press('#msg', 'Enter');
  await waitBodies(bob, '#lobby', ['hello']);
  // her message ends it at once (no waiting for the ttl)
  assert.equal(await bob.isVisible('#typing'), false);
  // and without a message it expires after the ttl
  await sleep(1100);                // the server passes one signal per second
  await alice.keyboard.type('x');
  await until(() => bob.isVisible('#typing'), 'typing again', 5000);
  await until(async () => !(await bob.isVisible('#typing')), 'the signal to expire', 5000);
  assert.equal(alice.recv.filter((f) => f.type === 'typing').length, 0);
});

bt('unread counts and the divider follow the read marker across two tabs', async (h) => {
  const srv = await h.chatd({ storage: true, toml: '[limits]\nsessions_per_name = 2\n' });
  const alice = await h.page('alice');
  const tab1 = await h.page('bob tab 1');
  const tab2 = await h.page('bob tab 2');
  await signIn(alice, srv.url, 'alice', 'lobby, dev');
  await signIn(tab1, srv.url, 'bob', 'lobby, dev');
  await signIn(tab2, srv.url, 'bob', 'lobby, dev');
  await openConv(alice, '#dev');
  await say(alice, 'one');
  await say(alice, 'two');
  for (const t of [tab1, tab2]) {
    await until(async () => (await badge(t, '#dev')) === 2, `${t.label}: 2 unread in #dev`);
  }
  // tab 1 reads #dev: tab 2's count clears too (the server's read marker)
  await openConv(tab1, '#dev');
  await until(async () => (await badge(tab2, '#dev')) === 0, 'tab 2 to clear its count');
  assert.equal(await tab1.textContent('section[data-key="#dev"] li.divider'), 'New messages');
  assert.ok(tab1.sent.some((f) => f.type === 'read' && f.room === 'dev' && f.seq === 2));
  assert.ok(tab2.recv.some((f) => f.type === 'read' && f.room === 'dev' && f.seq === 2));
  // after a reload the count comes from the marker: nothing unread
  await say(alice, 'three');
  await until(async () => (await badge(tab2, '#dev')) === 1, 'tab 2: 1 unread');
  await tab2.reload();
  await tab2.fill('#name', 'bob');
  await tab2.fill('#rooms', 'lobby, dev');
  await tab2.press('#name', 'Enter');
  await waitJoined(tab2, 'dev');
  await until(async () => (await badge(tab2, '#dev')) === 0, 'no unread after reload: tab 1 has the room open');
});

bt('a DM conversation keeps its history across a restart', async (h) => {
  const srv = await h.chatd({ storage: true });
  const alice = await h.page('alice');
  const bob = await h.page('bob');
  await signIn(alice, srv.url, 'alice');
  await signIn(bob, srv.url, 'bob');
  await alice.click('#member-list button:has-text("bob")');
  await say(alice, 'are you there?');
  await until(async () => (await badge(bob, '@alice')) === 1, 'bob: 1 unread dm');
  await bob.close();
  await say(alice, 'call me when you are back');
  await until(async () => (await messages(alice, '@bob')).every((m) => m.delivered), 'both stored');
  await srv.restart();
  const bob2 = await h.page('bob, later');
  await signIn(bob2, srv.url, 'bob');
  await until(async () => (await badge(bob2, '@alice')) === 2, 'bob: 2 unread in the conversation');
  await openConv(bob2, '@alice');
  await waitBodies(bob2, '@alice', ['are you there?', 'call me when you are back']);
  await say(bob2, 'back now');
  await waitBodies(alice, '@bob', ['are you there?', 'call me when you are back', 'back now']);
});
