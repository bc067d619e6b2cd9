// The IM web console: plain ES module, no framework, no build step.
// It uses only the public HTTP API and WebSocket of API.md.
//
// Safety rule of this file: data from the server or the user is put on the
// page with textContent / attributes only, never with innerHTML.

import { ApiError, createApi, decodeToken, describeError, newClientMsgId } from './api.js';
import { LiveConnection } from './live.js';

const TOKEN_KEY = 'im-console-token';
const PAGE_SIZE = 50;
const SYNC_LIMIT = 200;

const ROLE_LABEL = { PATIENT: 'patient', DOCTOR: 'doctor', AI_ASSISTANT: 'AI assistant' };
const RECORD_STATUS = { 0: 'pending', 1: 'succeeded', 2: 'failed' };
const AI_STATUS_TEXT = {
  thinking: 'AI assistant is thinking…',
  failed: 'AI assistant did not answer (failed)',
  paused: 'AI assistant paused: a doctor took over',
};

// ---------------------------------------------------------------- helpers

const $ = (id) => {
  const el = document.getElementById(id);
  if (!el) throw new Error(`missing #${id}`);
  return el;
};

/** Creates an element; `text` is always set as text, never parsed as HTML. */
function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'text') el.textContent = String(v);
    else if (k === 'class') el.className = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children) if (c !== null && c !== undefined && c !== false) el.append(c);
  return el;
}

function roleBadge(role) {
  if (!role) return h('span', { class: 'badge role-unknown', text: 'unknown role' });
  return h('span', { class: `badge role-${role.toLowerCase().replace('_', '-')}`, dataset: { role }, text: ROLE_LABEL[role] ?? role });
}

function formatTime(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso ?? '');
  const today = new Date().toDateString() === d.toDateString();
  return today ? d.toLocaleTimeString() : d.toLocaleString();
}

function formatDuration(ms) {
  if (ms === null || ms === undefined) return '—';
  return ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
}

// ---------------------------------------------------------------- state

/** Everything the page knows; one instance per tab. */
const S = {
  token: null,
  me: null, // {user_id, admin, exp}
  user: null, // the user record, or null (admin service tokens may have none)
  groups: new Map(), // group_id -> GroupState
  order: [], // group ids, list order
  current: null,
  live: null,
  view: 'chat',
};

function newGroupState(group) {
  return {
    group,
    members: new Map(), // user_id -> member
    loaded: false,
    loading: null, // promise while the first page loads
    early: [], // live messages that arrived while the first page was loading
    msgs: new Map(), // seq -> message
    ids: new Set(), // message ids present
    minSeq: null, // lowest seq loaded
    lastSeq: 0, // every message <= lastSeq (and >= minSeq) is present
    hasOlder: false,
    loadingOlder: false,
    unread: 0,
    pending: new Map(), // client_msg_id -> {content, state, error}
    ai: new Map(), // user_message_id -> status
    syncing: false,
    resync: false,
    els: new Map(), // message_id -> rendered <li>
    lastMsgAt: 0, // when the last message was added (ms)
  };
}

const api = createApi(() => S.token);

// ---------------------------------------------------------------- banner

let bannerTimer = null;
function showError(text) {
  $('banner-text').textContent = text;
  $('banner').hidden = false;
  clearTimeout(bannerTimer);
  bannerTimer = setTimeout(() => {
    $('banner').hidden = true;
  }, 12000);
}
$('banner-close').addEventListener('click', () => {
  $('banner').hidden = true;
});

// ---------------------------------------------------------------- sign in / out

async function signIn(token) {
  const me = decodeToken(token);
  if (me.exp !== null && me.exp * 1000 < Date.now()) throw new Error('This token has expired.');
  S.token = token.trim();
  let groups = [];
  try {
    // proves the token is accepted (401 otherwise) and loads the groups
    groups = (await api.groupsOf(me.user_id)).groups;
  } catch (err) {
    // NOT_FOUND: a valid token for an id that is no user (e.g. an admin service token)
    if (!(err instanceof ApiError && err.code === 'NOT_FOUND')) {
      S.token = null;
      throw err;
    }
  }
  S.me = me;
  setGroups(groups);
  try {
    S.user = await api.getUser(me.user_id);
  } catch (err) {
    if (!(err instanceof ApiError && err.code === 'NOT_FOUND')) throw err;
    S.user = null;
    if (!me.admin) showError(`Signed in as ${me.user_id}, but no user with this id exists yet (an admin can create it).`);
  }
  sessionStorage.setItem(TOKEN_KEY, S.token);
  renderSession();
  startLive();
  showView(me.admin && S.order.length === 0 ? 'admin' : 'chat');
}

function signOut() {
  S.live?.stop();
  S.live = null;
  S.token = null;
  S.me = null;
  S.user = null;
  S.groups.clear();
  S.order = [];
  S.current = null;
  sessionStorage.removeItem(TOKEN_KEY);
  $('session').hidden = true;
  $('tabs').hidden = true;
  $('group-list').replaceChildren();
  $('room-body').hidden = true;
  $('room-empty').hidden = false;
  // nothing of the signed-out user stays in the admin forms, their lines and tables
  for (const reset of resultFormResets) reset();
  $('user-groups-list').replaceChildren();
  $('records-table').querySelector('tbody').replaceChildren();
  renderGroupRecords(null);
  showView('signin');
}

function renderSession() {
  $('session').hidden = false;
  $('tabs').hidden = false;
  $('admin-tab').hidden = !S.me.admin;
  const who = $('whoami');
  const name = S.user && S.user.username !== S.me.user_id ? `${S.user.username} (${S.me.user_id})` : S.me.user_id;
  const parts = [h('span', { class: 'who', text: name })];
  if (S.user) parts.push(roleBadge(S.user.user_role));
  if (S.me.admin) parts.push(h('span', { class: 'badge admin', text: 'admin' }));
  who.replaceChildren(...parts);
}

function showView(view) {
  S.view = view;
  $('signin-view').hidden = view !== 'signin';
  $('chat-view').hidden = view !== 'chat';
  $('admin-view').hidden = view !== 'admin';
  for (const tab of document.querySelectorAll('.tab')) tab.setAttribute('aria-selected', String(tab.dataset.view === view));
  // the records load as on Refresh: the form's line says what came back, or the error in words
  if (view === 'admin') $('ai-records').requestSubmit();
}

$('token-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  $('signin-error').textContent = '';
  try {
    await signIn($('token-input').value);
    $('token-input').value = '';
  } catch (err) {
    $('signin-error').textContent = describeError(err);
  }
});

$('dev-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  $('signin-error').textContent = '';
  try {
    const { token } = await api.devToken($('dev-user').value.trim(), $('dev-admin').checked);
    await signIn(token);
  } catch (err) {
    $('signin-error').textContent = describeError(err);
  }
});

$('signout').addEventListener('click', signOut);
for (const tab of document.querySelectorAll('.tab')) tab.addEventListener('click', () => showView(tab.dataset.view));

// ---------------------------------------------------------------- live connection

const CONN_TEXT = { connecting: 'connecting…', online: 'online', reconnecting: 'reconnecting…', offline: 'offline' };
let connTicker = null;

function startLive() {
  S.live?.stop();
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  S.live = new LiveConnection({
    url: () => `${scheme}//${location.host}/ws/${encodeURIComponent(S.me.user_id)}?token=${encodeURIComponent(S.token)}`,
    onFrame,
    onState: renderConn,
    onOpen: onLiveOpen,
  });
  S.live.start();
}

function renderConn(state, info) {
  const conn = $('conn');
  conn.dataset.state = state;
  clearInterval(connTicker);
  const text = () => {
    let t = CONN_TEXT[state] ?? state;
    if (state === 'offline' && info.paused) t = 'offline (disconnected by you)';
    else if (state === 'offline' && info.fatal) t = `offline: ${info.reason}`;
    else if (state === 'offline' && info.retryAt) t = `offline, retrying in ${Math.max(0, Math.ceil((info.retryAt - Date.now()) / 1000))} s`;
    return t;
  };
  $('conn-text').textContent = text();
  if (state === 'offline' && info.retryAt) connTicker = setInterval(() => ($('conn-text').textContent = text()), 500);
  $('conn-toggle').textContent = info.paused ? 'Connect' : 'Disconnect';
  $('conn-toggle').hidden = Boolean(info.fatal) || info.reason === 'stopped';
  if (info.fatal) showError(`Live connection closed: ${info.reason}. Sign in again.`);
  if (state === 'offline' && !info.paused && !info.fatal && info.attempt >= 2) probeToken();
}

/**
 * A refused upgrade looks like any network failure to a browser: after a few
 * failed attempts, ask the HTTP API whether the token is still accepted.
 */
let probing = false;
function probeToken() {
  if (probing || !S.me) return;
  probing = true;
  api
    .groupsOf(S.me.user_id)
    .catch((err) => {
      if (err instanceof ApiError && err.code === 'UNAUTHENTICATED' && S.live) {
        S.live.stop();
        showError(`${describeError(err)}. Sign in again.`);
        $('conn-text').textContent = 'offline: token rejected';
      }
    })
    .finally(() => {
      probing = false;
    });
}

$('conn-toggle').addEventListener('click', () => {
  if (!S.live) return;
  if (S.live.paused) S.live.resume();
  else S.live.pause();
});

/** After every (re)connect: catch up every loaded group from its last seen seq, resend what was not acknowledged. */
function onLiveOpen() {
  for (const g of S.groups.values()) {
    if (!g.loaded) continue;
    g.syncing = false;
    g.resync = false;
    requestSync(g);
    for (const p of g.pending.values()) if (p.state === 'sending' || p.state === 'queued') dispatchPending(g, p);
  }
  refreshGroups().catch(() => undefined);
}

function onFrame(frame) {
  switch (frame.type) {
    case 'message':
      onMessage(frame.data);
      break;
    case 'ack':
      onStored(frame.data);
      break;
    case 'sync':
      onSync(frame);
      break;
    case 'error':
      onErrorFrame(frame);
      break;
    case 'member_joined':
    case 'member_left':
      onMemberChange(frame.type, frame.data);
      break;
    case 'ai_status':
      onAiStatus(frame);
      break;
    default:
      break; // pong and anything newer
  }
}

function onMessage(m) {
  if (!m || typeof m.group_id !== 'string') return;
  const g = S.groups.get(m.group_id);
  if (!g) {
    refreshGroups().catch(() => undefined);
    return;
  }
  if (g.loading) {
    g.early.push(m);
    return;
  }
  if (!g.loaded) {
    if (m.from_user_id !== S.me.user_id) g.unread++;
    renderGroupList();
    return;
  }
  addMessages(g, [m]);
}

function onStored(m) {
  if (!m || typeof m.group_id !== 'string') return;
  const g = S.groups.get(m.group_id);
  if (!g) return;
  if (m.client_msg_id) g.pending.delete(m.client_msg_id);
  if (g.loaded) addMessages(g, [m]);
  if (g === currentGroup()) renderPending(g);
}

function onSync(frame) {
  const g = S.groups.get(frame.group_id);
  if (!g || !g.loaded) return;
  const before = g.lastSeq;
  g.syncing = false;
  addMessages(g, Array.isArray(frame.data) ? frame.data : [], { fromSync: true });
  // more pages; or a message seen live during the request is still ahead of a hole
  const again = frame.has_more ? g.lastSeq > before : g.resync && hasGap(g);
  g.resync = false;
  if (again) requestSync(g);
}

function onErrorFrame(frame) {
  if (frame.client_msg_id) {
    for (const g of S.groups.values()) {
      const p = g.pending.get(frame.client_msg_id);
      if (!p) continue;
      p.state = 'failed';
      p.error = describeError(new ApiError(0, frame.code, frame.message));
      if (g === currentGroup()) renderPending(g);
      return;
    }
  }
  showError(describeError(new ApiError(0, frame.code, frame.message)));
}

function onMemberChange(type, member) {
  if (!member) return;
  if (member.user_id === S.me.user_id) {
    refreshGroups().catch(() => undefined);
    return;
  }
  const g = S.groups.get(member.group_id);
  if (!g) return;
  if (type === 'member_joined') g.members.set(member.user_id, member);
  else g.members.delete(member.user_id);
  g.els.clear();
  if (g === currentGroup()) renderRoom();
}

function onAiStatus(frame) {
  const g = S.groups.get(frame.group_id);
  if (!g) return;
  g.ai.set(frame.user_message_id, { status: frame.status, at: Date.now() });
  const m = [...g.msgs.values()].find((x) => x.message_id === frame.user_message_id);
  if (m) g.els.delete(m.message_id);
  if (g === currentGroup()) renderTimeline(g);
}

// ---------------------------------------------------------------- messages store

function hasGap(g) {
  for (const seq of g.msgs.keys()) if (seq > g.lastSeq) return true;
  return false;
}

/** Adds messages once each (by message_id and seq) and detects gaps in seq. */
function addMessages(g, list, { fromSync = false } = {}) {
  let added = 0;
  for (const m of list) {
    if (!m || typeof m.seq !== 'number' || g.ids.has(m.message_id) || g.msgs.has(m.seq)) continue;
    if (g.minSeq !== null && m.seq < g.minSeq) continue; // older pages come through loadOlder only
    g.msgs.set(m.seq, m);
    g.ids.add(m.message_id);
    if (m.from_user_id === S.me.user_id && m.client_msg_id) g.pending.delete(m.client_msg_id);
    if (m.msg_type === 'AI_REPLY') answerOldestThinking(g);
    if (g !== currentGroup() && m.from_user_id !== S.me.user_id) g.unread++;
    g.lastMsgAt = Date.now();
    added++;
  }
  if (g.minSeq === null) g.minSeq = g.msgs.size ? Math.min(...g.msgs.keys()) : g.lastSeq + 1;
  while (g.msgs.has(g.lastSeq + 1)) g.lastSeq++;
  if (!fromSync && hasGap(g)) requestSync(g);
  if (added) {
    if (g === currentGroup()) renderTimeline(g);
    else renderGroupList();
  }
}

function answerOldestThinking(g) {
  for (const [id, s] of g.ai) {
    if (s.status === 'thinking') {
      g.ai.delete(id);
      const m = [...g.msgs.values()].find((x) => x.message_id === id);
      if (m) g.els.delete(m.message_id);
      return;
    }
  }
}

/** Asks the server for everything after the last contiguous seq (one request in flight per group). */
function requestSync(g) {
  if (!S.live || !S.live.online) return; // the next onLiveOpen syncs
  if (g.syncing) {
    g.resync = true;
    return;
  }
  g.syncing = true;
  S.live.send({ type: 'sync', group_id: g.group.group_id, after_seq: g.lastSeq, limit: SYNC_LIMIT });
}

async function loadFirstPage(g) {
  if (g.loaded) return;
  if (g.loading) return g.loading;
  g.loading = (async () => {
    const [members, page] = await Promise.all([api.members(g.group.group_id), api.listMessages({ group_id: g.group.group_id, limit: PAGE_SIZE })]);
    g.members = new Map(members.members.map((m) => [m.user_id, m]));
    const msgs = page.messages;
    g.hasOlder = page.has_more;
    g.minSeq = msgs.length ? msgs[0].seq : 1;
    g.lastSeq = msgs.length ? msgs[msgs.length - 1].seq : 0;
    for (const m of msgs) {
      g.msgs.set(m.seq, m);
      g.ids.add(m.message_id);
    }
    g.loaded = true;
  })();
  try {
    await g.loading;
  } catch (err) {
    g.early = [];
    throw err;
  } finally {
    g.loading = null;
  }
  const early = g.early;
  g.early = [];
  g.unread = 0;
  addMessages(g, early);
  // catch up anything stored between the page and the live subscription
  requestSync(g);
}

async function loadOlder(g) {
  if (!g.hasOlder || g.loadingOlder) return;
  g.loadingOlder = true;
  try {
    const page = await api.listMessages({ group_id: g.group.group_id, before_seq: g.minSeq, limit: PAGE_SIZE });
    for (const m of page.messages) {
      if (g.ids.has(m.message_id) || g.msgs.has(m.seq)) continue;
      g.msgs.set(m.seq, m);
      g.ids.add(m.message_id);
    }
    if (page.messages.length) g.minSeq = Math.min(g.minSeq, page.messages[0].seq);
    g.hasOlder = page.has_more && page.messages.length > 0;
  } finally {
    g.loadingOlder = false;
  }
  if (g === currentGroup()) {
    const tl = $('timeline');
    const fromBottom = tl.scrollHeight - tl.scrollTop;
    renderTimeline(g, { keepScroll: true });
    tl.scrollTop = tl.scrollHeight - fromBottom;
  }
}

// ---------------------------------------------------------------- sending

function sendText(g, content) {
  const p = { client_msg_id: newClientMsgId(), content, state: 'sending', error: null };
  g.pending.set(p.client_msg_id, p);
  dispatchPending(g, p);
  renderPending(g);
  scrollToBottom();
}

/** Over the WebSocket when online; otherwise over HTTP. The same client_msg_id makes a retry idempotent. */
function dispatchPending(g, p) {
  p.state = 'sending';
  p.error = null;
  const body = { group_id: g.group.group_id, msg_type: 'TEXT', msg_content: p.content, client_msg_id: p.client_msg_id };
  if (S.live && S.live.online && S.live.send({ type: 'send', ...body })) return;
  api
    .send(body)
    .then((m) => onStored(m))
    .catch((err) => {
      // unreachable: keep it queued, the next (re)connect sends it again with the same client_msg_id
      p.state = err instanceof ApiError && err.code === 'NETWORK' ? 'queued' : 'failed';
      p.error = describeError(err);
      if (g === currentGroup()) renderPending(g);
    });
}

$('composer').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const g = currentGroup();
  const input = $('composer-input');
  const content = input.value;
  if (!g || content.trim() === '') return;
  input.value = '';
  sendText(g, content);
});

$('composer-input').addEventListener('keydown', (ev) => {
  if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
    ev.preventDefault();
    $('composer').requestSubmit();
  }
});

// ---------------------------------------------------------------- groups

function currentGroup() {
  return S.current ? S.groups.get(S.current) ?? null : null;
}

function setGroups(groups) {
  const next = new Map();
  for (const grp of groups) {
    const existing = S.groups.get(grp.group_id);
    if (existing) {
      existing.group = grp;
      next.set(grp.group_id, existing);
    } else next.set(grp.group_id, newGroupState(grp));
  }
  S.groups = next;
  S.order = groups.map((g) => g.group_id);
  if (S.current && !S.groups.has(S.current)) {
    S.current = null;
    renderRoom();
  }
  renderGroupList();
}

async function refreshGroups() {
  if (!S.me) return;
  const { groups } = await api.groupsOf(S.me.user_id);
  const fresh = groups.filter((grp) => !S.groups.has(grp.group_id));
  setGroups(groups);
  // a group joined while we were away: nothing to catch up, its first page loads on open
  return fresh;
}

function renderGroupList() {
  const list = $('group-list');
  list.replaceChildren(
    ...S.order.map((id) => {
      const g = S.groups.get(id);
      return h(
        'li',
        {},
        h(
          'button',
          { type: 'button', class: 'group', dataset: { groupId: id }, 'aria-current': id === S.current ? 'true' : null, onclick: () => openGroup(id) },
          h('span', { class: 'group-name', text: g.group.group_name }),
          h('span', { class: 'group-id', text: id }),
          g.unread > 0 ? h('span', { class: 'unread', text: String(g.unread) }) : null,
        ),
      );
    }),
  );
  $('groups-empty').hidden = S.order.length > 0;
}

$('groups-refresh').addEventListener('click', () => refreshGroups().catch((err) => showError(describeError(err))));

async function openGroup(id) {
  const g = S.groups.get(id);
  if (!g) return;
  S.current = id;
  g.unread = 0;
  renderGroupList();
  renderRoom();
  try {
    await loadFirstPage(g);
  } catch (err) {
    showError(`Cannot open ${g.group.group_name}: ${describeError(err)}`);
    return;
  }
  if (S.current === id) {
    renderRoom();
    scrollToBottom();
    $('composer-input').focus();
  }
}

// ---------------------------------------------------------------- room rendering

function renderRoom() {
  const g = currentGroup();
  $('room-empty').hidden = Boolean(g);
  $('room-body').hidden = !g;
  renderGroupRecords(g);
  if (!g) return;
  $('room-title').textContent = g.group.group_name;
  $('room-sub').textContent = [g.group.group_id, g.group.description].filter(Boolean).join(' · ');
  const members = [...g.members.values()];
  $('room-members').replaceChildren(
    ...members.map((m) => h('li', { class: 'member', dataset: { userId: m.user_id, role: m.user_role } }, h('span', { text: m.user_id }), roleBadge(m.user_role))),
  );
  renderTimeline(g);
}

function renderMessage(g, m) {
  const member = g.members.get(m.from_user_id);
  const role = member?.user_role ?? (m.msg_type === 'AI_REPLY' ? 'AI_ASSISTANT' : null);
  const mine = m.from_user_id === S.me.user_id;
  const classes = ['msg'];
  if (mine) classes.push('mine');
  if (m.msg_type === 'AI_REPLY') classes.push('ai-reply');
  if (role) classes.push(`from-${role.toLowerCase().replace('_', '-')}`);
  let content;
  if (m.msg_type === 'IMAGE') {
    const safe = /^https?:\/\//i.test(m.msg_content);
    content = h('div', { class: 'content' }, h('span', { class: 'kind', text: 'image: ' }), safe ? h('a', { href: m.msg_content, target: '_blank', rel: 'noopener noreferrer', text: m.msg_content }) : h('span', { text: m.msg_content }));
  } else {
    content = h('div', { class: 'content', text: m.msg_content });
  }
  const ai = g.ai.get(m.message_id);
  return h(
    'li',
    { class: classes.join(' '), dataset: { seq: String(m.seq), messageId: m.message_id, from: m.from_user_id, type: m.msg_type } },
    h(
      'div',
      { class: 'meta' },
      h('span', { class: 'from', text: m.from_user_id }),
      roleBadge(role),
      m.msg_type === 'AI_REPLY' ? h('span', { class: 'badge ai-label', text: 'AI reply' }) : null,
      h('time', { datetime: m.created_at, text: formatTime(m.created_at) }),
      h('span', { class: 'seq', title: 'sequence number in this group', text: `#${m.seq}` }),
      mine ? h('span', { class: 'ack', title: 'stored by the server', text: '✓ stored' }) : null,
    ),
    content,
    ai ? h('div', { class: `ai-note ai-${ai.status}`, dataset: { aiStatus: ai.status }, text: AI_STATUS_TEXT[ai.status] ?? `AI: ${ai.status}` }) : null,
  );
}

function scrollToBottom() {
  const tl = $('timeline');
  tl.scrollTop = tl.scrollHeight;
}

/**
 * The timeline changes height when what is around it does: the doctor's
 * records panel above it opening, filling with rows, closing; the AI bar; the
 * window. A shorter timeline keeps its scrollTop, so the newest messages would
 * drop out of view: if they were in view at the last height, keep them there.
 * A reader of older messages stays where they are.
 */
let timelineHeight = 0;
new ResizeObserver(() => {
  const tl = $('timeline');
  if (tl.clientHeight === 0) return; // hidden (no room open, another tab): nothing to keep
  const wasAtBottom = tl.scrollHeight - tl.scrollTop - timelineHeight < 60;
  timelineHeight = tl.clientHeight;
  if (wasAtBottom) scrollToBottom();
}).observe($('timeline'));

function renderTimeline(g, { keepScroll = false } = {}) {
  if (g !== currentGroup()) return;
  const tl = $('timeline');
  const atBottom = tl.scrollHeight - tl.scrollTop - tl.clientHeight < 60;
  const seqs = [...g.msgs.keys()].sort((a, b) => a - b);
  $('messages').replaceChildren(
    ...seqs.map((seq) => {
      const m = g.msgs.get(seq);
      let el = g.els.get(m.message_id);
      if (!el) {
        el = renderMessage(g, m);
        g.els.set(m.message_id, el);
      }
      return el;
    }),
  );
  $('load-older').hidden = !g.loaded || !g.hasOlder;
  $('history-start').hidden = !g.loaded || g.hasOlder;
  renderPending(g);
  renderAiBar(g);
  if (!keepScroll && atBottom) scrollToBottom();
}

function renderPending(g) {
  if (g !== currentGroup()) return;
  $('pending').replaceChildren(
    ...[...g.pending.values()].map((p) =>
      h(
        'li',
        { class: `msg mine pending-msg state-${p.state}`, dataset: { clientMsgId: p.client_msg_id } },
        h('div', { class: 'meta' }, h('span', { class: 'from', text: S.me.user_id }), h('span', { class: 'ack', text: p.state === 'failed' ? 'not sent' : p.state === 'queued' ? 'waiting for the connection…' : 'sending…' })),
        h('div', { class: 'content', text: p.content }),
        p.state === 'failed'
          ? h(
              'div',
              { class: 'error' },
              h('span', { text: p.error ?? 'failed' }),
              h('button', { type: 'button', class: 'link', text: 'Retry', onclick: () => (dispatchPending(g, p), renderPending(g)) }),
              h('button', { type: 'button', class: 'link', text: 'Discard', onclick: () => (g.pending.delete(p.client_msg_id), renderPending(g)) }),
            )
          : null,
      ),
    ),
  );
}

/** The bar under the timeline: 'thinking' while a call runs; otherwise the latest status until the next message. */
function renderAiBar(g) {
  const bar = $('ai-status');
  let latest = null;
  let thinking = false;
  for (const s of g.ai.values()) {
    if (s.status === 'thinking') thinking = true;
    if (!latest || s.at >= latest.at) latest = s;
  }
  const status = thinking ? 'thinking' : latest && latest.at >= g.lastMsgAt ? latest.status : null;
  bar.hidden = !status;
  if (!status) return;
  bar.dataset.status = status;
  bar.textContent = AI_STATUS_TEXT[status] ?? `AI: ${status}`;
}

$('load-older').addEventListener('click', () => {
  const g = currentGroup();
  if (g) loadOlder(g).catch((err) => showError(describeError(err)));
});

// ---------------------------------------------------------------- admin

function formValues(form) {
  const out = {};
  for (const [k, v] of new FormData(form).entries()) {
    const s = String(v).trim();
    if (s !== '') out[k] = s;
  }
  return out;
}

/** One per resultForm: empties the form (fields and line), and drops the answer of a submission still running. */
const resultFormResets = [];

/**
 * A form whose submit runs `action` and shows its outcome (or the error, in
 * words) in the form's `.result` line. Only the latest submission shows its
 * outcome: one started by code while another runs makes the first one moot.
 * `action` gets `superseded()`, true once a later submission has started, so
 * that what it writes elsewhere (a table) can be dropped too. Returns
 * `clear()`: empties the line and drops the answer of a submission still
 * running (its fields stay).
 */
function resultForm(id, action) {
  const form = $(id);
  const result = form.querySelector('.result');
  const button = form.querySelector('button[type=submit]');
  let turn = 0;
  const clear = () => {
    turn += 1; // a submission still running is superseded: its answer shows nowhere
    result.className = 'result';
    result.textContent = '';
    button.disabled = false;
  };
  resultFormResets.push(() => {
    form.reset();
    clear();
  });
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const mine = ++turn;
    result.className = 'result';
    result.textContent = 'working…';
    button.disabled = true;
    let text;
    let failed = false;
    try {
      text = await action(formValues(form), form, { superseded: () => mine !== turn });
    } catch (err) {
      text = describeError(err);
      failed = true;
    }
    if (mine !== turn) return;
    result.textContent = text;
    result.classList.add(failed ? 'error' : 'ok');
    button.disabled = false;
  });
  return { clear };
}

resultForm('create-user', async (v, form) => {
  const u = await api.createUser({ user_id: v.user_id, username: v.username, user_role: v.user_role });
  form.reset();
  return `Created ${u.user_id} (${ROLE_LABEL[u.user_role] ?? u.user_role}).`;
});

resultForm('create-group', async (v, form) => {
  const body = { group_name: v.group_name };
  if (v.group_id) body.group_id = v.group_id;
  if (v.description) body.description = v.description;
  if (v.members) body.members = v.members.split(/[\s,]+/).filter(Boolean);
  const g = await api.createGroup(body);
  form.reset();
  refreshGroups().catch(() => undefined);
  return `Created group ${g.group_id} (${g.group_name}).`;
});

resultForm('add-member', async (v) => {
  const body = { user_id: v.user_id };
  if (v.user_role) body.user_role = v.user_role;
  const m = await api.addMember(v.group_id, body);
  return `Added ${m.user_id} to ${m.group_id} as ${ROLE_LABEL[m.user_role] ?? m.user_role}.`;
});

resultForm('user-groups', async (v) => {
  const { groups } = await api.groupsOf(v.user_id);
  $('user-groups-list').replaceChildren(...groups.map((g) => h('li', {}, h('strong', { text: g.group_name }), h('span', { class: 'hint', text: ` ${g.group_id}` }))));
  return groups.length ? `${groups.length} group(s).` : 'No groups.';
});

// ---------------------------------------------------------------- AI records (admin panel, a doctor's panel of a group)

// the status filters of both panels offer the statuses RECORD_STATUS names, after "any"
for (const select of document.querySelectorAll('select.record-status')) {
  select.append(...Object.entries(RECORD_STATUS).map(([value, label]) => h('option', { value, text: label })));
}

/** One table row per AI interaction record; every value is set as text. */
function recordRow(r, { withGroup }) {
  return h(
    'tr',
    { dataset: { recordId: r.record_id, status: String(r.status) } },
    h('td', { text: formatTime(r.created_at) }),
    withGroup ? h('td', { text: r.group_id }) : null,
    h('td', {}, h('span', { class: `badge status-${RECORD_STATUS[r.status] ?? 'unknown'}`, text: RECORD_STATUS[r.status] ?? String(r.status) })),
    h('td', { class: 'num', text: formatDuration(r.duration_ms) }),
    h('td', { class: 'num', text: String(r.attempts ?? '') }),
    h('td', { class: 'mono', text: r.user_message_id ?? '' }),
    h('td', { class: 'mono', text: r.ai_message_id ?? '—' }),
    h('td', { class: 'error-cell', text: r.error_message ?? '' }),
  );
}

/** The API error in words; a server without the AI layer (ai-router plugin) does not serve the route at all. */
function recordsError(err) {
  if (err instanceof ApiError && err.code === 'NOT_FOUND' && /^no route for /.test(err.message)) {
    return new Error('The AI layer is not enabled on this server (no GET /api/ai/interactions): there are no AI records to show.');
  }
  return err;
}

/**
 * GET /api/ai/interactions into `table` (newest first, as the server sends
 * them) and the line to show under its form. `stale()` says the panel has
 * moved on (another group, signed out) by the time the answer comes: it is
 * dropped, error included. An error empties the table, so no earlier rows
 * pass for the answer.
 */
async function loadRecordsInto(table, params, { withGroup = true, stale = () => false } = {}) {
  const tbody = table.querySelector('tbody');
  let records;
  try {
    ({ records } = await api.aiInteractions(params));
  } catch (err) {
    if (stale()) return '';
    tbody.replaceChildren();
    throw recordsError(err);
  }
  if (stale()) return '';
  tbody.replaceChildren(...records.map((r) => recordRow(r, { withGroup })));
  return records.length ? `${records.length} record(s), newest first.` : 'No records.';
}

resultForm('ai-records', (v, _form, { superseded }) =>
  loadRecordsInto($('records-table'), { group_id: v.group_id, status: v.status, limit: v.limit }, { stale: superseded }),
);

/**
 * The doctor's panel under the room's head: the open group's records, shown
 * only when the signed-in user is a DOCTOR member of it (the role in the
 * group, which is what the server checks). It loads when opened, on Refresh,
 * and when another group is opened while it is open.
 */
function renderGroupRecords(g) {
  const panel = $('group-records');
  const doctor = Boolean(g && S.me && g.members.get(S.me.user_id)?.user_role === 'DOCTOR');
  const groupId = doctor ? g.group.group_id : '';
  panel.hidden = !doctor;
  if ((panel.dataset.groupId ?? '') === groupId) return;
  panel.dataset.groupId = groupId;
  $('group-records-table').querySelector('tbody').replaceChildren();
  groupRecordsForm.clear();
  if (doctor && panel.open) $('group-records-form').requestSubmit();
}

$('group-records').addEventListener('toggle', () => {
  if ($('group-records').open) $('group-records-form').requestSubmit();
});

const groupRecordsForm = resultForm('group-records-form', (v, _form, { superseded }) => {
  const panel = $('group-records');
  const groupId = panel.dataset.groupId;
  if (!groupId) return Promise.resolve('');
  return loadRecordsInto(
    $('group-records-table'),
    { group_id: groupId, status: v.status, limit: v.limit },
    { withGroup: false, stale: () => superseded() || panel.dataset.groupId !== groupId },
  );
});

// ---------------------------------------------------------------- boot

async function boot() {
  showView('signin');
  api
    .consoleConfig()
    .then((cfg) => {
      $('dev-form').hidden = !(cfg && cfg.dev_tokens);
    })
    .catch(() => undefined);
  // a token may come in the fragment (#token=...: never sent to the server), or from this tab's session
  const hash = new URLSearchParams(location.hash.slice(1));
  const fromHash = hash.get('token');
  if (fromHash) history.replaceState(null, '', location.pathname + location.search);
  const token = fromHash ?? sessionStorage.getItem(TOKEN_KEY);
  if (!token) return;
  try {
    await signIn(token);
  } catch (err) {
    sessionStorage.removeItem(TOKEN_KEY);
    $('signin-error').textContent = describeError(err);
  }
}

boot();
