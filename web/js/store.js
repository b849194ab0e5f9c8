// What the tab remembers: the user's channels with their counts, the last
// event seq applied per channel (for resume), the outbox of sends not yet
// acknowledged, and presence. Kept in sessionStorage, so a reload of the
// tab resumes where it was, and a second tab starts on its own.

import { randomId } from './util.js';

export class Store {
	constructor(user, ws) {
		this.user = user;
		this.ws = ws;
		this.key = `parley:${ws}:${user}`;
		const saved = JSON.parse(sessionStorage.getItem(this.key) || '{}');
		this.seen = saved.seen || {}; // ch -> last event seq applied
		this.outbox = saved.outbox || []; // {cmid, ch, body, thread, mentions, failed, seq}
		for (const o of this.outbox) delete o.inflight; // a reload ended them
		this.openCh = saved.openCh || null;
		// new on every page load: a duplicated tab (which copies
		// sessionStorage) must not make the same cmids as its original
		this.tab = randomId(8);
		this.nextCmid = saved.nextCmid || 1;
		this.channels = new Map(); // id -> {id, name, kind, last_seq, read_seq, unread, mentions, members}
		this.counted = {}; // ch -> the seq up to which unread counts are the server's
		this.presence = new Map(); // user -> {status, since}
		this.users = new Map(); // user -> {name, last_seen} (users.get)
		this.receipts = new Map(); // DM -> Map(user -> {delivered, read})
		this.typing = new Map(); // ch -> Map(user -> expiry ms)
	}

	save() {
		sessionStorage.setItem(
			this.key,
			JSON.stringify({
				seen: this.seen,
				outbox: this.outbox.map(({ inflight, ...o }) => o),
				openCh: this.openCh,
				nextCmid: this.nextCmid,
			}),
		);
	}

	cmid() {
		return `w${this.tab}-${Date.now().toString(36)}-${this.nextCmid++}`;
	}

	// The hello (or ch.list) view of the user's channels. Counts from the
	// server are authoritative up to each channel's last_seq.
	setChannels(list, { replace }) {
		const ids = new Set();
		for (const c of list) {
			if (c.member === false) continue;
			ids.add(c.id);
			const old = this.channels.get(c.id);
			const ch = old || { members: null };
			ch.id = c.id;
			ch.name = c.name;
			ch.kind = c.kind;
			ch.last_seq = Math.max(c.last_seq, old ? old.last_seq : 0);
			ch.read_seq = Math.max(c.read_seq, old ? old.read_seq : 0);
			if (!old || c.last_seq >= old.last_seq) {
				ch.unread = c.unread;
				ch.mentions = c.mentions;
				this.counted[c.id] = c.last_seq;
			}
			this.channels.set(c.id, ch);
			if (this.seen[c.id] === undefined) this.seen[c.id] = c.last_seq;
		}
		if (replace) {
			for (const id of [...this.channels.keys()]) if (!ids.has(id)) this.drop(id);
		}
		this.save();
	}

	drop(id) {
		this.channels.delete(id);
		delete this.seen[id];
		delete this.counted[id];
		if (this.openCh === id) this.openCh = null;
		this.save();
	}

	// The resume map for hello: every channel this tab has followed.
	resume() {
		const r = {};
		for (const [ch, seq] of Object.entries(this.seen)) if (seq > 0) r[ch] = seq;
		return r;
	}

	// An event in order: counts and markers. Returns false for a duplicate.
	count(ev) {
		const ch = this.channels.get(ev.ch);
		if (!ch) return true;
		ch.last_seq = Math.max(ch.last_seq, ev.seq);
		if (ev.k !== 'msg') return true;
		if (ev.from === this.user) {
			// sending moves the sender's read marker to the message
			ch.read_seq = Math.max(ch.read_seq, ev.seq);
			ch.unread = 0;
			ch.mentions = 0;
		} else if (ev.seq > (this.counted[ev.ch] || 0) && ev.seq > ch.read_seq) {
			ch.unread++;
			// the server counts only mentions by id, not @channel/@here
			if ((ev.mentions || []).includes(this.user)) ch.mentions++;
		}
		this.counted[ev.ch] = Math.max(this.counted[ev.ch] || 0, ev.seq);
		return true;
	}

	// Whether a message is addressed to the user: by id, @channel or @here
	// (highlighted, and a desktop notification at level "mentions").
	mentionsMe(ev) {
		const m = ev.mentions || [];
		return m.includes(this.user) || m.includes('@channel') || m.includes('@here');
	}

	// A user's display name, or the id while it is not known.
	nameOf(user) {
		return this.users.get(user)?.name || user;
	}

	displayName(ch) {
		if (ch.kind !== 'dm') return ch.name;
		if (!ch.members) return 'Direct message';
		const others = ch.members.filter((u) => u !== this.user);
		return others.length ? others.map((u) => this.nameOf(u)).join(', ') : `${this.nameOf(this.user)} (you)`;
	}
}
