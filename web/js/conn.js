// The connection to parleyd: one WebSocket at a time, msgpack frames,
// requests matched to answers by rid, heartbeats, and reconnection.
//
// Events (EventTarget):
//   state    detail: 'connecting' | 'open' | 'offline'
//   hello    detail: the hello result (after every successful hello)
//   frame    detail: every server-initiated frame (ev, member, read,
//            typing, presence, gap, err)
//   refused  detail: {reason}: the token was refused; no reconnect
//   notice   detail: text for the user (4029, 1008, ...)
//
// The caller supplies resume(): the map channel -> last seq seen, read
// when each hello is sent.

import { encode, decode } from '../vendor/msgpack/index.mjs';
import { backoff } from './util.js';

const REQ_TIMEOUT_MS = 30000;

export class ReqError extends Error {
	constructor(code, msg, extra = {}) {
		super(msg || code);
		this.code = code;
		Object.assign(this, extra);
	}
}

export class Conn extends EventTarget {
	// active(): whether the person is there (heartbeats are sent only
	// then, so an idle tab shows as away)
	constructor({ url, token, resume, active = () => true }) {
		super();
		this.active = active;
		this.url = url;
		this.token = token;
		this.resume = resume;
		this.ws = null;
		this.state = 'offline';
		this.rid = 0;
		this.pending = new Map(); // rid -> {resolve, reject, op}
		this.attempt = 0;
		this.timer = null;
		this.hbTimer = null;
		this.stopped = false;
		this.hello = null;
	}

	setState(s) {
		if (this.state === s) return;
		this.state = s;
		this.emit('state', s);
	}

	emit(type, detail) {
		this.dispatchEvent(new CustomEvent(type, { detail }));
	}

	start() {
		this.stopped = false;
		this.open();
	}

	stop() {
		this.stopped = true;
		clearTimeout(this.timer);
		clearInterval(this.hbTimer);
		if (this.ws) this.ws.close(1000);
		this.ws = null;
		this.setState('offline');
	}

	open() {
		clearTimeout(this.timer);
		if (this.stopped) return;
		this.setState('connecting');
		let ws;
		try {
			ws = new WebSocket(this.url, 'parley.v1');
		} catch (e) {
			this.retry();
			return;
		}
		ws.binaryType = 'arraybuffer';
		this.ws = ws;
		this.goaway = null;
		ws.onopen = () => this.sayHello(ws);
		ws.onmessage = (e) => this.onMessage(ws, e.data);
		ws.onclose = (e) => this.onClose(ws, e.code);
		ws.onerror = () => {}; // onclose follows
	}

	async sayHello(ws) {
		try {
			const res = await this.request('hello', { token: this.token, resume: this.resume() }, ws);
			if (ws !== this.ws) return;
			this.hello = res;
			this.attempt = 0;
			clearInterval(this.hbTimer);
			this.hbTimer = setInterval(() => {
				if (this.active()) this.fire('hb');
			}, res.hb_ms || 5000);
			this.setState('open');
			this.emit('hello', res);
		} catch (e) {
			if (e.code === 'UNAUTHORIZED')
				this.refuse(`The server refused this token (${e.message}). Ask for a new link.`);
			// anything else: the close that follows reconnects
		}
	}

	refuse(reason) {
		this.stopped = true;
		clearInterval(this.hbTimer);
		this.setState('offline');
		this.emit('refused', { reason });
	}

	onMessage(ws, data) {
		if (ws !== this.ws || !(data instanceof ArrayBuffer)) return;
		let f;
		try {
			f = decode(new Uint8Array(data));
		} catch {
			return;
		}
		if (!f || typeof f !== 'object') return;
		if (f.t === 'res') {
			const p = this.pending.get(f.rid);
			if (!p) return;
			this.pending.delete(f.rid);
			if (f.ok) p.resolve(f);
			else p.reject(new ReqError(f.code, f.msg, { retry_ms: f.retry_ms, ch: f.ch }));
			return;
		}
		if (f.t === 'goaway') {
			this.goaway = f.retry_ms || 2000;
			return;
		}
		this.emit('frame', f);
	}

	onClose(ws, code) {
		if (ws !== this.ws) return;
		this.ws = null;
		clearInterval(this.hbTimer);
		for (const [rid, p] of this.pending) {
			p.reject(new ReqError('DISCONNECTED', 'connection lost'));
			this.pending.delete(rid);
		}
		if (this.stopped) return;
		this.setState('offline');
		if (code === 4001) {
			this.refuse('The server refused this token (expired, or signed with another secret).');
			return;
		}
		if (code === 4029) {
			this.emit('notice', 'You have too many devices connected (16). Close one; retrying in a minute.');
			this.timer = setTimeout(() => this.open(), 60000 + Math.random() * 30000);
			return;
		}
		if (code === 1008 || code === 1009)
			this.emit('notice', `The server closed the connection (${code}); reconnecting.`);
		this.retry();
	}

	retry() {
		let ms;
		if (this.goaway) {
			// the server is draining: come back after retry_ms, spread out
			ms = this.goaway + Math.random() * this.goaway;
			this.goaway = null;
		} else {
			ms = backoff(this.attempt++);
		}
		this.retryAt = Date.now() + ms;
		this.timer = setTimeout(() => this.open(), ms);
		this.emit('state', 'offline');
	}

	// Reconnect now (the user asked, or the browser came back online).
	kick() {
		if (!this.stopped && !this.ws) this.open();
	}

	request(op, args = {}, ws = this.ws) {
		return new Promise((resolve, reject) => {
			if (!ws || ws.readyState !== WebSocket.OPEN || (op !== 'hello' && this.state !== 'open')) {
				reject(new ReqError('DISCONNECTED', 'not connected'));
				return;
			}
			const rid = ++this.rid;
			// an answer that never comes (it should not happen) must not
			// stall the caller: after REQ_TIMEOUT_MS it fails like a lost
			// connection (a send is then retried with its cmid)
			const timer = setTimeout(() => {
				if (this.pending.delete(rid)) reject(new ReqError('DISCONNECTED', `no answer to ${op}`));
			}, REQ_TIMEOUT_MS);
			this.pending.set(rid, {
				op,
				resolve: (v) => { clearTimeout(timer); resolve(v); },
				reject: (e) => { clearTimeout(timer); reject(e); },
			});
			ws.send(encode({ op, rid, ...args }));
		});
	}

	// A request without rid: no answer on success.
	fire(op, args = {}) {
		if (this.ws && this.ws.readyState === WebSocket.OPEN && this.state === 'open')
			this.ws.send(encode({ op, ...args }));
	}
}
