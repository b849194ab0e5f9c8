// The browser tests' harness: starts this build's parleyd, mints tokens,
// drives Debian's chromium through playwright-core (no downloaded browser),
// seeds data over WebSocket from node, saves screenshots, and cleans up
// whatever happens.
//
// A test file is a plain node script:
//
//   import { run } from './harness.mjs';
//   run('signin', async (t) => { ... });
//
// run() takes the parleyd path from argv[2] (ctest passes the build's
// $<TARGET_FILE:parleyd>) or $PARLEYD, starts the server (t.server), the
// browser (t.browser), runs the body under an overall deadline, saves a
// screenshot of every page still open as $PARLEY_WEB_SHOTS/NAME-LABEL.png,
// fails on any uncaught page error, and exits 0 only when all went well.
// Progress goes to stdout as "[12.3s] step" lines, so a failure names the
// step it happened in.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { encode, decode } from '../../web/vendor/msgpack/index.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));

let chromium, WebSocket;
try {
	({ chromium } = await import('playwright-core'));
	WebSocket = (await import('ws')).default;
} catch (e) {
	console.error(`harness: cannot load playwright-core or ws from ${here}/node_modules: ${e.message}\n` +
		'  install them with: bash scripts/install-deps.sh (it runs npm ci in tests/web)');
	process.exit(1);
}

// Generous: a loaded 2-core CI machine, an ASan parleyd.
export const TIMEOUT = Number(process.env.PARLEY_WEB_TIMEOUT_MS || 30000);
// The whole test file, browser start and cleanup included.
const TEST_DEADLINE = Number(process.env.PARLEY_WEB_DEADLINE_MS || 240000);

const t0 = Date.now();
export function log(...a) {
	console.log(`[${((Date.now() - t0) / 1000).toFixed(1)}s]`, ...a);
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// waitFor(what, fn, ms): polls fn (sync or async) until it returns a truthy
// value, which it returns; throws "timed out waiting for WHAT" (with the
// last value or error seen) after ms.
export async function waitFor(what, fn, ms = TIMEOUT, every = 100) {
	const end = Date.now() + ms;
	let last;
	for (;;) {
		try {
			last = await fn();
			if (last)
				return last;
		} catch (e) {
			last = e;
		}
		if (Date.now() > end)
			throw new Error(`timed out after ${ms} ms waiting for ${what}` +
				(last === undefined ? '' : ` (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`));
		await sleep(every);
	}
}

// ---- tokens (HS256, as PROTOCOL.md "Identity and authentication")

const b64u = (b) => Buffer.from(b).toString('base64url');

export function mintToken(secret, claims) {
	const head = b64u(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
	const body = b64u(JSON.stringify(claims));
	const sig = crypto.createHmac('sha256', secret).update(`${head}.${body}`).digest('base64url');
	return `${head}.${body}.${sig}`;
}

// ---- parleyd

export class Server {
	// tls: {cert, key} (PEM files): the port speaks https:// and wss://
	constructor(exe, { shards = 2, extra = [], tls = null } = {}) {
		this.exe = exe;
		this.tls = tls;
		if (tls) extra = ['--tls-cert', tls.cert, '--tls-key', tls.key, ...extra];
		// PARLEY_WEB_PARLEYD_ARGS: more arguments for every parleyd, such as
		// "--web-dir web" to try a client under development unbuilt.
		const more = (process.env.PARLEY_WEB_PARLEYD_ARGS || '').split(/\s+/).filter(Boolean);
		this.args = ['--shards', String(shards), ...extra, ...more];
		this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'parley-web-'));
		this.secretFile = `${this.dir}.secret`;
		this.secret = 'web-test-secret-' + crypto.randomBytes(12).toString('hex');
		fs.writeFileSync(this.secretFile, this.secret, { mode: 0o600 });
		this.port = 0;
		this.proc = null;
		this.out = []; // parleyd's stdout and stderr, the last lines
	}

	_keep(chunk) {
		for (const l of chunk.toString().split('\n'))
			if (l) this.out.push(l);
		if (this.out.length > 400)
			this.out.splice(0, this.out.length - 400);
	}

	// Starts parleyd (on this.port once it has one: a restart keeps it) and
	// waits for its "listening on ws://127.0.0.1:PORT/ws" line.
	async start() {
		assert.equal(this.proc, null, 'parleyd is already running');
		const listen = `127.0.0.1:${this.port}`;
		const proc = spawn(this.exe, ['--listen', listen, '--data', this.dir,
			'--jwt-secret-file', this.secretFile, '--no-pin', ...this.args],
		{ stdio: ['ignore', 'pipe', 'pipe'] });
		this.proc = proc;
		this.exited = new Promise((res) => proc.on('exit', (code, sig) => {
			this.proc = null;
			res({ code, sig });
		}));
		proc.stderr.on('data', (c) => this._keep(c));
		let buf = '';
		const port = await new Promise((res, rej) => {
			const timer = setTimeout(() => rej(new Error(`parleyd did not say it listens within ${TIMEOUT} ms`)), TIMEOUT);
			proc.stdout.on('data', (c) => {
				this._keep(c);
				if (buf === null) return;
				buf += c.toString();
				const m = /127\.0\.0\.1:(\d+)/.exec(buf);
				if (m) {
					buf = null;
					clearTimeout(timer);
					res(Number(m[1]));
				}
			});
			this.exited.then(({ code, sig }) => {
				clearTimeout(timer);
				rej(new Error(`parleyd exited (code ${code}, signal ${sig}) before listening`));
			});
		});
		this.port = port;
		log(`parleyd pid ${proc.pid} listening on 127.0.0.1:${port}`);
		return port;
	}

	// SIGTERM; resolves to the exit status (null when killed by a signal).
	async stop() {
		if (!this.proc) return null;
		const proc = this.proc;
		proc.kill('SIGTERM');
		const timer = setTimeout(() => proc.kill('SIGKILL'), 60000);
		const { code, sig } = await this.exited;
		clearTimeout(timer);
		log(`parleyd exited: code ${code}${sig ? ', signal ' + sig : ''}`);
		return sig ? null : code;
	}

	// stop() that must exit 0 (drained, no sanitizer report).
	async stopOk() {
		const code = await this.stop();
		assert.equal(code, 0, `parleyd did not exit 0 on SIGTERM:\n${this.tail()}`);
	}

	async restart() {
		await this.stopOk();
		return this.start();
	}

	kill() {
		if (this.proc) this.proc.kill('SIGKILL');
	}

	tail(n = 40) {
		return this.out.slice(-n).join('\n');
	}

	cleanup() {
		this.kill();
		fs.rmSync(this.dir, { recursive: true, force: true });
		fs.rmSync(this.secretFile, { force: true });
	}

	get origin() {
		return `${this.tls ? 'https' : 'http'}://127.0.0.1:${this.port}`;
	}

	// token(user, {ws, exp (unix s), ttl (s), secret, name})
	token(user, { ws = 'acme', ttl = 3600, exp, secret = this.secret, name } = {}) {
		const claims = { sub: user, ws, exp: exp ?? Math.floor(Date.now() / 1000) + ttl };
		if (name) claims.name = name;
		return mintToken(secret, claims);
	}

	// The link `parleyd token --url` prints, asked of parleyd itself.
	async tokenUrl(user, ws = 'acme') {
		const { execFile } = await import('node:child_process');
		return new Promise((res, rej) => execFile(this.exe, ['token', '--user', user, '--workspace', ws,
			'--jwt-secret-file', this.secretFile, '--url', '--listen', `127.0.0.1:${this.port}`],
		{ timeout: TIMEOUT }, (err, out, errOut) => err
			? rej(new Error(`parleyd token --url failed: ${err.message} ${errOut}`))
			: res(out.trim())));
	}

	// The same link, minted here.
	url(token) {
		return `${this.origin}/#token=${token}`;
	}
}

// ---- a protocol client in node (seeding, a third party)

export class Client {
	constructor(ws) {
		this.ws = ws;
		this.rid = 0;
		this.pending = new Map();
		this.frames = []; // every non-res frame, in order
		this.waiters = [];
		ws.on('message', (data) => {
			const m = decode(data);
			if (m.t === 'res' && this.pending.has(m.rid)) {
				const p = this.pending.get(m.rid);
				this.pending.delete(m.rid);
				if (m.ok) p.res(m);
				else p.rej(Object.assign(new Error(`${p.op}: ${m.code} ${m.msg}`), { code: m.code, retry_ms: m.retry_ms }));
				return;
			}
			this.frames.push(m);
			for (const w of this.waiters.slice())
				if (w.pred(m)) {
					this.waiters.splice(this.waiters.indexOf(w), 1);
					w.res(m);
				}
		});
		this.closed = new Promise((res) => ws.on('close', (code) => {
			for (const p of this.pending.values())
				p.rej(new Error(`${p.op}: connection closed (${code})`));
			this.pending.clear();
			res(code);
		}));
	}

	// Client.connect(server, user, {ws, token}): connected and past hello
	// (the hello result is client.hello).
	static async connect(server, user, { ws = 'acme', token } = {}) {
		// (TLS: the tests' self-signed certificate is not checked)
		const sock = new WebSocket(`${server.tls ? 'wss' : 'ws'}://127.0.0.1:${server.port}/ws`,
			'parley.v1', server.tls ? { rejectUnauthorized: false } : {});
		await new Promise((res, rej) => {
			sock.once('open', res);
			sock.once('error', rej);
		});
		sock.on('error', () => {});
		const c = new Client(sock);
		c.user = user;
		c.hello = await c.req('hello', { token: token ?? server.token(user, { ws }) });
		return c;
	}

	req(op, args = {}) {
		const rid = ++this.rid;
		return new Promise((res, rej) => {
			const timer = setTimeout(() => {
				this.pending.delete(rid);
				rej(new Error(`${op}: no answer within ${TIMEOUT} ms`));
			}, TIMEOUT);
			this.pending.set(rid, {
				op,
				res: (m) => { clearTimeout(timer); res(m); },
				rej: (e) => { clearTimeout(timer); rej(e); },
			});
			this.ws.send(encode({ op, rid, ...args }));
		});
	}

	// The next frame (already seen ones included) for which pred holds.
	waitFrame(pred, what = 'a frame', ms = TIMEOUT) {
		const seen = this.frames.find(pred);
		if (seen) return Promise.resolve(seen);
		return new Promise((res, rej) => {
			const w = { pred, res };
			this.waiters.push(w);
			setTimeout(() => {
				const i = this.waiters.indexOf(w);
				if (i >= 0) {
					this.waiters.splice(i, 1);
					rej(new Error(`${this.user}: no ${what} within ${ms} ms`));
				}
			}, ms);
		});
	}

	// send(ch, body, extra): a send; RATE_LIMITED is waited out and the send
	// retried with the same cmid.
	async send(ch, body, extra = {}) {
		const args = { ch, body, cmid: crypto.randomUUID(), ...extra };
		for (;;) {
			try {
				return await this.req('send', args);
			} catch (e) {
				if (e.code !== 'RATE_LIMITED') throw e;
				await sleep(e.retry_ms || 100);
			}
		}
	}

	close() {
		this.ws.close();
		return this.closed;
	}
}

// ---- the browser and its pages

function chromiumPath() {
	if (process.env.PARLEY_CHROMIUM) return process.env.PARLEY_CHROMIUM;
	// Debian's /usr/bin/chromium is a shell wrapper around this binary.
	for (const p of ['/usr/lib/chromium/chromium', '/usr/bin/chromium'])
		if (fs.existsSync(p)) return p;
	throw new Error('no chromium found (apt-get install chromium, or set PARLEY_CHROMIUM)');
}

export const NARROW = { width: 390, height: 844 };
export const WIDE = { width: 1280, height: 800 };

// One user in the browser: a context (its own storage) and its pages.
class User {
	constructor(t, name, ctx, token) {
		this.t = t;
		this.name = name;
		this.ctx = ctx;
		this.token = token;
		this.pages = [];
	}

	// Opens another tab of this user (same context) on the sign-in link;
	// before(page) runs before it navigates (to attach listeners).
	async tab({ url, before } = {}) {
		const page = await this.ctx.newPage();
		this.t._watch(page, `${this.name}#${this.pages.length + 1}`);
		this.pages.push(page);
		if (before) await before(page);
		await page.goto(url ?? this.t.server.url(this.token));
		return page;
	}

	get page() {
		return this.pages[0];
	}
}

class Test {
	constructor(name, exe) {
		this.name = name;
		this.exe = exe;
		this.server = null;
		this.browser = null;
		this.users = [];
		this.servers = [];
		this.pageErrors = [];
		this.consoleErrors = [];
		this.shotDir = process.env.PARLEY_WEB_SHOTS ||
			path.join(path.dirname(path.resolve(exe)), 'web-shots');
		this.shots = new Set();
		this.stepName = '(start)';
	}

	async step(what, fn) {
		this.stepName = what;
		log('step:', what);
		return fn ? fn() : undefined;
	}

	// newServer(opts): another parleyd (t.server is the first).
	async newServer(opts) {
		const s = new Server(this.exe, opts);
		this.servers.push(s);
		await s.start();
		return s;
	}

	_watch(page, label) {
		page.setDefaultTimeout(TIMEOUT);
		page._label = label;
		page.on('pageerror', (e) => {
			log(`PAGE ERROR in ${label}:`, e.stack || e.message);
			this.pageErrors.push(`${label}: ${e.message}`);
		});
		page.on('console', (m) => {
			if (m.type() === 'error') {
				const at = m.location()?.url ? ` (${m.location().url})` : '';
				log(`console error in ${label}: ${m.text()}${at}`);
				this.consoleErrors.push(`${label}: ${m.text()}${at}`);
			}
		});
	}

	// user(name, {viewport, token, url, open}): a new browser context for
	// name, with one tab open on its sign-in link (unless open is false).
	async user(name, { viewport = WIDE, token, url, before, open = true, server = this.server } = {}) {
		if (!this.browser) await this._launch();
		// ignoreHTTPSErrors: a TLS server's certificate is self-signed
		const ctx = await this.browser.newContext({ viewport, reducedMotion: "reduce",
			ignoreHTTPSErrors: !!server.tls });
		ctx.setDefaultTimeout(TIMEOUT);
		const u = new User(this, name, ctx, token ?? server.token(name));
		this.users.push(u);
		if (open) await u.tab({ url, before });
		return u;
	}

	async _launch() {
		const exe = chromiumPath();
		this.browser = await chromium.launch({
			executablePath: exe,
			headless: true,
			args: ['--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu'],
			timeout: 60000,
		});
		log(`chromium ${this.browser.version()} (${exe})`);
	}

	// shot(page, label): $PARLEY_WEB_SHOTS/NAME-LABEL.png
	async shot(page, label = page._label) {
		const safe = String(label).replace(/[^A-Za-z0-9._-]+/g, '_');
		const file = path.join(this.shotDir, `${this.name}-${safe}.png`);
		fs.mkdirSync(this.shotDir, { recursive: true });
		await page.screenshot({ path: file, timeout: 15000 });
		this.shots.add(file);
		return file;
	}

	async _finalShots() {
		for (const u of this.users)
			for (const p of u.pages) {
				if (p.isClosed()) continue;
				try {
					const f = await this.shot(p);
					log('screenshot', f);
				} catch (e) {
					log(`screenshot of ${p._label} failed: ${e.message}`);
				}
			}
	}

	async _cleanup() {
		if (this.browser) {
			const b = this.browser;
			this.browser = null;
			await Promise.race([b.close().catch(() => {}), sleep(15000)]);
		}
		for (const s of this.servers) s.cleanup();
	}
}

// run(name, body): the test file's entry point (see the top of this file).
// opts.server: Server options for t.server (shards, extra args); false for
// no server.
export function run(name, body, opts = {}) {
	const exe = process.argv[2] || process.env.PARLEYD;
	if (!exe) {
		console.error(`usage: node ${process.argv[1]} PATH/TO/parleyd (or set PARLEYD)`);
		process.exit(2);
	}
	const t = new Test(name, exe);
	let finished = false;
	const fail = async (why) => {
		console.error(`\nFAIL web_${name} in step "${t.stepName}":\n${why}`);
		for (const s of t.servers)
			if (s.out.length) console.error(`--- parleyd (port ${s.port}) output, last lines:\n${s.tail()}`);
		if (t.consoleErrors.length)
			console.error(`--- browser console errors:\n  ${t.consoleErrors.join('\n  ')}`);
	};
	const timer = setTimeout(async () => {
		if (finished) return;
		finished = true;
		await fail(`the test did not finish within ${TEST_DEADLINE} ms`);
		await Promise.race([t._finalShots(), sleep(20000)]);
		await Promise.race([t._cleanup(), sleep(20000)]);
		for (const s of t.servers) s.kill();
		process.exit(1);
	}, TEST_DEADLINE);
	for (const sig of ['SIGTERM', 'SIGINT'])
		process.on(sig, () => {
			for (const s of t.servers) s.kill();
			process.exit(1);
		});
	process.on('exit', () => {
		for (const s of t.servers) s.kill();
	});
	(async () => {
		let ok = true;
		try {
			if (opts.server !== false) {
				await t.step('start parleyd');
				t.server = await t.newServer(opts.server);
			}
			await body(t);
			t.stepName = '(end)';
			if (t.pageErrors.length)
				throw new Error(`uncaught errors in the page:\n  ${t.pageErrors.join('\n  ')}`);
		} catch (e) {
			ok = false;
			if (!finished) await fail(e.stack || String(e));
		}
		if (finished) return;
		finished = true;
		await t._finalShots();
		// The browser closes before the servers stop; each server still
		// running must then exit 0 on SIGTERM (under ASan: no report).
		if (t.browser) {
			await Promise.race([t.browser.close().catch(() => {}), sleep(15000)]);
			t.browser = null;
		}
		if (ok) {
			try {
				t.stepName = 'stop parleyd';
				for (const s of t.servers) await s.stopOk();
			} catch (e) {
				ok = false;
				await fail(e.stack || String(e));
			}
		}
		await t._cleanup();
		clearTimeout(timer);
		if (ok) log(`PASS web_${name} (${t.consoleErrors.length} console errors)`);
		process.exit(ok ? 0 : 1);
	})();
}

// ---- the client's DOM contract (docs/web.md, "Stable hooks")

// signedIn(page, user): #me shows the user and #conn is open.
// (Attached, not necessarily visible: a narrow layout may fold them away.)
export async function signedIn(page, user) {
	await page.locator(`#me[data-user="${user}"]`).waitFor({ state: 'attached' });
	await page.locator('#conn[data-state="open"]').waitFor({ state: 'attached' });
}

export function connState(page) {
	return page.locator('#conn').getAttribute('data-state');
}

export async function waitConn(page, state, ms = TIMEOUT) {
	await page.locator(`#conn[data-state="${state}"]`).waitFor({ state: 'attached', timeout: ms });
}

export function sidebarEntry(page, ch) {
	return page.locator(`#sidebar [data-ch="${ch}"]`);
}

// badge(page, ch, kind): the text of the sidebar entry's .unread (or
// .mentions) badge, trimmed; null when there is none. Does not wait.
export function badge(page, ch, kind = 'unread') {
	return page.evaluate(([ch, kind]) => {
		const b = document.querySelector(`#sidebar [data-ch="${ch}"] .${kind}`);
		return b ? b.textContent.trim() : null;
	}, [ch, kind]);
}

// openChannel(page, ch): clicks its sidebar entry; waits until it is the
// open one.
export async function openChannel(page, ch) {
	await sidebarEntry(page, ch).click();
	await page.locator(`#sidebar [data-ch="${ch}"][aria-current="true"]`).waitFor();
}

// send(page, text): types into #composer and presses Enter.
export async function send(page, text, composer = '#composer') {
	const c = page.locator(composer);
	await c.fill(text);
	await c.press('Enter');
}

// messages(page, root): [{seq, body, pending, cmid, cls}] of the .msg
// elements under root (default #messages), in document order.
export function messages(page, root = '#messages') {
	return page.evaluate((root) => [...document.querySelectorAll(`${root} .msg`)].map((el) => ({
		seq: el.hasAttribute('data-seq') ? Number(el.getAttribute('data-seq')) : null,
		body: el.querySelector('.body')?.textContent ?? '',
		pending: el.classList.contains('pending'),
		deleted: el.classList.contains('deleted'),
		cmid: el.getAttribute('data-cmid'),
	})), root);
}

// shownIn(page, sel, container): whether the element sel is on screen
// inside the container (scrolled into its visible part), not just in the
// DOM. Does not wait.
export function shownIn(page, sel, container = '#messages') {
	return page.evaluate(([sel, container]) => {
		const e = document.querySelector(sel), c = document.querySelector(container);
		if (!e || !c) return false;
		const a = e.getBoundingClientRect(), b = c.getBoundingClientRect();
		const top = Math.max(a.top, b.top, 0), bottom = Math.min(a.bottom, b.bottom, innerHeight);
		return a.height > 0 && bottom - top >= Math.min(a.height, 10);
	}, [sel, container]);
}

// msg(page, seq): the locator of the message with data-seq=seq.
export function msg(page, seq, root = '#messages') {
	return page.locator(`${root} .msg[data-seq="${seq}"]`);
}

// Checks that the rendered seqs are strictly ascending (no duplicate) and,
// with contiguous, that they have no gap.
export function assertOrdered(list, what, { contiguous = false } = {}) {
	const seqs = list.map((m) => m.seq);
	for (let i = 1; i < seqs.length; i++) {
		assert.ok(seqs[i] > seqs[i - 1], `${what}: data-seq not strictly ascending at ${i}: ${seqs.slice(Math.max(0, i - 3), i + 3)}`);
		if (contiguous)
			assert.equal(seqs[i], seqs[i - 1] + 1, `${what}: gap in data-seq after ${seqs[i - 1]}`);
	}
}

// The workspace most tests use: users alice and bob, and a public channel
// "general" that alice created and bob joined. Returns {ch, alice, bob}
// with node protocol clients (still connected) for both.
export async function seedWorkspace(server, { name = 'general' } = {}) {
	const alice = await Client.connect(server, 'alice');
	const bob = await Client.connect(server, 'bob');
	const r = await alice.req('ch.create', { name, kind: 'public' });
	await bob.req('ch.join', { ch: r.ch.id });
	return { ch: r.ch.id, alice, bob };
}

// twoUsers(t, opts): seedWorkspace, then alice and bob each in a browser
// context of their own, signed in, with the channel open (r.ch; r.A and
// r.B are the Users). opts.viewport; opts.channels: more public channels
// both join (names), ids in r.more. The node clients that seeded are
// closed (they would keep alice and bob online).
export async function twoUsers(t, { viewport = WIDE, channels = [] } = {}) {
	const r = await t.step('seed: alice creates a public channel, bob joins', () => seedWorkspace(t.server));
	r.more = {};
	for (const name of channels) {
		const c = await r.alice.req('ch.create', { name, kind: 'public' });
		await r.bob.req('ch.join', { ch: c.ch.id });
		r.more[name] = c.ch.id;
	}
	await r.alice.close();
	await r.bob.close();
	await t.step('alice and bob open their links', async () => {
		r.A = await t.user('alice', { viewport });
		r.B = await t.user('bob', { viewport });
		await signedIn(r.A.page, 'alice');
		await signedIn(r.B.page, 'bob');
	});
	await t.step('both open the channel', async () => {
		await openChannel(r.A.page, r.ch);
		await openChannel(r.B.page, r.ch);
	});
	return r;
}

// withBody(page, text, root): the .msg elements whose .body is exactly text.
export function withBody(page, text, root = '#messages') {
	return page.locator(`${root} .msg`).filter({
		has: page.locator('.body', { hasText: new RegExp(`^\\s*${text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\s*$`) }),
	});
}

// countWithBody(page, text, root): how many rendered messages say text.
export function countWithBody(page, text, root = '#messages') {
	return page.evaluate(([root, text]) => [...document.querySelectorAll(`${root} .msg .body`)]
		.filter((b) => b.textContent.trim() === text).length, [root, text]);
}

export { assert, encode, decode };

// ---- people and roles (issue 13)

// personToken(server, user, {name, role, ws, ttl}): a token whose optional
// `name` claim is the display name and `role` ("admin") the workspace role.
export function personToken(server, user, { name, role, ws = 'acme', ttl = 3600 } = {}) {
	const claims = { sub: user, ws, exp: Math.floor(Date.now() / 1000) + ttl };
	if (name) claims.name = name;
	if (role) claims.role = role;
	return mintToken(server.secret, claims);
}

// ticks(page, seq): the data-state of the receipt ticks on one's own
// message seq in #messages ("sent", "delivered", "read"), or null.
export function ticksOf(page, seq, root = '#messages') {
	return page.evaluate(([root, seq]) => document.querySelector(`${root} .ticks[data-seq="${seq}"]`)?.getAttribute('data-state') ?? null, [root, seq]);
}

// ---- files (issue 15)

// uploadFile(server, user, name, bytes, {ws, token}): POST /api/v1/files
// as user, as a script or bot would; resolves to the 201's JSON
// ({id, name, size, type, sha256}), rejects with the status and body.
export async function uploadFile(server, user, name, bytes, { ws = 'acme', token } = {}) {
	const r = await fetch(`${server.origin}/api/v1/files?name=${encodeURIComponent(name)}`, {
		method: 'POST',
		headers: { Authorization: `Bearer ${token ?? server.token(user, { ws })}` },
		body: bytes,
	});
	const text = await r.text();
	if (r.status !== 201)
		throw Object.assign(new Error(`upload of ${name}: ${r.status} ${text}`), { status: r.status });
	return JSON.parse(text);
}
