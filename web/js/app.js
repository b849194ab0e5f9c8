// parley web client: start-up and the client that ties the connection,
// the tab's store and the views together.
//
// The token comes in the URL fragment (#token=JWT, as `parleyd token --url`
// prints it), is moved into the tab's sessionStorage and removed from the
// address bar: it never appears in a URL sent to the server.

import { Conn } from './conn.js';
import { Store } from './store.js';
import { MsgList } from './msglist.js';
import { el, $, clear, jwtClaims, mentionsIn, backoff, LEVELS } from './util.js';
import * as ui from './ui.js';

const TOKEN_KEY = 'parley:token';
const TYPING_SEND_MS = 3000;
const TYPING_SHOW_MS = 6000;
const IDLE_MS = 10 * 60 * 1000; // no input for this long: heartbeats stop, others see "away"
// A desktop notification only for a message at most this old (by its ts):
// a hidden tab that reconnects and resumes an hour of backlog stays quiet.
const NOTIFY_RECENT_MS = 5 * 60 * 1000;

function takeToken() {
	const m = /(?:^#|&)token=([^&]+)/.exec(location.hash);
	if (m) {
		sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1]));
		history.replaceState(null, '', location.pathname + location.search);
	}
	return sessionStorage.getItem(TOKEN_KEY);
}

// Why a token cannot be used, judged from its claims, or null.
function tokenProblem(token) {
	const c = jwtClaims(token);
	if (!c || typeof c.sub !== 'string' || typeof c.ws !== 'string') return 'This is not a parley token.';
	if (typeof c.exp === 'number' && c.exp * 1000 < Date.now() - 30000)
		return `This token expired on ${new Date(c.exp * 1000).toLocaleString()}. Ask for a new link.`;
	return null;
}

function boot(reason) {
	const token = takeToken();
	const problem = reason || (token ? tokenProblem(token) : null);
	if (!token || problem) {
		if (problem) sessionStorage.removeItem(TOKEN_KEY);
		ui.signIn(problem, (t) => {
			sessionStorage.setItem(TOKEN_KEY, t.trim());
			boot();
		});
		return;
	}
	const claims = jwtClaims(token);
	new Client(token, claims).start();
}

export class Client {
	constructor(token, claims) {
		this.me = claims.sub;
		this.wsId = claims.ws;
		this.admin = claims.role === 'admin';
		this.store = new Store(this.me, this.wsId);
		const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
		this.conn = new Conn({
			url: `${proto}//${location.host}/ws`,
			token,
			resume: () => this.store.resume(),
			active: () => Date.now() - this.lastActivity < IDLE_MS,
		});
		this.lastActivity = Date.now();
		this.view = null; // MsgList of the open channel
		this.threadView = null;
		this.catching = new Map(); // ch -> events queued while a gap is paged in
		this.lastTyping = 0;
		this.status = sessionStorage.getItem(`${this.store.key}:status`) || 'online';
		this.watched = '';
		// notify.get: {default, channels: {ch: level}}; null while not
		// known, or when the server has no notification settings
		this.notify = null;
		this.notes = new Map(); // ch -> the desktop Notification shown for it
	}

	start() {
		this.ui = ui.layout(this);
		const c = this.conn;
		c.addEventListener('state', () => {
			this.ui.connState();
			this.selfPresence();
			this.pendingChanged();
		});
		c.addEventListener('hello', (e) => this.onHello(e.detail));
		c.addEventListener('frame', (e) => this.onFrame(e.detail));
		c.addEventListener('refused', (e) => {
			sessionStorage.removeItem(TOKEN_KEY);
			boot(e.detail.reason);
		});
		c.addEventListener('notice', (e) => this.toast(e.detail));
		addEventListener('online', () => c.kick());
		const awake = () => {
			this.lastActivity = Date.now();
		};
		for (const t of ['keydown', 'pointerdown', 'pointermove', 'wheel', 'focus'])
			addEventListener(t, awake, { passive: true, capture: true });
		document.addEventListener('visibilitychange', () => this.maybeRead());
		addEventListener('focus', () => this.maybeRead());
		setInterval(() => this.ui.typing(), 1000);
		c.start();
	}

	req(op, args) {
		return this.conn.request(op, args);
	}

	toast(text) {
		this.ui.toast(text);
	}

	// ---- the connection's life ------------------------------------------

	async onHello(res) {
		this.hello = res;
		if (res.name) this.store.users.set(this.me, { name: res.name });
		this.ui.names([this.me]);
		if (this.wanted) {
			// names asked for while offline: ask again
			const missing = [...this.wanted].filter((u) => !this.store.users.has(u));
			for (const u of missing) this.wanted.delete(u);
			for (const u of missing) this.wantUser(u);
		}
		this.store.setChannels(res.channels, { replace: true });
		this.ui.sidebar();
		if (this.status !== 'online') this.conn.fire('presence.set', { status: this.status });
		this.watched = '';
		this.watchSoon();
		this.loadDmMembers();
		this.loadNotify();
		// DMs with news: this device now has them (shown as unread)
		for (const c of res.channels) if (c.kind === 'dm' && c.unread) this.delivered(c.id, c.last_seq);
		const open = this.store.openCh;
		if (open && this.store.channels.has(open)) {
			if (!this.view || this.view.ch !== open) this.openChannel(open);
			else if (this.store.channels.get(open).kind === 'dm') this.loadReceipts(open);
			else this.loadInfo(open); // frames missed while away: settings, receipts
		} else {
			const first = [...this.store.channels.values()].find((ch) => ch.kind !== 'dm') || this.store.channels.values().next().value;
			if (first) this.openChannel(first.id);
			else this.ui.noChannel();
		}
		this.flushOutbox();
	}

	async loadDmMembers() {
		for (const ch of this.store.channels.values()) {
			if (ch.kind !== 'dm' || ch.members) continue;
			try {
				const r = await this.req('ch.members', { ch: ch.id, limit: 250 });
				ch.members = r.members;
				for (const u of r.members) this.userName(u); // their names
			} catch {
				continue;
			}
		}
		this.ui.sidebar();
		if (this.view) this.ui.header();
		this.watchSoon();
	}

	onFrame(f) {
		switch (f.t) {
		case 'ev':
			this.onEvent(f);
			break;
		case 'gap':
			this.catchUp(f.ch, f.after);
			break;
		case 'member':
			this.onMember(f);
			break;
		case 'read': {
			const ch = this.store.channels.get(f.ch);
			if (!ch || f.seq <= ch.read_seq) break;
			ch.read_seq = f.seq;
			if (ch.read_seq >= ch.last_seq) {
				ch.unread = 0;
				ch.mentions = 0;
				this.closeNote(f.ch); // read on another device
			} else {
				this.refreshCounts();
			}
			this.ui.sidebar();
			break;
		}
		case 'typing': {
			if (f.user === this.me) break;
			const t = this.store.typing;
			if (!t.has(f.ch)) t.set(f.ch, new Map());
			t.get(f.ch).set(f.user, Date.now() + TYPING_SHOW_MS);
			this.ui.typing();
			break;
		}
		case 'chan':
			// a channel's settings changed (name, topic, archived, post)
			this.learnChannel({ ...f, id: f.ch });
			if (f.archived !== undefined || f.post !== undefined) this.loadInfo(f.ch);
			break;
		case 'receipt':
			this.onReceipt(f);
			break;
		case 'presence':
			this.store.presence.set(f.user, { status: f.status, since: f.since });
			this.ui.presence(f.user);
			break;
		case 'err':
			if (f.op !== 'hb' && f.op !== 'typing' && f.op !== 'read')
				this.toast(`${f.op || 'request'}: ${f.msg || f.code}`);
			break;
		}
	}

	// Events of a channel, in seq order, each once; a hole is paged in with
	// `events` first.
	onEvent(ev) {
		const q = this.catching.get(ev.ch);
		if (q) {
			q.push(ev);
			return;
		}
		const seen = this.store.seen[ev.ch];
		if (seen !== undefined && ev.seq <= seen) return;
		if (seen !== undefined && ev.seq > seen + 1) {
			this.catchUp(ev.ch, seen, [ev]);
			return;
		}
		this.applyEvent(ev);
	}

	async catchUp(ch, after, queued = []) {
		if (this.catching.has(ch)) return;
		this.catching.set(ch, queued);
		let from = Math.max(after, this.store.seen[ch] || 0);
		for (let attempt = 0; ; ) {
			try {
				const r = await this.req('events', { ch, after: from, limit: 1000 });
				for (const ev of r.evs) {
					if (ev.seq > (this.store.seen[ch] || 0)) this.applyEvent({ t: 'ev', ...ev, ch });
					from = ev.seq;
				}
				if (!r.more) break;
			} catch (e) {
				if (e.code === 'NOT_FOUND' || e.code === 'FORBIDDEN') break;
				if (e.code === 'DISCONNECTED') {
					// the resume of the next hello brings them
					this.catching.delete(ch);
					return;
				}
				await new Promise((ok) => setTimeout(ok, backoff(attempt++)));
			}
		}
		const rest = this.catching.get(ch) || [];
		this.catching.delete(ch);
		for (const ev of rest) this.onEvent(ev);
	}

	applyEvent(ev) {
		const st = this.store;
		st.seen[ev.ch] = ev.seq;
		if (!st.channels.has(ev.ch)) this.refreshCounts();
		st.count(ev);
		this.maybeNotify(ev);
		if (ev.k === 'msg' && ev.from === this.me) this.settle(ev.ch, ev.cmid, ev.seq);
		if (ev.k === 'msg' && ev.from !== this.me) this.delivered(ev.ch, ev.seq);
		if (this.view && this.view.ch === ev.ch) this.view.apply(ev);
		if (this.threadView && this.threadView.ch === ev.ch) this.threadView.apply(ev);
		if (ev.k === 'msg') {
			const t = st.typing.get(ev.ch);
			if (t && t.delete(ev.from)) this.ui.typing();
		}
		this.saveSoon();
		this.ui.sidebarSoon();
		this.maybeRead();
	}

	saveSoon() {
		if (this.saveTimer) return;
		this.saveTimer = setTimeout(() => {
			this.saveTimer = null;
			this.store.save();
		}, 200);
	}

	// Unread counts after the read marker moved to the middle, or a channel
	// appeared: ask the server (ch.list carries the counts).
	refreshCounts() {
		clearTimeout(this.countsTimer);
		this.countsTimer = setTimeout(async () => {
			try {
				const r = await this.req('ch.list', {});
				this.store.setChannels(r.channels, { replace: false });
				this.ui.sidebar();
				this.loadDmMembers();
				// a DM that came with events before we knew it
				for (const ch of this.store.channels.values())
					if (ch.kind === 'dm') this.delivered(ch.id, this.store.seen[ch.id]);
			} catch {
				/* the next hello brings them */
			}
		}, 150);
	}

	onMember(f) {
		const st = this.store;
		if (f.user === this.me) {
			if (f.action === 'leave' || f.action === 'kick') {
				const was = st.channels.has(f.ch);
				st.drop(f.ch);
				this.ui.sidebar();
				if (this.view && this.view.ch === f.ch) {
					this.closeThread();
					this.view.destroy();
					this.view = null;
					const next = st.channels.keys().next().value;
					if (next) this.openChannel(next);
					else this.ui.noChannel();
				}
				if (was && f.action === 'kick') this.toast('You were removed from a channel.');
			} else {
				this.refreshCounts();
			}
			return;
		}
		const ch = st.channels.get(f.ch);
		if (ch && ch.kind === 'dm' && ch.members && (f.action === 'join' || f.action === 'invite')) {
			if (!ch.members.includes(f.user)) ch.members.push(f.user);
			this.ui.sidebar();
		}
	}

	// ---- reading --------------------------------------------------------

	openChannel(id, { jump } = {}) {
		const st = this.store;
		const ch = st.channels.get(id);
		if (!ch) return;
		if (!this.view || this.view.ch !== id || jump) {
			this.closeThread();
			if (this.view) this.view.destroy();
			st.openCh = id;
			st.save();
			this.view = new MsgList(this, id, 0, $('#messages'), `Messages in ${st.displayName(ch)}`);
			this.ui.header();
			this.ui.sidebar();
			this.ui.typing();
			if (jump) this.view.jumpTo(jump);
			else this.view.loadLatest();
			if (ch.kind !== 'dm') this.loadInfo(id);
			else this.loadReceipts(id);
		}
		this.ui.closeMenu();
		this.ui.focusComposer();
	}

	// Moves the read marker when the newest message is on screen.
	maybeRead() {
		const v = this.view;
		if (!v || document.visibilityState !== 'visible' || this.conn.state !== 'open') return;
		const ch = this.store.channels.get(v.ch);
		const seen = this.store.seen[v.ch] || 0;
		if (!ch || seen <= ch.read_seq || !v.newestVisible()) return;
		ch.read_seq = seen;
		ch.unread = 0;
		ch.mentions = 0;
		this.conn.fire('read', { ch: v.ch, seq: seen });
		this.closeNote(v.ch);
		this.ui.sidebarSoon();
	}

	async openThread(ch, root) {
		if (this.threadView) this.threadView.destroy();
		this.ui.showThread(true);
		this.threadView = new MsgList(this, ch, root, $('#thread-messages'), 'Thread replies');
		await this.threadView.loadLatest();
		$('#thread-composer').focus();
	}

	closeThread() {
		if (!this.threadView) return;
		this.threadView.destroy();
		this.threadView = null;
		this.ui.showThread(false);
	}

	async jumpTo(chId, seq) {
		if (!this.store.channels.has(chId)) return;
		// a thread reply is shown in its thread
		let root = 0;
		try {
			const r = await this.req('events', { ch: chId, after: seq - 1, limit: 1 });
			if (r.evs[0] && r.evs[0].seq === seq && r.evs[0].thread) root = r.evs[0].thread;
		} catch {
			/* show the channel anyway */
		}
		this.openChannel(chId, { jump: root || seq });
		if (root) {
			await this.openThread(chId, root);
			await this.threadView.jumpTo(seq);
		}
	}

	async search(q) {
		try {
			const r = await this.req('search', { q, limit: 50 });
			this.ui.searchResults(q, r.hits, r.partial);
		} catch (e) {
			this.ui.searchResults(q, null, false, e.message);
		}
	}

	// ---- presence -------------------------------------------------------

	// Watches the people in view: DM partners and the authors on screen.
	watchSoon() {
		clearTimeout(this.watchTimer);
		this.watchTimer = setTimeout(() => this.watch(), 300);
	}

	async watch() {
		if (this.conn.state !== 'open') return;
		const users = new Set();
		for (const ch of this.store.channels.values())
			if (ch.kind === 'dm' && ch.members) for (const u of ch.members) if (u !== this.me) users.add(u);
		for (const v of [this.view, this.threadView]) if (v) for (const m of v.msgs) if (m.from !== this.me) users.add(m.from);
		const list = [...users].sort().slice(0, 500);
		const key = list.join(',');
		if (key === this.watched) return;
		this.watched = key;
		try {
			const r = await this.req('presence.watch', { users: list });
			for (const [u, p] of Object.entries(r.presence || {})) this.store.presence.set(u, p);
			for (const u of list) this.ui.presence(u);
		} catch {
			this.watched = '';
		}
	}

	presenceDot(user) {
		return ui.presenceDot(this, user);
	}

	// ---- receipts (DMs) ---------------------------------------------------

	async loadReceipts(chId) {
		try {
			const r = await this.req('receipts', { ch: chId });
			const map = new Map();
			for (const [u, p] of Object.entries(r.receipts || {})) map.set(u, { delivered: p.delivered || 0, read: p.read || 0 });
			this.store.receipts.set(chId, map);
			this.receiptsChanged(chId);
			this.delivered(chId, this.store.seen[chId] || 0);
		} catch {
			/* not served, or the DM went away */
		}
	}

	onReceipt(f) {
		const st = this.store;
		if (!st.receipts.has(f.ch)) st.receipts.set(f.ch, new Map());
		const map = st.receipts.get(f.ch);
		const p = map.get(f.user) || { delivered: 0, read: 0 };
		if (f.read !== undefined) p.read = Math.max(p.read, f.read);
		if (f.delivered !== undefined) p.delivered = Math.max(p.delivered, f.delivered);
		map.set(f.user, p);
		this.receiptsChanged(f.ch);
	}

	// Positions moved (or were first learnt): redraw my messages, whose
	// ticks show them.
	receiptsChanged(chId) {
		for (const v of [this.view, this.threadView]) {
			if (!v || v.ch !== chId || !v.loaded) continue;
			v.keepView(() => {
				for (const m of v.msgs) if (m.from === this.me && !m.deleted) v.rerender(m);
			});
		}
	}

	// Where one of my messages in a DM is: sent, delivered to every other
	// member, or read by every other member.
	tickState(chId, seq) {
		const map = this.store.receipts.get(chId);
		const ch = this.store.channels.get(chId);
		if (!map || !ch || ch.kind !== 'dm') return null;
		const others = (ch.members || [...map.keys()]).filter((u) => u !== this.me);
		if (!others.length) return null;
		const at = (u, k) => Math.max(map.get(u)?.[k] || 0, k === 'delivered' ? map.get(u)?.read || 0 : 0);
		const readBy = others.filter((u) => at(u, 'read') >= seq);
		if (readBy.length === others.length) return { state: 'read', readBy };
		if (others.every((u) => at(u, 'delivered') >= seq)) return { state: 'delivered', readBy };
		return { state: 'sent', readBy };
	}

	ticks(chId, seq) {
		const t = this.tickState(chId, seq);
		if (!t) return null;
		const ch = this.store.channels.get(chId);
		const names = t.readBy.map((u) => this.userName(u));
		const label = t.state === 'read'
			? (ch.members?.length > 2 ? `Read by ${names.join(', ')}` : 'Read')
			: t.state === 'delivered'
				? (names.length ? `Delivered; read by ${names.join(', ')}` : 'Delivered')
				: names.length ? `Sent; read by ${names.join(', ')}` : 'Sent';
		return el('span.ticks', { dataset: { seq, state: t.state }, title: label, 'aria-label': label }, t.state === 'sent' ? '✓' : '✓✓');
	}

	// Tells the server this device has the DM's events up to seq (so the
	// sender sees "delivered"); batched per channel.
	delivered(chId, seq) {
		const ch = this.store.channels.get(chId);
		if (!ch || ch.kind !== 'dm' || !seq) return;
		this.deliver ||= new Map();
		this.deliveredSent ||= new Map();
		if (seq <= (this.deliveredSent.get(chId) || 0)) return;
		this.deliveredSent.set(chId, seq);
		this.deliver.set(chId, Math.max(seq, this.deliver.get(chId) || 0));
		if (this.deliverTimer) return;
		this.deliverTimer = setTimeout(() => {
			this.deliverTimer = null;
			for (const [c, s] of this.deliver) this.conn.fire('delivered', { ch: c, seq: s });
			this.deliver.clear();
		}, 250);
	}

	// ---- people ---------------------------------------------------------

	// A user's display name; an unknown one is looked up (users.get, in
	// batches) and the page updated when it comes.
	userName(user) {
		const u = this.store.users.get(user);
		if (!u) this.wantUser(user);
		return u?.name || user;
	}

	wantUser(user) {
		this.wanted ||= new Set();
		if (this.wanted.has(user)) return;
		this.wanted.add(user);
		clearTimeout(this.usersTimer);
		this.usersTimer = setTimeout(() => this.fetchUsers(), 30);
	}

	async fetchUsers() {
		if (this.conn.state !== 'open') return; // the next hello asks again
		const ids = [...this.wanted].filter((u) => !this.store.users.has(u)).slice(0, 500);
		if (!ids.length) return;
		try {
			const r = await this.req('users.get', { users: ids });
			this.learnUsers(r.users);
			for (const u of ids) if (!this.store.users.has(u)) this.store.users.set(u, { name: u, unknown: true });
		} catch (e) {
			if (e.code === 'DISCONNECTED') {
				for (const u of ids) this.wanted.delete(u);
				return;
			}
			for (const u of ids) if (!this.store.users.has(u)) this.store.users.set(u, { name: u });
		}
		this.ui.names(ids);
		if ([...this.wanted].some((u) => !this.store.users.has(u))) this.fetchUsers();
	}

	learnUsers(list) {
		for (const u of list || []) {
			this.store.users.set(u.id, { name: u.name || u.id, last_seen: u.last_seen });
			if (u.status && u.id !== this.me && !this.store.presence.has(u.id))
				this.store.presence.set(u.id, { status: u.status, since: u.last_seen });
		}
	}

	// The user's own dot: what others see, as far as this tab knows.
	selfPresence() {
		const s = this.conn.state !== 'open' || this.status === 'invisible' ? 'offline' : this.status;
		this.store.presence.set(this.me, { status: s, since: Date.now() });
		this.ui.presence(this.me);
	}

	setStatus(status) {
		this.status = status;
		this.selfPresence();
		sessionStorage.setItem(`${this.store.key}:status`, status);
		this.req('presence.set', { status }).catch((e) => this.toast(`Status: ${e.message}`));
	}

	// ---- notifications --------------------------------------------------

	// The user's notification levels (notify.get), after every hello: a
	// change made on another device while this one was away shows.
	async loadNotify() {
		try {
			const r = await this.req('notify.get', {});
			this.notify = { default: LEVELS.includes(r.default) ? r.default : 'mentions', channels: { ...(r.channels || {}) } };
		} catch (e) {
			if (e.code === 'DISCONNECTED') return; // the next hello asks again
			// a server without notification settings: none shown; desktop
			// notifications follow the protocol's defaults
			this.notify = null;
		}
		this.ui.sidebar();
		this.ui.header();
	}

	// A conversation's level: its own setting, else for a channel the
	// user's default ("mentions" unless set), for a DM "all".
	levelOf(chId) {
		const own = this.notify?.channels[chId];
		if (own) return own;
		if (this.store.channels.get(chId)?.kind === 'dm') return 'all';
		return this.notify?.default || 'mentions';
	}

	// Muted: level "none" (shown dimmed; only known with notify.get).
	muted(chId) {
		return !!this.notify && this.levelOf(chId) === 'none';
	}

	// notify.set: the default for channels (no chId) or one conversation's.
	async setNotify(level, chId) {
		const args = { level };
		if (chId) args.ch = chId;
		await this.req('notify.set', args);
		this.notify ||= { default: 'mentions', channels: {} };
		if (chId) this.notify.channels[chId] = level;
		else this.notify.default = level;
		this.ui.sidebar();
		this.ui.header();
	}

	// Desktop notifications in this browser: on unless switched off in the
	// preferences (kept per browser, not on the server).
	get desktopKey() {
		return `parley:${this.wsId}:${this.me}:desktop`;
	}

	desktopOn() {
		return localStorage.getItem(this.desktopKey) !== 'off';
	}

	setDesktop(on) {
		if (on) localStorage.removeItem(this.desktopKey);
		else localStorage.setItem(this.desktopKey, 'off');
	}

	// Whether this message is worth a desktop notification: the tab is
	// hidden, it is someone else's, recent and unread, the user's level for
	// the conversation allows it, and the user's chosen status is not dnd.
	notifyWanted(ev) {
		if (ev.k !== 'msg' || ev.from === this.me) return false;
		if (document.visibilityState !== 'hidden' || this.status === 'dnd') return false;
		const ch = this.store.channels.get(ev.ch);
		if (!ch || ev.seq <= ch.read_seq) return false;
		if (typeof ev.ts === 'number' && Date.now() - ev.ts > NOTIFY_RECENT_MS) return false;
		const level = this.levelOf(ev.ch);
		return level === 'all' || (level === 'mentions' && this.store.mentionsMe(ev));
	}

	maybeNotify(ev) {
		if (typeof Notification === 'undefined' || Notification.permission !== 'granted' || !this.desktopOn()) return;
		if (!this.notifyWanted(ev)) return;
		const st = this.store;
		const ch = st.channels.get(ev.ch);
		const who = this.userName(ev.from);
		const title = ch.kind !== 'dm' ? `${who} in #${ch.name}`
			: ch.members?.length > 2 ? `${who} in ${st.displayName(ch)}` : `${who} (direct message)`;
		let body = ev.body || (ev.files?.length ? `Sent ${ev.files.length === 1 ? 'a file' : `${ev.files.length} files`}` : '');
		if (body.length > 300) body = `${body.slice(0, 300)}…`;
		let n;
		try {
			// one per conversation: a newer one replaces it (same tag)
			n = new Notification(title, { body, tag: `parley:${this.wsId}:${ev.ch}` });
		} catch {
			return; // e.g. a browser that shows them only from a service worker
		}
		this.notes.set(ev.ch, n);
		n.onclick = () => {
			window.focus();
			n.close();
			if (ev.thread) this.jumpTo(ev.ch, ev.seq);
			else this.openChannel(ev.ch);
		};
	}

	closeNote(chId) {
		const n = this.notes.get(chId);
		if (!n) return;
		this.notes.delete(chId);
		try {
			n.close();
		} catch {
			/* gone already */
		}
	}

	// ---- sending --------------------------------------------------------

	typed(ch) {
		const now = Date.now();
		if (now - this.lastTyping < TYPING_SEND_MS) return;
		this.lastTyping = now;
		this.conn.fire('typing', { ch });
	}

	// Shows the message at once; it is sent, and re-sent with the same cmid
	// after every reconnect, until the server acknowledges it.
	sendMsg(ch, body, thread) {
		const o = { cmid: this.store.cmid(), ch, body, t: Date.now() };
		if (thread) o.thread = thread;
		const mentions = mentionsIn(body);
		if (mentions.length) o.mentions = mentions;
		this.store.outbox.push(o);
		this.store.save();
		this.lastTyping = 0;
		this.pendingChanged(o);
		this.trySend(o);
	}

	async trySend(o, attempt = 0) {
		if (o.inflight || o.failed || this.conn.state !== 'open') return;
		o.inflight = true;
		const args = { ch: o.ch, body: o.body, cmid: o.cmid };
		if (o.thread) args.thread = o.thread;
		if (o.mentions) args.mentions = o.mentions;
		try {
			const r = await this.req('send', args);
			o.inflight = false;
			o.seq = r.seq;
			if ((this.store.seen[o.ch] || 0) >= r.seq) this.settle(o.ch, o.cmid, r.seq);
			this.store.save();
		} catch (e) {
			o.inflight = false;
			// lost with the connection: flushOutbox after the next hello
			if (e.code === 'DISCONNECTED' && this.conn.state !== 'open') return;
			if (['DISCONNECTED', 'RATE_LIMITED', 'UNAVAILABLE', 'INTERNAL'].includes(e.code)) {
				setTimeout(() => this.trySend(o, attempt + 1), Math.max(e.retry_ms || 0, backoff(attempt)));
				return;
			}
			o.failed = e.message || e.code;
			this.store.save();
			this.pendingChanged(o);
		}
	}

	flushOutbox() {
		for (const o of this.store.outbox) {
			if (o.seq && (this.store.seen[o.ch] || 0) >= o.seq) this.settle(o.ch, o.cmid, o.seq);
			else this.trySend(o);
		}
		this.pendingChanged();
	}

	// The message with this cmid is in the channel: it leaves the outbox.
	settle(ch, cmid, seq) {
		const st = this.store;
		const i = st.outbox.findIndex((o) => o.ch === ch && o.cmid === cmid);
		if (i < 0) return;
		st.outbox.splice(i, 1);
		st.save();
		this.pendingChanged();
		void seq;
	}

	retrySend(cmid) {
		const o = this.store.outbox.find((x) => x.cmid === cmid);
		if (!o) return;
		delete o.failed;
		this.pendingChanged(o);
		this.trySend(o);
	}

	discardSend(cmid) {
		const st = this.store;
		st.outbox = st.outbox.filter((x) => x.cmid !== cmid);
		st.save();
		this.pendingChanged();
	}

	pendingChanged() {
		for (const v of [this.view, this.threadView]) if (v && v.loaded) v.renderPending();
	}

	// ---- changing messages ------------------------------------------------

	async react(ch, seq, emoji, on) {
		try {
			await this.req('react', { ch, target: seq, emoji, on });
		} catch (e) {
			this.toast(`Reaction not saved: ${e.message}`);
		}
	}

	async editMsg(ch, seq, body) {
		try {
			await this.req('edit', { ch, target: seq, body });
			return true;
		} catch (e) {
			this.toast(`Edit not saved: ${e.message}`);
			return false;
		}
	}

	async deleteMsg(ch, seq) {
		if (!(await ui.confirm('Delete this message? Everyone in the conversation will see it was deleted.'))) return;
		try {
			await this.req('delete', { ch, target: seq });
		} catch (e) {
			this.toast(`Not deleted: ${e.message}`);
		}
	}

	async showEdits(ch, seq) {
		try {
			const r = await this.req('edits', { ch, target: seq });
			ui.editHistory(r.versions);
		} catch (e) {
			this.toast(`Edit history: ${e.message}`);
		}
	}

	// Owners of the channel and workspace admins moderate it.
	canModerate(chId) {
		const ch = this.store.channels.get(chId);
		if (!ch || ch.kind === 'dm') return false;
		return this.admin || !!ch.owners?.includes(this.me);
	}

	// Why the composer is closed in this channel, or null.
	postBlocked(ch) {
		if (ch.archived) return 'This channel is archived: it is read-only.';
		if (ch.post === 'owners' && !this.canModerate(ch.id))
			return 'Only owners post here; you can react and reply in threads.';
		return null;
	}

	// ch.info: topic, archived, post and the owners of a channel.
	async loadInfo(chId) {
		try {
			const r = await this.req('ch.info', { ch: chId });
			this.learnChannel(r.ch);
			return r.ch;
		} catch {
			return null;
		}
	}

	learnChannel(c) {
		const ch = this.store.channels.get(c.id);
		if (!ch) return;
		for (const k of ['name', 'topic', 'archived', 'post', 'owners']) if (k in c) ch[k] = c[k];
		this.ui.sidebar();
		if (this.view?.ch === c.id) {
			this.ui.header();
			for (const v of [this.view, this.threadView]) if (v) v.rerenderAll();
		}
	}

	// ---- making things ----------------------------------------------------

	async createChannel(name, kind) {
		const r = await this.req('ch.create', { name, kind });
		this.store.setChannels([{ ...r.ch, last_seq: 0, read_seq: 0, unread: 0, mentions: 0 }], { replace: false });
		this.ui.sidebar();
		this.openChannel(r.ch.id);
	}

	async joinChannel(c) {
		const r = await this.req('ch.join', { ch: c.id });
		this.store.setChannels([{ ...r.ch, last_seq: r.last_seq, read_seq: r.last_seq, unread: 0, mentions: 0 }], { replace: false });
		this.ui.sidebar();
		this.openChannel(r.ch.id);
	}

	async openDm(users) {
		const r = await this.req('dm.open', { users });
		const ch = r.ch;
		if (!this.store.channels.has(ch.id)) {
			const list = await this.req('ch.list', {});
			this.store.setChannels(list.channels, { replace: false });
		}
		const known = this.store.channels.get(ch.id);
		if (known) known.members = [this.me, ...users.filter((u) => u !== this.me)];
		this.ui.sidebar();
		this.watchSoon();
		this.openChannel(ch.id);
	}

	async leave(id) {
		try {
			await this.req('ch.leave', { ch: id });
		} catch (e) {
			this.toast(`Could not leave: ${e.message}`);
		}
	}

	signOut() {
		this.conn.stop();
		sessionStorage.clear();
		location.reload();
	}
}

export { clear, el };

boot();
