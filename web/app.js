// chatd web client: plain JavaScript, no framework, no build step.
// Speaks chat.v1 (docs/protocol.md); behaviour is described in docs/web.md.
'use strict';

(() => {
  const NAME_RE = /^[A-Za-z0-9_.-]{1,32}$/;
  const ROOM_RE = /^[A-Za-z0-9_.:-]{1,64}$/;
  const MOD = '!mod';          // the sender of moderation events (no client can have it)
  const PAGE = 100;            // messages per history request
  const KEEP = 2000;           // messages kept per conversation in the page
  const CONNECT_TIMEOUT = 10000;
  const TYPING_EVERY = 3000;   // ms between our typing signals while writing
  const REACTIONS = ['\u{1F44D}', '\u2764\uFE0F', '\u{1F602}', '\u{1F389}', '\u{1F62E}'];
  const $ = (id) => document.getElementById(id);

  // The conversation room of two users: "@" + the names in order + ":".
  function dmRoom(a, b) { return '@' + (a < b ? a + ':' + b : b + ':' + a); }

  // The page's key of a server room: '#room', or '@peer' for a conversation.
  function keyOf(room) {
    if (room[0] !== '@') return '#' + room;
    const [a, b] = room.slice(1).split(':');
    return '@' + (a === st.me ? b : a);
  }

  const st = {
    ws: null,
    online: false,             // welcome received on the current socket
    me: '',                    // name from welcome
    login: null,               // {name, token}: what hello sends
    welcomed: false,           // a welcome was ever received (reconnects retry on errors)
    convs: new Map(),          // '#room' or '@name' -> conversation
    active: null,
    pending: new Map(),        // message id -> unacked outgoing message (insertion order = send order)
    replies: new Map(),        // ref -> handler, for the current socket only
    nextRef: 1,
    attempt: 0,
    retryAt: 0,
    retryTimer: 0,
    connectTimer: 0,
    hbMs: 25000,
    lastSent: 0,
    lastRecv: 0,
    focusOnJoin: null,
    waitReason: '',
    editing: null,             // {c, seq}: the composer edits that message
    typingAt: 0,               // when we last sent typing
    typers: new Map(),         // key -> Map(name -> expiry ms)
  };

  // ---- small DOM helpers -------------------------------------------------

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function srOnly(text) { return el('span', 'sr-only', text); }

  function newId() {
    const b = new Uint8Array(8);
    crypto.getRandomValues(b);
    return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  }

  function fmtTime(ts) {
    const d = new Date(ts);
    const now = new Date();
    const hm = d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    return d.toDateString() === now.toDateString() ? hm : d.toLocaleDateString() + ' ' + hm;
  }

  function setTime(t, ts) {
    const d = new Date(ts);
    t.dateTime = d.toISOString();
    t.title = d.toLocaleString();
    t.textContent = fmtTime(ts);
  }

  // ---- connection --------------------------------------------------------

  function setConn(state, text) {
    $('conn').dataset.state = state;
    $('conn-text').textContent = text;
    $('retry').hidden = state !== 'waiting';
  }

  function send(obj) {
    if (!st.ws || st.ws.readyState !== WebSocket.OPEN) return false;
    st.ws.send(JSON.stringify(obj));
    st.lastSent = Date.now();
    return true;
  }

  // Send a command with a fresh ref; handler gets the direct reply (or error).
  function request(cmd, handler) {
    cmd.ref = 'r' + st.nextRef++;
    if (handler) st.replies.set(cmd.ref, handler);
    return send(cmd);
  }

  function connect() {
    clearTimeout(st.retryTimer);
    st.retryTimer = 0;
    if (st.ws) return;
    const url = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws';
    let ws;
    try {
      ws = new WebSocket(url, 'chat.v1');
    } catch (e) {
      retryLater('cannot connect');
      return;
    }
    st.ws = ws;
    setConn('connecting', st.welcomed ? 'Reconnecting…' : 'Connecting…');
    st.connectTimer = setTimeout(() => disconnect('timed out'), CONNECT_TIMEOUT);
    ws.onopen = () => {
      clearTimeout(st.connectTimer);
      st.lastRecv = Date.now();
      const hello = { type: 'hello' };
      if (st.login.name) hello.name = st.login.name;
      if (st.login.token) hello.token = st.login.token;
      request(hello, onHello);
    };
    ws.onmessage = (ev) => {
      let f;
      try { f = JSON.parse(ev.data); } catch (e) { return; }
      if (ws === st.ws) onFrame(f);
    };
    ws.onclose = () => { if (ws === st.ws) closed(''); };
  }

  // The current socket is gone (or given up): forget it, retry if signed in.
  function closed(reason) {
    clearTimeout(st.connectTimer);
    st.ws = null;
    st.online = false;
    st.replies.clear();
    for (const c of st.convs.values()) {
      c.joined = false;
      c.joining = false;
      c.filling = false;
      if (c.kind === 'room') c.item.dataset.joined = 'false';
    }
    for (const p of st.pending.values()) p.inflight = false;
    if (st.login) retryLater(reason);
  }

  // Give up on the current socket now, without waiting for its close handshake.
  function disconnect(reason) {
    const ws = st.ws;
    if (!ws) return;
    closed(reason);
    ws.close();
  }

  function retryLater(reason) {
    const base = Math.min(15000, 500 * 2 ** st.attempt++);
    const delay = Math.round(base * (0.75 + Math.random() * 0.5));
    st.retryAt = Date.now() + delay;
    clearTimeout(st.retryTimer);
    st.retryTimer = setTimeout(connect, delay);
    st.waitReason = reason || '';
    tick();
  }

  // Once a second: the countdown, idle pings, and dead-socket detection.
  // The server pings every `heartbeat` s; browsers answer those pings
  // themselves, but a frame of our own keeps the session alive in any case.
  function tick() {
    const now = Date.now();
    if (st.retryTimer) {
      if (!navigator.onLine) {
        setConn('waiting', 'Offline, waiting for the network');
      } else {
        const s = Math.max(1, Math.ceil((st.retryAt - now) / 1000));
        setConn('waiting', 'Disconnected' + (st.waitReason ? ' (' + st.waitReason + ')' : '') +
          ', retrying in ' + s + ' s');
      }
    }
    if (st.online) {
      const every = Math.min(20000, Math.max(1000, st.hbMs / 2));
      if (now - st.lastSent >= every) request({ type: 'ping' });
      if (now - st.lastRecv > every + 10000) disconnect('no answer');
    }
  }

  function onHello(f) {
    if (f.type !== 'welcome') {
      const msg = f.code === 'conflict' ? 'this name is already online' : (f.message || f.code);
      if (!st.welcomed) {
        // First sign-in failed: back to the form, no retries.
        st.login = null;
        disconnect();
        for (const c of st.convs.values()) { c.section.remove(); c.item.remove(); }
        st.convs.clear();
        st.pending.clear();
        st.active = null;
        showSignin(msg);
        setConn('idle', 'Not connected');
      } else {
        disconnect(msg);   // e.g. our old session is not released yet: retry with backoff
      }
      return;
    }
    st.online = true;
    st.welcomed = true;
    st.me = f.name;
    st.attempt = 0;
    st.hbMs = (Number(f.heartbeat) || 25) * 1000;
    setConn('online', 'Connected');
    showChat();
    for (const c of st.convs.values()) if (!c.removed) joinRoom(c);
    request({ type: 'conversations' }, (f) => {
      if (f.type !== 'conversations') return;
      for (const x of f.conversations) {
        const c = openDm('@' + x.with);
        c.read = Math.max(c.read, x.read);
        if (!c.log.querySelector('li.msg')) { c.unread = x.unread; renderBadge(c); }
      }
    });
    flushPending(null);
  }

  function onFrame(f) {
    st.lastRecv = Date.now();
    if (typeof f.ref === 'string' && st.replies.has(f.ref)) {
      const h = st.replies.get(f.ref);
      st.replies.delete(f.ref);
      h(f);
      return;
    }
    switch (f.type) {
      case 'message':
      case 'edit':
      case 'delete':
      case 'react': {
        const key = keyOf(f.room);
        const c = st.convs.get(key) || (key[0] === '@' ? openDm(key) : null);
        if (c) addRoomMessage(c, f, 'live');
        break;
      }
      case 'typing': onTyping(f); break;
      case 'read': onRead(f); break;
      case 'presence': onPresence(f); break;
      case 'direct': onDirect(f); break;
      case 'kicked':
      case 'banned': onRemoved(f); break;
      case 'token_expiring': onTokenExpiring(f); break;
      case 'error': console.warn('chatd error', f.code, f.message); break;
      default: break;
    }
  }

  // ---- conversations -----------------------------------------------------

  function conv(key) {
    let c = st.convs.get(key);
    if (c) return c;
    const kind = key[0] === '#' ? 'room' : 'dm';
    c = {
      key, kind, name: key.slice(1), unread: 0,
      // rooms: epoch + highest contiguous seq held (top), highest seq known (want)
      epoch: '', top: 0, want: 0, joined: false, filling: false, oldest: Infinity,
      seqs: new Map(), members: new Set(), ids: new Set(),
      room: '', read: 0, reacts: new Map(), readTimer: 0,
      role: 'member', settings: {}, removed: false,
    };
    c.room = kind === 'room' ? c.name : dmRoom(st.me, c.name);
    c.section = el('section', 'conv');
    c.section.hidden = true;
    c.section.dataset.key = key;
    {
      c.older = el('button', 'older link', 'Load earlier messages');
      c.older.type = 'button';
      c.older.hidden = true;
      c.older.addEventListener('click', () => loadOlder(c));
      c.section.append(c.older);
    }
    c.log = el('ol', 'log');
    c.log.setAttribute('role', 'log');
    c.log.setAttribute('aria-live', 'polite');
    c.log.setAttribute('aria-label', 'Messages in ' + label(c));
    c.section.append(c.log);
    $('logs').append(c.section);

    c.item = el('li', 'conv-item');
    if (kind === 'room') c.item.dataset.joined = 'false';
    c.button = el('button', 'conv-button');
    c.button.type = 'button';
    c.button.dataset.key = key;
    c.button.append(el('span', 'conv-name', label(c)));
    c.badge = el('span', 'badge');
    c.badge.hidden = true;
    c.button.append(c.badge);
    c.button.addEventListener('click', () => { activate(key, true); closeDrawers(); });
    c.item.append(c.button);
    if (kind === 'room') {
      const leave = el('button', 'leave', '×');
      leave.type = 'button';
      leave.title = 'Leave ' + label(c);
      leave.setAttribute('aria-label', 'Leave ' + label(c));
      leave.addEventListener('click', () => leaveRoom(c));
      c.item.append(leave);
    }
    $(kind === 'room' ? 'room-list' : 'dm-list').append(c.item);
    $('dm-help').hidden = [...st.convs.values()].some((x) => x.kind === 'dm') || kind === 'dm';
    st.convs.set(key, c);
    return c;
  }

  function label(c) { return (c.kind === 'room' ? '#' : '@') + c.name; }

  function activate(key, focus) {
    const c = st.convs.get(key);
    if (!c) return;
    st.active = key;
    for (const x of st.convs.values()) {
      x.section.hidden = x !== c;
      if (x === c) x.button.setAttribute('aria-current', 'true');
      else x.button.removeAttribute('aria-current');
    }
    $('conv-title').textContent = label(c);
    $('msg-label').textContent = 'Message ' + label(c);
    $('msg').placeholder = 'Message ' + label(c);
    cancelEdit();
    placeDivider(c);
    updateUnread(c);
    renderMembers();
    renderTyping();
    renderComposer();
    scrollDown(c, true);
    if (focus) $('msg').focus();
  }

  function renderBadge(c) {
    c.badge.hidden = c.unread === 0;
    c.badge.textContent = '';
    if (c.unread) c.badge.append(String(c.unread), srOnly(' unread'));
    let total = 0;
    for (const x of st.convs.values()) total += x.unread;
    const t = $('total-unread');
    t.hidden = total === 0;
    t.textContent = total ? String(total) : '';
  }

  function renderMembers() {
    const list = $('member-list');
    list.textContent = '';
    const c = st.convs.get(st.active);
    if (!c) return;
    const names = c.kind === 'room' ? [...c.members].sort() : [c.name];
    $('members-title').textContent = c.kind === 'room' ? 'Members (' + names.length + ')' : 'Direct messages';
    for (const n of names) {
      const li = el('li', 'member');
      li.dataset.name = n;
      const dot = el('span', 'dot', '');
      dot.setAttribute('aria-hidden', 'true');
      if (n === st.me) {
        li.append(dot, el('span', 'member-name', n), el('span', 'you', ' (you)'));
      } else if (c.kind === 'room') {
        const b = el('button', 'member-name', n);
        b.type = 'button';
        b.title = 'Write to ' + n;
        b.addEventListener('click', () => { openDm('@' + n); activate('@' + n, true); closeDrawers(); });
        li.append(dot, b);
        if (isMod(c)) li.append(modTools(c, n));
      } else {
        li.append(el('span', 'member-name', n));
      }
      list.append(li);
    }
  }

  function nearBottom(c) {
    const s = c.section;
    return s.scrollHeight - s.scrollTop - s.clientHeight < 80;
  }

  function scrollDown(c, force) {
    if (force || c.stick) c.section.scrollTop = c.section.scrollHeight;
  }

  // Insert li in the log by its order key (seq; notices go after a seq;
  // unacked own messages, order Infinity, stay at the end).
  function place(c, li, order) {
    li.dataset.order = String(order);
    c.stick = nearBottom(c);
    let ref = c.log.lastElementChild;
    while (ref && Number(ref.dataset.order) > order) ref = ref.previousElementSibling;
    if (ref) ref.after(li); else c.log.prepend(li);
    scrollDown(c);
  }

  function notice(c, text) {
    const li = el('li', 'notice', text);
    place(c, li, c.top + 0.5);
  }

  function renderMsg(from, body, ts, mine) {
    const li = el('li', 'msg' + (mine ? ' mine' : ''));
    const meta = el('div', 'meta');
    const t = el('time', 'ts');
    setTime(t, ts);
    meta.append(el('span', 'from', from), ' ', t);
    li.append(meta, el('p', 'body', body), el('div', 'reactions'), actions(li, mine));
    return li;
  }

  // ---- edit, delete, react (sequenced events about a target seq) ----------

  function actions(li, mine) {
    const bar = el('div', 'actions');
    const btn = (text, title, fn) => {
      const b = el('button', 'act', text);
      b.type = 'button';
      b.title = title;
      b.setAttribute('aria-label', title);
      b.addEventListener('click', () => fn(li));
      bar.append(b);
      return b;
    };
    for (const r of REACTIONS) btn(r, 'React with ' + r, () => react(li, r));
    if (mine) {
      btn('Edit', 'Edit this message', () => startEdit(li));
      btn('Delete', 'Delete this message', () => del(li));
    }
    return bar;
  }

  function convOf(li) { return st.convs.get(li.closest('section').dataset.key); }

  function react(li, reaction) {
    const c = convOf(li);
    const seq = Number(li.dataset.seq);
    if (!c || !seq || !st.online) return;
    const names = (c.reacts.get(seq) || new Map()).get(reaction);
    const on = !(names && names.has(st.me));
    request({ type: 'react', room: c.room, seq, reaction, on, id: newId() }, (f) => {
      if (f.type === 'error') notice(c, 'Reaction not sent: ' + (f.message || f.code));
    });
  }

  function del(li) {
    const c = convOf(li);
    const seq = Number(li.dataset.seq);
    if (!c || !seq || !st.online) return;
    request({ type: 'delete', room: c.room, seq, id: newId() }, (f) => {
      if (f.type === 'error') notice(c, 'Not deleted: ' + (f.message || f.code));
    });
  }

  function startEdit(li) {
    const c = convOf(li);
    if (!c || !li.dataset.seq || li.classList.contains('deleted')) return;
    st.editing = { c, seq: Number(li.dataset.seq) };
    $('composer').classList.add('editing');
    $('edit-note').hidden = false;
    $('msg').value = li.querySelector('.body').textContent;
    $('msg').focus();
  }

  function cancelEdit() {
    if (!st.editing) return;
    st.editing = null;
    $('composer').classList.remove('editing');
    $('edit-note').hidden = true;
    $('msg').value = '';
  }

  function sendEdit(body) {
    const { c, seq } = st.editing;
    cancelEdit();
    request({ type: 'edit', room: c.room, seq, body, id: newId() }, (f) => {
      if (f.type === 'error') notice(c, 'Not edited: ' + (f.message || f.code));
    });
  }

  // The last message of ours in the open conversation that can be edited.
  function lastOwn() {
    const c = st.convs.get(st.active);
    if (!c) return null;
    const mine = c.log.querySelectorAll('li.msg.mine[data-seq]:not(.deleted)');
    return mine.length ? mine[mine.length - 1] : null;
  }

  function tombstone(c, li) {
    li.classList.add('deleted');
    li.querySelector('.body').textContent = 'This message was deleted.';
    li.querySelector('.reactions').textContent = '';
    const a = li.querySelector('.actions');
    if (a) a.remove();
    c.reacts.delete(Number(li.dataset.seq));
  }

  function renderReactions(c, li) {
    const box = li.querySelector('.reactions');
    box.textContent = '';
    const seq = Number(li.dataset.seq);
    for (const [r, names] of c.reacts.get(seq) || []) {
      if (!names.size) continue;
      const b = el('button', 'chip', r + ' ' + names.size);
      b.type = 'button';
      b.dataset.reaction = r;
      b.title = [...names].sort().join(', ');
      b.setAttribute('aria-pressed', String(names.has(st.me)));
      b.addEventListener('click', () => react(li, r));
      box.append(b);
    }
  }

  // What an edit, delete or react event does to its target (the rules of
  // docs/protocol.md: void for a deleted target or another sender's edit).
  function applyEvent(c, m) {
    const t = c.seqs.get(m.target);
    if (!t || !t.classList.contains('msg')) return;
    if (m.type === 'edit') {
      if (t.classList.contains('deleted') || m.deleted || t.querySelector('.from').textContent !== m.from) return;
      t.querySelector('.body').textContent = m.body;
      if (!t.querySelector('.edited')) t.querySelector('.meta').append(' ', el('span', 'edited', '(edited)'));
    } else if (m.type === 'delete') {
      tombstone(c, t);
    } else if (m.type === 'react' && !t.classList.contains('deleted')) {
      const per = c.reacts.get(m.target) || new Map();
      c.reacts.set(m.target, per);
      const names = per.get(m.reaction) || new Set();
      per.set(m.reaction, names);
      if (m.on) names.add(m.from); else names.delete(m.from);
      renderReactions(c, t);
    }
  }

  function addEvent(c, m) {
    if (c.seqs.has(m.seq)) return;
    const li = el('li', 'ev');
    li.hidden = true;
    li.dataset.seq = String(m.seq);
    c.seqs.set(m.seq, li);
    place(c, li, m.seq);
    applyEvent(c, m);
    advance(c, m.seq);
    trim(c);
  }

  // ---- unread counts from the server's read markers ----------------------

  function visible(c) { return c.key === st.active && document.visibilityState === 'visible'; }

  // Unread: messages of others past our read marker. The open conversation
  // is read: its marker moves to what it shows (and the server tells our
  // other sessions).
  function updateUnread(c) {
    if (visible(c) && st.online && c.joined && c.top > c.read) markRead(c);
    let n = 0;
    for (const li of c.log.querySelectorAll('li.msg[data-seq]:not(.mine):not(.deleted)')) {
      if (Number(li.dataset.seq) > c.read) n++;
    }
    c.unread = n;
    renderBadge(c);
  }

  // At once, then at most one more per 500 ms (a burst of messages moves
  // the marker once; a tab closed right after reading has sent it).
  function markRead(c) {
    c.read = c.top;
    if (c.readTimer) { c.readDirty = true; return; }
    request({ type: 'read', room: c.room, seq: c.read });
    c.readTimer = setTimeout(() => {
      c.readTimer = 0;
      if (c.readDirty && st.online && c.joined) { c.readDirty = false; markRead(c); }
    }, 500);
  }

  function onRead(f) {
    const c = st.convs.get(keyOf(f.room));
    if (!c || f.seq <= c.read) return;
    c.read = f.seq;
    updateUnread(c);
  }

  // "New messages" before the first unread message of others, when opened.
  function placeDivider(c) {
    const old = c.log.querySelector('li.divider');
    if (old) old.remove();
    for (const li of c.log.querySelectorAll('li.msg[data-seq]:not(.mine)')) {
      const seq = Number(li.dataset.seq);
      if (seq > c.read) {
        const d = el('li', 'divider', 'New messages');
        d.dataset.order = String(seq - 0.5);
        li.before(d);
        return;
      }
    }
  }

  // ---- typing --------------------------------------------------------------

  function onTyping(f) {
    const key = keyOf(f.room);
    const map = st.typers.get(key) || new Map();
    st.typers.set(key, map);
    if (f.on) map.set(f.from, Date.now() + (Number(f.ttl) || 5000));
    else map.delete(f.from);
    renderTyping();
  }

  function renderTyping() {
    const map = st.typers.get(st.active);
    const now = Date.now();
    const names = [];
    for (const [n, until] of map || []) if (until > now) names.push(n); else map.delete(n);
    const p = $('typing');
    p.hidden = !names.length;
    p.textContent = names.length === 1 ? names[0] + ' is typing\u2026'
      : names.length ? names.sort().join(', ') + ' are typing\u2026' : '';
  }

  function typed() {
    const c = st.convs.get(st.active);
    const now = Date.now();
    if (!c || !c.joined || !st.online || st.editing || !$('msg').value.trim() || now - st.typingAt < TYPING_EVERY) return;
    st.typingAt = now;
    request({ type: 'typing', room: c.room });
  }

  function setMsgState(p, state, text) {
    const li = p.li;
    li.classList.remove('pending', 'delivered', 'failed');
    li.classList.add(state);
    let s = li.querySelector('.state');
    if (!s) { s = el('span', 'state'); li.querySelector('.meta').append(' ', s); }
    s.textContent = '';
    if (state === 'delivered') s.append('✓', srOnly(' delivered'));
    else s.textContent = text;
    if (state === 'failed') {
      const b = el('button', 'link', 'Retry');
      b.type = 'button';
      b.addEventListener('click', () => {
        st.pending.set(p.id, p);
        setMsgState(p, 'pending', 'sending…');
        transmit(p);
      });
      s.append(' ', b);
    }
  }


  function trim(c) {
    while (c.log.childElementCount > KEEP) {
      const li = c.log.firstElementChild;
      if (li.dataset.seq) c.seqs.delete(Number(li.dataset.seq));
      li.remove();
    }
    const first = c.log.querySelector('li[data-seq]');
    c.oldest = first ? Number(first.dataset.seq) : Infinity;
    if (c.older) c.older.hidden = !(c.oldest > 1 && c.oldest !== Infinity);
  }

  // ---- rooms: join, resume, gaps -----------------------------------------

  function addRoom(name, focus) {
    const c = conv('#' + name);
    if (!st.active) activate(c.key, false);
    if (focus) { activate(c.key, false); st.focusOnJoin = c.key; }
    if (st.online && !c.joined) joinRoom(c);
    return c;
  }

  // A DM conversation, opened (and joined) on first use.
  function openDm(key) {
    const c = conv(key);
    if (st.online && !c.joined) joinRoom(c);
    return c;
  }

  function joinRoom(c) {
    if (c.joining) return;
    const cmd = { type: 'join', room: c.room };
    const resume = c.epoch !== '';
    if (resume) { cmd.since = c.top; cmd.epoch = c.epoch; }
    c.joining = true;
    request(cmd, (f) => {
      c.joining = false;
      if (f.type !== 'joined') {
        notice(c, 'Could not join ' + label(c) + ': ' + (f.message || f.code));
        return;
      }
      onJoined(c, f, resume);
    });
  }

  function onJoined(c, f, resume) {
    c.joined = true;
    c.removed = false;
    c.item.dataset.joined = 'true';
    c.read = Math.max(c.read, Number(f.read) || 0);
    c.members = new Set(f.members);
    c.role = f.role || 'member';
    c.settings = f.settings || {};
    c.section.dataset.role = c.role;
    if (st.active === c.key) renderComposer();
    if (st.active === c.key) renderMembers();
    if (!resume || f.epoch !== c.epoch || f.seq < c.top) {
      if (resume && c.top > 0) {
        // The room's seq history started over (e.g. a restart without storage).
        // (A room that never had a message gets a new epoch too: nothing lost.)
        clearRoom(c);
        notice(c, 'The server lost the history of ' + label(c) + ' (it was probably restarted). Showing what it has now.');
      }
      c.epoch = f.epoch;
      c.top = c.want = f.seq;
      if (f.seq > 0) {
        request({ type: 'history', room: c.room, before: f.seq + 1, limit: 50 }, (h) => {
          if (h.type !== 'history') return;
          for (const m of h.messages) addRoomMessage(c, m, 'context');
          if (c.key === st.active) placeDivider(c);
          updateUnread(c);
        });
      }
    } else {
      // recovered:false with the same epoch: the older part of the gap is gone;
      // fill() notices the hole and says so. truncated: fill() pages the rest.
      c.want = Math.max(c.want, f.seq);
    }
    fill(c);
    updateUnread(c);         // the replay came before joined: the marker moves now
    if (st.focusOnJoin === c.key) {
      st.focusOnJoin = null;
      if (st.active === c.key) $('msg').focus();
    }
  }

  function clearRoom(c) {
    c.log.textContent = '';
    c.seqs.clear();
    c.top = c.want = 0;
    c.oldest = Infinity;
    // Unacked sends stay: they are resent into the room's new history.
    for (const p of st.pending.values()) if (p.key === c.key) place(c, p.li, Infinity);
  }

  // A message event (live or replayed), a history item, or our own ack.
  function addRoomMessage(c, m, how) {
    if (m.type && m.type !== 'message') { addEvent(c, m); return; }
    const have = c.seqs.get(m.seq);
    if (have) {
      // Already shown (our own message, placed by its ack): take the server's time.
      if (have.dataset.local) { setTime(have.querySelector('time'), m.ts); delete have.dataset.local; }
      return;
    }
    let li;
    const p = m.from === st.me ? st.pending.get(m.id) : null;
    if (m.from === MOD) {
      li = modEvent(c, m, how);
    } else if (p && p.key === c.key) {
      // Our own message, accepted before its ack reached us.
      st.pending.delete(p.id);
      li = p.li;
      setMsgState(p, 'delivered');
      setTime(li.querySelector('time'), m.ts);
      delete li.dataset.local;
    } else {
      li = renderMsg(m.from, m.body, m.ts, m.from === st.me);
      if (m.from === st.me) li.classList.add('delivered');
      if (m.body === '' && c.deleted && c.deleted.has(m.seq)) markDeleted(li);
      else if (isMod(c)) li.append(deleteButton(c, m.seq));
    }
    li.dataset.seq = String(m.seq);
    li.dataset.id = m.id;
    c.seqs.set(m.seq, li);
    place(c, li, m.seq);
    if (m.deleted) tombstone(c, li);
    const typers = st.typers.get(c.key);
    if (typers && typers.delete(m.from)) renderTyping();
    advance(c, m.seq);
    trim(c);
    updateUnread(c);
  }

  function advance(c, seq) {
    c.want = Math.max(c.want, seq);
    while (c.seqs.has(c.top + 1)) c.top++;
    if (c.joined) fill(c);
  }

  // Fetch what is missing between top and want with history {after}, page by
  // page (a reply may be cut to the queue budget). When all is there, resend
  // this room's unacked messages.
  function fill(c) {
    if (!c.joined || c.filling || !st.online) return;
    if (c.top >= c.want) { flushPending(c.key); return; }
    const after = c.top;
    c.filling = true;
    request({ type: 'history', room: c.room, after, limit: PAGE }, (f) => {
      c.filling = false;
      if (f.type !== 'history') {
        notice(c, 'Could not load missing messages: ' + (f.message || f.code));
        return;
      }
      const ms = f.messages;
      const first = ms.length ? ms[0].seq : c.want + 1;
      if (c.top === after && first > after + 1) {
        const lost = Math.min(first, c.want + 1) - after - 1;
        if (lost > 0) {
          notice(c, lost + (lost === 1 ? ' message is' : ' messages are') + ' no longer available on the server.');
          c.top = Math.min(first, c.want + 1) - 1;
        }
      }
      for (const m of ms) addRoomMessage(c, m, 'fill');
      advance(c, c.top);
    });
  }

  function loadOlder(c) {
    if (!st.online || c.oldest === Infinity) return;
    const top = c.section.scrollHeight - c.section.scrollTop;
    request({ type: 'history', room: c.room, before: c.oldest, limit: 50 }, (f) => {
      if (f.type !== 'history') return;
      for (const m of f.messages) addRoomMessage(c, m, 'context');
      if (!f.messages.length) c.older.hidden = true;
      c.section.scrollTop = c.section.scrollHeight - top;
    });
  }

  function leaveRoom(c) {
    if (st.online && c.joined) request({ type: 'leave', room: c.room });
    for (const p of [...st.pending.values()]) if (p.key === c.key) st.pending.delete(p.id);
    st.convs.delete(c.key);
    c.section.remove();
    c.item.remove();
    if (st.active === c.key) {
      st.active = null;
      const next = st.convs.keys().next();
      if (!next.done) activate(next.value, false);
      else { $('conv-title').textContent = 'Join a room to start'; renderMembers(); }
    }
    renderBadge(c);
  }

  function onPresence(f) {
    const c = st.convs.get('#' + f.room);
    if (!c) return;
    if (f.state === 'join') {
      c.members.add(f.name);
    } else {
      c.members.delete(f.name);
      // With several sessions per name, one leaving does not mean the name left.
      request({ type: 'members', room: c.name }, (m) => {
        if (m.type !== 'members') return;
        c.members = new Set(m.names);
        if (st.active === c.key) renderMembers();
      });
    }
    if (st.active === c.key) renderMembers();
  }

  // ---- roles and moderation (docs/protocol.md#roles-and-moderation) -------

  function isMod(c) { return c.kind === 'room' && (c.role === 'moderator' || c.role === 'owner'); }

  // Run a moderation command; a refusal is shown in the room.
  function modCommand(c, cmd) {
    request(Object.assign({ room: c.name }, cmd), (f) => {
      if (f.type !== 'ack') notice(c, 'Could not ' + cmd.type + ': ' + (f.message || f.code));
    });
  }

  function modTools(c, name) {
    const box = el('span', 'mod-tools');
    for (const [type, text] of [['kick', 'Kick'], ['ban', 'Ban'], ['mute', 'Mute']]) {
      const b = el('button', 'mod ' + type, text);
      b.type = 'button';
      b.dataset.action = type;
      b.title = text + ' ' + name;
      b.setAttribute('aria-label', text + ' ' + name);
      b.addEventListener('click', () => {
        const reason = window.prompt(text + ' ' + name + ' in ' + label(c) + '. Reason (optional):', '');
        if (reason === null) return;
        const cmd = { type, user: name };
        if (reason.trim()) cmd.reason = reason.trim().slice(0, 256);
        modCommand(c, cmd);
      });
      box.append(b);
    }
    return box;
  }

  function deleteButton(c, seq) {
    const b = el('button', 'mod delete link', 'Delete');
    b.type = 'button';
    b.setAttribute('aria-label', 'Delete this message');
    b.addEventListener('click', () => modCommand(c, { type: 'delete', seq }));
    return b;
  }

  function markDeleted(li) {
    li.classList.add('deleted');
    const body = li.querySelector('.body');
    if (body) body.textContent = 'Message deleted by a moderator';
    const b = li.querySelector('button.delete');
    if (b) b.remove();
  }

  // A moderation event from the room's history, as a line of text.
  function modEvent(c, m, how) {
    let ev = {};
    try { ev = JSON.parse(m.body); } catch (e) { /* shown as unknown */ }
    const who = typeof ev.by === 'string' ? ev.by : 'a moderator';
    const why = typeof ev.reason === 'string' && ev.reason ? ': ' + ev.reason : '';
    const until = ev.until ? ' until ' + new Date(ev.until).toLocaleString() : '';
    let text;
    switch (ev.action) {
      case 'kick': text = who + ' removed ' + ev.user + ' from the room' + why; break;
      case 'ban': text = who + ' banned ' + ev.user + until + why; break;
      case 'unban': text = who + ' lifted the ban on ' + ev.user; break;
      case 'mute': text = who + ' muted ' + ev.user + until + why; break;
      case 'unmute': text = who + ' unmuted ' + ev.user; break;
      case 'invite': text = who + ' invited ' + ev.user; break;
      case 'grant': text = who + ' made ' + ev.user + ' ' + ev.role; break;
      case 'delete': text = who + ' deleted a message'; break;
      case 'settings': text = who + ' changed the room settings' +
        (typeof ev.topic === 'string' ? ' (topic: ' + ev.topic + ')' : ''); break;
      default: text = 'moderation: ' + (ev.action || '?');
    }
    const li = el('li', 'notice mod-event', text);
    li.dataset.action = String(ev.action || '');
    if (ev.action === 'delete' && Number.isInteger(ev.seq)) {
      (c.deleted || (c.deleted = new Set())).add(ev.seq);
      const target = c.seqs.get(ev.seq);
      if (target) markDeleted(target);
    }
    if (how === 'live' && ev.action === 'settings') {
      for (const k of ['private', 'read_only', 'history', 'topic']) if (k in ev) c.settings[k] = ev[k];
      if (st.active === c.key) renderComposer();
    }
    // A new role of ours: joined says what it is now (token and grant together).
    if (how === 'live' && ev.action === 'grant' && ev.user === st.me) joinRoom(c);
    return li;
  }

  // kicked / banned: this session is out of the room, and is told why.
  function onRemoved(f) {
    const c = st.convs.get('#' + f.room);
    if (!c) return;
    c.joined = false;
    c.removed = true;
    c.item.dataset.joined = 'false';
    c.members.clear();
    const what = f.type === 'banned' ? 'banned from' : 'removed from';
    const until = f.type === 'banned' && f.until ? ' until ' + new Date(f.until).toLocaleString() : '';
    const li = el('li', 'notice removed', 'You were ' + what + ' ' + label(c) + until +
      ' by ' + (f.by || 'a moderator') + (f.reason ? ': ' + f.reason : '.'));
    li.setAttribute('role', 'alert');
    place(c, li, c.top + 0.5);
    if (st.active === c.key) { renderMembers(); renderComposer(); }
  }

  // The composer says why one cannot write: removed, or a read-only room.
  function renderComposer() {
    const c = st.convs.get(st.active);
    const box = $('msg');
    let why = '';
    if (c && c.kind === 'room' && c.removed) why = 'You are no longer in ' + label(c);
    else if (c && c.kind === 'room' && c.settings.read_only && !isMod(c)) why = 'Read-only room: only moderators write here';
    box.disabled = why !== '';
    $('composer').querySelector('button').disabled = why !== '';
    if (why) box.placeholder = why;
    else if (c) box.placeholder = 'Message ' + label(c);
    const t = c && c.kind === 'room' && c.settings.topic ? c.settings.topic : '';
    $('conv-title').title = t;
    $('conv-title').dataset.topic = t;
  }

  // The page holds no way to mint a token: say when the session will end.
  function onTokenExpiring(f) {
    const c = st.convs.get(st.active);
    const text = (f.reason === 'key_rotated' ? 'The server changed its keys: ' : '') +
      'your sign-in ends in ' + f.in + ' s. Sign in again with a new token to stay.';
    if (c) place(c, el('li', 'notice expiring', text), c.kind === 'room' ? c.top + 0.5 : Date.now());
  }

  // ---- direct messages ---------------------------------------------------

  function onDirect(f) {
    if (typeof f.room === 'string') {
      // Our server keeps DMs as conversations: join it, its history brings this one.
      openDm(keyOf(f.room));
      return;
    }
    const key = f.from + '\n' + f.id;
    if (f.from === st.me && st.pending.has(f.id)) return;   // a dm to ourselves
    const c = conv('@' + f.from);
    if (c.ids.has(key)) return;   // a resend after a reconnect
    c.ids.add(key);
    place(c, renderMsg(f.from, f.body, f.ts, false), Date.now());
    trim(c);
  }

  // ---- sending -----------------------------------------------------------

  function compose(c, body) {
    const p = { id: newId(), key: c.key, kind: c.kind, to: c.name, body, inflight: false };
    p.li = renderMsg(st.me, body, Date.now(), true);
    p.li.dataset.id = p.id;
    p.li.dataset.local = '1';
    st.pending.set(p.id, p);
    setMsgState(p, 'pending', 'sending…');
    place(c, p.li, Infinity);
    scrollDown(c, true);
    transmit(p);
  }

  function transmit(p) {
    const c = st.convs.get(p.key);
    if (!c || !st.online || p.inflight) return;
    // Room messages wait until the room is joined and caught up: a message
    // that was accepted before a disconnect then shows up in the replay
    // (and its id is matched) instead of being sent twice.
    if (!c.joined || c.filling || c.top < c.want) return;
    // One message of a conversation in flight at a time, the oldest first:
    // a later one waits for the earlier one's answer, so a refusal and its
    // retry (rate_limited, unavailable) never let it overtake, and the seqs
    // follow the order they were written in.
    if (firstPending(p.key) !== p) return;
    const cmd = { type: 'send', room: c.room, id: p.id, body: p.body };
    p.inflight = true;
    request(cmd, (f) => {
      p.inflight = false;
      if (f.type === 'ack') { onAck(p, f); sendNext(p.key); return; }
      if (f.code === 'rate_limited' || f.code === 'unavailable' || f.code === 'internal') {
        setTimeout(() => transmit(p), 1000 + Math.random() * 1000);
        return;
      }
      st.pending.delete(p.id);
      setMsgState(p, 'failed', 'Not sent: ' + (f.code === 'not_found' && c.kind === 'dm'
        ? c.name + ' is not online' : (f.message || f.code)) + '.');
      sendNext(p.key);
    });
  }

  function firstPending(key) {
    for (const q of st.pending.values()) if (q.key === key) return q;
    return null;
  }

  function sendNext(key) {
    const q = firstPending(key);
    if (q) transmit(q);
  }

  function onAck(p, f) {
    if (!st.pending.has(p.id)) return;
    st.pending.delete(p.id);
    setMsgState(p, 'delivered');
    const c = st.convs.get(p.key);
    if (!c) return;
    if (c.seqs.has(f.seq)) { p.li.remove(); return; }
    p.li.dataset.seq = String(f.seq);
    c.seqs.set(f.seq, p.li);
    place(c, p.li, f.seq);
    advance(c, f.seq);
  }

  // Resend unacked messages (same id: the server dedups by name + id), the
  // oldest of each conversation; the rest follow on its answer.
  function flushPending(key) {
    const keys = new Set();
    for (const p of st.pending.values()) {
      if (key === null ? p.kind === 'dm' : p.key === key) keys.add(p.key);
    }
    for (const k of keys) sendNext(k);
  }

  // ---- screens and forms -------------------------------------------------

  function showSignin(error) {
    $('chat').hidden = true;
    $('signin').hidden = false;
    $('signin-error').textContent = error || '';
    $('signin-button').disabled = false;
    $('toggle-rooms').hidden = $('toggle-members').hidden = true;
    $('me').hidden = true;
    $('name').focus();
  }

  function showChat() {
    if (!$('chat').hidden) return;
    $('signin').hidden = true;
    $('chat').hidden = false;
    $('toggle-rooms').hidden = $('toggle-members').hidden = false;
    $('me').hidden = false;
    $('me').textContent = 'Signed in as ' + st.me;
    try { localStorage.setItem('chatd.name', st.me); } catch (e) { /* storage off */ }
    if (!st.convs.size) $('join-room').focus();
  }

  function closeDrawers() {
    document.body.classList.remove('show-rooms', 'show-members');
    $('toggle-rooms').setAttribute('aria-expanded', 'false');
    $('toggle-members').setAttribute('aria-expanded', 'false');
  }

  function toggleDrawer(which) {
    const cls = 'show-' + which;
    const open = !document.body.classList.contains(cls);
    closeDrawers();
    document.body.classList.toggle(cls, open);
    $('toggle-' + which).setAttribute('aria-expanded', String(open));
    if (open) {
      const first = $(which === 'rooms' ? 'sidebar' : 'members').querySelector('button, input');
      if (first) first.focus();
    }
  }

  function parseRooms(values) {
    const out = [];
    for (const v of values) {
      for (const r of v.split(',')) {
        const name = r.trim().replace(/^#/, '');
        if (ROOM_RE.test(name) && !out.includes(name)) out.push(name);
      }
    }
    return out;
  }

  function signIn(name, token, rooms) {
    st.login = { name, token };
    st.welcomed = false;
    $('signin-error').textContent = '';
    $('signin-button').disabled = true;
    rooms.forEach((r, i) => addRoom(r, i === 0));
    st.attempt = 0;
    connect();
  }

  function init() {
    const q = new URLSearchParams(location.search);
    const linkRooms = parseRooms(q.getAll('room'));
    const qname = q.get('name') || '';
    let saved = '';
    try { saved = localStorage.getItem('chatd.name') || ''; } catch (e) { /* storage off */ }
    $('name').value = qname || saved;
    if (linkRooms.length) $('rooms').value = linkRooms.join(', ');

    $('signin-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const name = $('name').value.trim();
      const token = $('token').value.trim();
      const rooms = parseRooms([$('rooms').value]);
      if (!token && !NAME_RE.test(name)) {
        showSignin('Choose a name of 1 to 32 letters, digits, "_", "." or "-".');
        return;
      }
      signIn(token && !name ? '' : name, token, rooms);
    });
    $('join-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const names = parseRooms([$('join-room').value]);
      if (!names.length) return;
      $('join-room').value = '';
      names.forEach((r, i) => addRoom(r, i === 0));
      activate('#' + names[0], false);
      closeDrawers();
    });
    $('composer').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const box = $('msg');
      const c = st.convs.get(st.active);
      if (!c || !box.value.trim()) return;
      if (st.editing) { sendEdit(box.value); box.focus(); return; }
      st.typingAt = 0;            // the message ends this bout of typing
      compose(c, box.value);
      box.value = '';
      box.focus();
    });
    $('msg').addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
        ev.preventDefault();
        $('composer').requestSubmit();
      } else if (ev.key === 'ArrowUp' && !$('msg').value && !st.editing) {
        const li = lastOwn();       // as people expect: up edits the last one
        if (li) { ev.preventDefault(); startEdit(li); }
      } else if (ev.key === 'Escape' && st.editing) {
        ev.preventDefault();
        ev.stopPropagation();
        cancelEdit();
      }
    });
    $('msg').addEventListener('input', typed);
    document.addEventListener('visibilitychange', () => {
      const c = st.convs.get(st.active);
      if (c) updateUnread(c);
    });
    $('retry').addEventListener('click', () => { st.attempt = 0; connect(); });
    $('toggle-rooms').addEventListener('click', () => toggleDrawer('rooms'));
    $('toggle-members').addEventListener('click', () => toggleDrawer('members'));
    document.addEventListener('keydown', (ev) => { if (ev.key === 'Escape') closeDrawers(); });
    window.addEventListener('online', () => { if (st.retryTimer) { st.attempt = 0; connect(); } });
    setInterval(() => { tick(); renderTyping(); }, 1000);

    // Shareable link: /?name=alice&room=lobby fills the form but never
    // signs in by itself. Anyone can craft such a link; opened as is, it would
    // put the visitor into rooms under a name someone else chose (and save
    // that name). One click (or Enter) on the prefilled form joins.
    if (NAME_RE.test(qname)) {
      const where = linkRooms.length ? ' and join ' + linkRooms.map((r) => '#' + r).join(', ') : '';
      $('link-notice').textContent = 'This link signs you in as \u201c' + qname + '\u201d' + where +
        '. Check the name and rooms, then press Join.';
      $('link-notice').hidden = false;
      $('signin-button').textContent = 'Join';
      $('signin-button').focus();
    } else {
      $('name').focus();
    }
  }

  init();
})();
