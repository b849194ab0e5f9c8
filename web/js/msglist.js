// A scrolling list of messages: a channel's top-level messages, or one
// thread (its root, then its replies). It holds a window of at most
// MAX_RENDERED messages, loads older pages as the user scrolls up and newer
// ones as they scroll back down, and keeps what the user is looking at
// still while pages come and go, so a channel of any length scrolls without
// slowing the page down.
//
// Live events are handed to apply() in seq order by the client; a window
// that does not reach the newest message ignores new messages (they are
// loaded when the user scrolls down to them).

import { el, clear, timeOf, fullTime, BROADCASTS } from './util.js';

export const MAX_RENDERED = 300;
const PAGE = 50;
const EDGE_PX = 400;
const GROUP_MS = 5 * 60 * 1000;
export const EMOJI = ['👍', '❤️', '😂', '🎉', '👀', '🙏', '✅'];

export class MsgList {
	// thread: the root seq, or 0 for the channel's top level
	constructor(client, ch, thread, scroller, label) {
		this.client = client;
		this.ch = ch;
		this.thread = thread;
		this.sc = scroller;
		clear(this.sc);
		this.list = el('div.list');
		this.pendingEl = el('div.pending-list');
		this.empty = el('p.empty', thread ? 'No replies yet.' : 'No messages yet. Say hello!');
		this.sc.append(this.list, this.pendingEl);
		this.sc.setAttribute('aria-label', label);
		this.msgs = [];
		this.els = new Map(); // seq -> element
		this.moreBefore = false;
		this.atLive = false;
		this.loaded = false;
		this.busy = null;
		this.early = []; // events that came while the first page was loading
		this.onScroll = () => this.scrolled();
		this.sc.addEventListener('scroll', this.onScroll, { passive: true });
		this.onKey = (e) => this.key(e);
		this.sc.addEventListener('keydown', this.onKey);
	}

	destroy() {
		this.sc.removeEventListener('scroll', this.onScroll);
		this.sc.removeEventListener('keydown', this.onKey);
		this.destroyed = true;
	}

	history(args) {
		const a = { ch: this.ch, limit: PAGE, ...args };
		if (this.thread) a.thread = this.thread;
		return this.client.req('history', a);
	}

	// The thread's root message (a top-level message).
	async rootMsg() {
		const r = await this.client.req('history', { ch: this.ch, before: this.thread + 1, limit: 1 });
		return r.msgs.find((m) => m.seq === this.thread) || null;
	}

	// Serialises loads: one at a time.
	run(fn) {
		if (this.busy) return this.busy;
		this.busy = (async () => {
			try {
				await fn();
			} catch (e) {
				if (!this.destroyed) this.client.toast(`Could not load messages: ${e.message}`);
			} finally {
				this.busy = null;
			}
		})();
		return this.busy;
	}

	async loadLatest() {
		this.loaded = false;
		await this.run(async () => {
			const r = await this.history({});
			if (this.destroyed) return;
			let msgs = r.msgs;
			this.moreBefore = r.more;
			if (this.thread && !r.more) {
				const root = await this.rootMsg();
				if (root) msgs = [root, ...msgs];
			}
			this.replace(msgs, true);
			this.loaded = true;
			for (const ev of this.early.splice(0)) this.apply(ev);
			this.sc.scrollTop = this.sc.scrollHeight;
		});
		await this.fill();
	}

	// Loads older pages until the list overflows its box (or has no more).
	async fill() {
		for (let i = 0; i < 10 && !this.destroyed; i++) {
			if (!this.moreBefore || this.sc.scrollHeight > this.sc.clientHeight + 10) break;
			await this.loadOlder();
		}
		this.client.maybeRead();
	}

	async loadOlder() {
		if (!this.moreBefore || !this.msgs.length) return;
		await this.run(async () => {
			const r = await this.history({ before: this.msgs[0].seq });
			if (this.destroyed) return;
			let msgs = r.msgs.filter((m) => m.seq < this.msgs[0].seq);
			if (this.thread && !r.more) {
				const root = await this.rootMsg();
				if (root) msgs = [root, ...msgs];
			}
			this.keepView(() => {
				this.moreBefore = r.more;
				this.insert(msgs, 0);
				const extra = this.msgs.length - MAX_RENDERED;
				if (extra > 0) {
					this.remove(this.msgs.length - extra, extra);
					this.atLive = false;
				}
			});
		});
	}

	async loadNewer() {
		if (this.atLive || !this.msgs.length) return;
		await this.run(async () => {
			const last = this.msgs[this.msgs.length - 1].seq;
			const r = await this.history({ after: last });
			if (this.destroyed) return;
			this.keepView(() => {
				this.insert(r.msgs.filter((m) => m.seq > last), this.msgs.length);
				this.atLive = !r.more;
				const extra = this.msgs.length - MAX_RENDERED;
				if (extra > 0) {
					this.remove(0, extra);
					this.moreBefore = true;
				}
				this.renderPending();
			});
		});
	}

	// Shows the window around seq, scrolled to it and highlighted.
	async jumpTo(seq) {
		this.highlight = seq;
		await this.run(async () => {
			const [a, b] = await Promise.all([
				this.history({ before: seq + 1, limit: 25 }),
				this.history({ after: seq, limit: 25 }),
			]);
			if (this.destroyed) return;
			this.moreBefore = a.more;
			this.replace([...a.msgs, ...b.msgs], !b.more);
			this.loaded = true;
			this.early = [];
		});
		const target = this.els.get(seq);
		if (target) {
			target.scrollIntoView({ block: 'center' });
			target.focus({ preventScroll: true });
		}
		return !!target;
	}

	// Keyboard: Up/Down move between messages (loading pages at the
	// ends), Home/End to the first/last one shown.
	key(e) {
		const cur = e.target.closest?.('.msg[data-seq]');
		if (!cur || e.target !== cur) return;
		const all = [...this.list.querySelectorAll('.msg[data-seq]')];
		const i = all.indexOf(cur);
		let next = null;
		if (e.key === 'ArrowUp') next = all[i - 1] || (this.loadOlder(), null);
		else if (e.key === 'ArrowDown') next = all[i + 1] || (this.loadNewer(), null);
		else if (e.key === 'Home') next = all[0];
		else if (e.key === 'End') next = all[all.length - 1];
		else return;
		e.preventDefault();
		if (next) {
			next.focus({ preventScroll: true });
			next.scrollIntoView({ block: 'nearest' });
		}
	}

	scrolled() {
		if (!this.loaded) return;
		const sc = this.sc;
		if (sc.scrollTop < EDGE_PX && this.moreBefore) this.loadOlder();
		else if (sc.scrollHeight - sc.scrollTop - sc.clientHeight < EDGE_PX && !this.atLive) this.loadNewer();
		if (this.atBottom()) this.client.maybeRead();
	}

	atBottom() {
		const sc = this.sc;
		return this.atLive && sc.scrollHeight - sc.scrollTop - sc.clientHeight < 40;
	}

	// The newest message is on screen.
	newestVisible() {
		return this.loaded && this.atLive && this.sc.scrollHeight - this.sc.scrollTop - this.sc.clientHeight < 80;
	}

	// Runs fn, which changes the list, keeping the message at the top of the
	// view where it was (or the bottom pinned when it was there).
	keepView(fn) {
		const sc = this.sc;
		const stick = this.atBottom();
		let anchor = null;
		let off = 0;
		for (const e of this.list.children) {
			if (e.offsetTop + e.offsetHeight > sc.scrollTop) {
				anchor = e;
				off = e.offsetTop - sc.scrollTop;
				break;
			}
		}
		// the anchor may be re-rendered (its grouping changes): find it
		// again by seq
		const seq = anchor && anchor.dataset.seq;
		fn();
		if (seq) anchor = this.els.get(+seq);
		if (stick && this.atLive) sc.scrollTop = sc.scrollHeight;
		else if (anchor && anchor.isConnected) sc.scrollTop = anchor.offsetTop - off;
	}

	replace(msgs, atLive) {
		clear(this.list);
		this.msgs = [];
		this.els.clear();
		this.atLive = atLive;
		this.insert(msgs, 0);
		this.renderPending();
	}

	insert(msgs, at) {
		if (!msgs.length) {
			this.updateEmpty();
			return;
		}
		const before = this.list.children[at] || null;
		const frag = document.createDocumentFragment();
		let prev = this.msgs[at - 1] || null;
		for (const m of msgs) {
			const e = this.render(m, prev);
			this.els.set(m.seq, e);
			frag.append(e);
			prev = m;
		}
		this.list.insertBefore(frag, before);
		this.msgs.splice(at, 0, ...msgs);
		const next = this.msgs[at + msgs.length];
		if (next) this.rerender(next);
		this.updateEmpty();
		this.client.watchSoon();
	}

	remove(at, n) {
		for (const m of this.msgs.splice(at, n)) {
			this.els.get(m.seq)?.remove();
			this.els.delete(m.seq);
		}
		if (this.msgs[0]) this.rerender(this.msgs[0]);
	}

	updateEmpty() {
		const none = !this.msgs.length && !this.moreBefore;
		if (none && !this.empty.isConnected) this.list.before(this.empty);
		else if (!none) this.empty.remove();
	}

	rerender(m) {
		const old = this.els.get(m.seq);
		if (!old) return;
		const i = this.msgs.indexOf(m);
		const e = this.render(m, this.msgs[i - 1] || null);
		const focused = old.contains(document.activeElement) && document.activeElement;
		old.replaceWith(e);
		this.els.set(m.seq, e);
		if (focused === old) e.focus({ preventScroll: true });
	}

	// Everything again (who may moderate changed, receipts came).
	rerenderAll() {
		this.keepView(() => {
			for (const m of this.msgs) this.rerender(m);
		});
	}

	find(seq) {
		const e = this.els.get(seq);
		return e ? this.msgs.find((m) => m.seq === seq) : null;
	}

	// One live event, in order, of this list's channel.
	apply(ev) {
		if (!this.loaded) {
			this.early.push(ev);
			return;
		}
		if (ev.k === 'msg') {
			const mine = (ev.thread || 0) === this.thread;
			if (!mine) {
				// a reply: count it on its root
				const root = this.find(ev.thread);
				if (root && ev.seq > (root.last_reply || 0)) {
					root.replies = (root.replies || 0) + 1;
					root.last_reply = ev.seq;
					this.rerender(root);
				}
				return;
			}
			if (!this.atLive || this.els.has(ev.seq)) return;
			const last = this.msgs[this.msgs.length - 1];
			if (last && ev.seq < last.seq) return;
			const m = { seq: ev.seq, from: ev.from, ts: ev.ts, body: ev.body, cmid: ev.cmid };
			if (ev.thread) m.thread = ev.thread;
			if (ev.mentions) m.mentions = ev.mentions;
			this.keepView(() => {
				this.insert([m], this.msgs.length);
				const extra = this.msgs.length - MAX_RENDERED;
				if (extra > 0) {
					this.remove(0, extra);
					this.moreBefore = true;
				}
				this.renderPending();
			});
			return;
		}
		const m = this.find(ev.target);
		if (!m) return;
		if (ev.k === 'edit') {
			m.body = ev.body;
			m.edited = ev.ts;
		} else if (ev.k === 'delete') {
			m.deleted = true;
			m.body = '';
			delete m.reactions;
		} else if (ev.k === 'react') {
			const r = (m.reactions ||= {});
			const users = new Set(r[ev.emoji] || []);
			if (ev.on) users.add(ev.from);
			else users.delete(ev.from);
			if (users.size) r[ev.emoji] = [...users];
			else delete r[ev.emoji];
		} else return;
		this.keepView(() => this.rerender(m));
	}

	// The user's own sends of this list that are not acknowledged yet.
	renderPending() {
		clear(this.pendingEl);
		if (!this.atLive) return;
		const stick = this.atBottom();
		for (const o of this.client.store.outbox) {
			if (o.ch !== this.ch || (o.thread || 0) !== this.thread) continue;
			if (o.seq && this.els.has(o.seq)) continue;
			const e = this.render({ from: this.client.me, ts: o.t, body: o.body }, null, o);
			this.pendingEl.append(e);
		}
		if (stick || this.pendingEl.children.length) this.sc.scrollTop = this.sc.scrollHeight;
	}

	// ---- one message ------------------------------------------------------

	render(m, prev, pending) {
		const c = this.client;
		const me = c.me;
		const newDay = !pending && (!prev || dayOf(prev.ts) !== dayOf(m.ts));
		const lit = !pending && m.seq === this.highlight;
		const cont =
			!pending &&
			!newDay &&
			!lit &&
			prev &&
			prev.from === m.from &&
			!prev.deleted &&
			m.ts - prev.ts < GROUP_MS &&
			!(this.thread && prev.seq === this.thread);
		const cls = ['msg'];
		if (cont) cls.push('cont');
		if (lit) cls.push('highlight');
		if (m.deleted) cls.push('deleted');
		if (pending) cls.push('pending');
		if (pending?.failed) cls.push('failed');
		if (m.mentions && !m.deleted && c.store.mentionsMe(m) && m.from !== me) cls.push('mention');
		const e = el('article', {
			class: cls.join(' '),
			tabindex: pending ? null : '0',
			'aria-label': `${c.userName(m.from)}, ${timeOf(m.ts)}`,
		});
		if (pending) e.dataset.cmid = pending.cmid;
		else e.dataset.seq = m.seq;

		const head = el(
			'header',
			el('span.author', { dataset: { uname: m.from }, title: m.from }, c.userName(m.from)),
			c.presenceDot(m.from),
			el('time', { datetime: new Date(m.ts).toISOString(), title: fullTime(m.ts) }, timeOf(m.ts)),
			!pending && !cont && m.from === me && !m.deleted ? c.ticks(this.ch, m.seq) : null,
			m.edited && !m.deleted && !cont ? el('span.edited', { title: `edited ${fullTime(m.edited)}` }, '(edited)') : null,
		);
		const body = el('div.body');
		if (m.deleted) body.textContent = 'This message was deleted.';
		else formatBody(body, m.body, me);
		const main = el('div.main', head, body);
		// a grouped message has no header: its edit mark and receipt
		// ticks follow the text
		const tick = cont && m.from === me && !m.deleted && !pending ? c.ticks(this.ch, m.seq) : null;
		if (cont && ((m.edited && !m.deleted) || tick)) {
			body.classList.add('inline');
			if (m.edited && !m.deleted) main.append(' ', el('span.edited', { title: `edited ${fullTime(m.edited)}` }, '(edited)'));
			if (tick) main.append(' ', tick);
		}

		if (pending) {
			const st = pending.failed
				? el('div.status', `Not sent: ${pending.failed} `,
					el('button.link', { type: 'button', onclick: () => c.retrySend(pending.cmid) }, 'Retry'), ' · ',
					el('button.link', { type: 'button', onclick: () => c.discardSend(pending.cmid) }, 'Discard'))
				: el('div.status', c.conn.state === 'open' ? 'Sending…' : 'Waiting for the connection…');
			main.append(st);
			e.append(el('div.gutter', avatarEl(c, m.from)), main);
			return e;
		}

		const archived = !!c.store.channels.get(this.ch)?.archived;
		const reactions = Object.entries(m.reactions || {});
		if (reactions.length && !m.deleted) {
			const box = el('div.reactions');
			for (const [emoji, users] of reactions) {
				const mine = users.includes(me);
				box.append(
					el('button', {
						type: 'button',
						class: mine ? 'reaction mine' : 'reaction',
						dataset: { emoji },
						'aria-pressed': mine ? 'true' : 'false',
						disabled: archived,
						title: users.map((u) => c.userName(u)).join(', '),
						onclick: () => c.react(this.ch, m.seq, emoji, !mine),
					}, `${emoji} ${users.length}`),
				);
			}
			main.append(box);
		}
		if (!this.thread && m.replies) {
			main.append(el('button.replies', { type: 'button', onclick: () => c.openThread(this.ch, m.seq) },
				`${m.replies} ${m.replies === 1 ? 'reply' : 'replies'}`));
		}

		if (!m.deleted) {
			const own = m.from === me;
			const acts = el('div.actions', { role: 'toolbar', 'aria-label': 'Message actions' });
			const act = (name, label, icon, fn) =>
				acts.append(el('button', { type: 'button', dataset: { act: name }, title: label, 'aria-label': label, onclick: fn }, icon));
			if (!archived) act('react', 'Add reaction', '☺', (ev) => this.picker(e, m, ev.currentTarget));
			if (!this.thread && !archived) act('reply', 'Reply in thread', '↩', () => c.openThread(this.ch, m.seq));
			if (own && !archived) act('edit', 'Edit', '✎', () => this.editor(e, m));
			if (own && m.edited) act('history', 'Edit history', '🕘', () => c.showEdits(this.ch, m.seq));
			if (own || c.canModerate(this.ch)) act('delete', 'Delete', '🗑', () => c.deleteMsg(this.ch, m.seq));
			e.append(acts);
		}
		e.prepend(el('div.gutter', cont ? null : avatarEl(c, m.from)));
		e.append(main);
		if (newDay && !this.thread) e.prepend(el('div.day', { role: 'separator' }, el('span', dayLabel(m.ts))));
		return e;
	}

	picker(msgEl, m, button) {
		const old = msgEl.querySelector('.emoji-picker');
		if (old) {
			old.remove();
			return;
		}
		const p = el('div.emoji-picker', { role: 'menu', 'aria-label': 'Pick a reaction' });
		for (const emoji of EMOJI) {
			const mine = (m.reactions?.[emoji] || []).includes(this.client.me);
			p.append(el('button', {
				type: 'button', role: 'menuitem', dataset: { emoji }, 'aria-label': emoji,
				onclick: () => {
					p.remove();
					this.client.react(this.ch, m.seq, emoji, !mine);
				},
			}, emoji));
		}
		p.addEventListener('keydown', (ev) => {
			if (ev.key === 'Escape') {
				p.remove();
				button.focus();
			}
		});
		msgEl.append(p);
		p.querySelector('button').focus();
	}

	editor(msgEl, m) {
		const body = msgEl.querySelector('.body');
		if (!body || msgEl.querySelector('.edit-box')) return;
		const box = el('textarea.edit-box', { 'aria-label': 'Edit message', rows: 2 });
		box.value = m.body;
		const done = () => {
			box.replaceWith(body);
			msgEl.focus({ preventScroll: true });
		};
		box.addEventListener('keydown', async (ev) => {
			if (ev.key === 'Escape') done();
			else if (ev.key === 'Enter' && !ev.shiftKey) {
				ev.preventDefault();
				const text = box.value.trim();
				if (text && text !== m.body) {
					box.disabled = true;
					const ok = await this.client.editMsg(this.ch, m.seq, text);
					if (!ok) {
						box.disabled = false;
						return;
					}
				}
				if (box.isConnected) done();
			}
		});
		body.replaceWith(box);
		box.focus();
		box.setSelectionRange(box.value.length, box.value.length);
	}
}

const dayOf = (ms) => new Date(ms).toDateString();
const dayFmt = new Intl.DateTimeFormat(undefined, { weekday: 'long', month: 'long', day: 'numeric' });

function dayLabel(ms) {
	const d = new Date(ms);
	const now = new Date();
	if (d.toDateString() === now.toDateString()) return 'Today';
	if (d.toDateString() === new Date(now.getTime() - 864e5).toDateString()) return 'Yesterday';
	return dayFmt.format(d) + (d.getFullYear() === now.getFullYear() ? '' : `, ${d.getFullYear()}`);
}

// Wraps the search terms found in node's text in <mark>.
export function markTerms(node, q) {
	const terms = q.toLowerCase().replace(/["*]/g, ' ').split(/\s+/).filter((t) => t.length > 0);
	if (!terms.length) return;
	const re = new RegExp(terms.map((t) => t.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('|'), 'gi');
	const walk = document.createTreeWalker(node, NodeFilter.SHOW_TEXT);
	const texts = [];
	while (walk.nextNode()) texts.push(walk.currentNode);
	for (const t of texts) {
		const parts = [];
		let at = 0;
		for (const m of t.data.matchAll(re)) {
			if (m.index > at) parts.push(t.data.slice(at, m.index));
			parts.push(el('mark', m[0]));
			at = m.index + m[0].length;
		}
		if (!parts.length) continue;
		if (at < t.data.length) parts.push(t.data.slice(at));
		t.replaceWith(...parts);
	}
}

export function avatarEl(client, user) {
	return el('span.avatar', { dataset: { uavatar: user } }, avatarOf(client.userName(user)));
}

export function avatarOf(user) {
	return (user.match(/[A-Za-z0-9]/)?.[0] || '?').toUpperCase();
}

// Text with line breaks kept, links and @mentions marked; never HTML.
export function formatBody(node, text, me) {
	const re = /(https?:\/\/[^\s<>"']+[^\s<>"'.,;:!?)\]])|(@[A-Za-z0-9._-]{1,64})/g;
	let at = 0;
	for (const m of text.matchAll(re)) {
		if (m.index > at) node.append(text.slice(at, m.index));
		if (m[1]) node.append(el('a', { href: m[1], target: '_blank', rel: 'noopener noreferrer' }, m[1]));
		else node.append(el('span', { class: m[2] === `@${me}` ? 'at me' : BROADCASTS.includes(m[2]) ? 'at all' : 'at' }, m[2]));
		at = m.index + m[0].length;
	}
	if (at < text.length) node.append(text.slice(at));
}
