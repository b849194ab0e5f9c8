// Does the web client stay fast deep into a long channel? Seeds a channel
// with N messages (default 100,000), opens it in Debian's chromium, scrolls
// back PAGES pages (default 60, i.e. 3,000 messages) and reports, per
// page: the time from the scroll to the older page on screen, the number
// of rendered messages and of DOM elements, and the JS heap. Loopback only;
// bounded in count and time.
//
//   node perf/web-scroll.mjs build/parleyd [N] [PAGES]
//
// Uses tests/web/node_modules (scripts/install-deps.sh installs it).
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { createHmac, randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(join(root, 'tests/web/package.json'));
const { chromium } = require('playwright-core');
const WebSocket = require('ws');
const { encode, decode } = await import(join(root, 'web/vendor/msgpack/index.mjs'));

const exe = process.argv[2] || join(root, 'build/parleyd');
const N = +(process.argv[3] || 100000);
const PAGES = +(process.argv[4] || 60);
const deadline = setTimeout(() => { console.error('web-scroll: took too long'); process.exit(2); }, 15 * 60 * 1000);

const dir = mkdtempSync(join(tmpdir(), 'parley-webscroll-'));
const secret = randomBytes(32).toString('hex');
writeFileSync(join(dir, 'secret'), secret);
const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
const token = (sub) => {
	const h = b64({ alg: 'HS256', typ: 'JWT' }), p = b64({ sub, ws: 'perf', exp: Math.floor(Date.now() / 1000) + 3600 });
	return `${h}.${p}.${createHmac('sha256', secret).update(`${h}.${p}`).digest('base64url')}`;
};

const srv = spawn(exe, ['--listen', '127.0.0.1:0', '--data', join(dir, 'data'), '--jwt-secret-file', join(dir, 'secret'),
	'--send-rate', '1000000', '--send-burst', '1000000'], { stdio: ['ignore', 'pipe', 'inherit'] });
const port = await new Promise((ok, no) => {
	srv.stdout.on('data', (d) => { const m = /127\.0\.0\.1:(\d+)/.exec(String(d)); if (m) ok(+m[1]); });
	srv.on('exit', (c) => no(new Error(`parleyd exited ${c}`)));
});

function client(user) {
	return new Promise((ok) => {
		const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`, 'parley.v1');
		let rid = 0;
		const pend = new Map();
		const c = {
			req: (op, a = {}) => new Promise((res, rej) => { const r = ++rid; pend.set(r, { res, rej }); ws.send(encode({ op, rid: r, ...a })); }),
			close: () => ws.close(),
		};
		ws.on('message', (d) => { const f = decode(d); if (f.t === 'res') { const p = pend.get(f.rid); pend.delete(f.rid); f.ok ? p.res(f) : p.rej(f); } });
		ws.on('open', async () => { await c.req('hello', { token: token(user) }); ok(c); });
	});
}

const seeder = await client('seeder');
const ch = (await seeder.req('ch.create', { name: 'long', kind: 'public' })).ch.id;
const t0 = Date.now();
const WINDOW = 256; // sends in flight: the server groups them into few WAL syncs
let next = 1;
await Promise.all(Array.from({ length: WINDOW }, async () => {
	while (next <= N) {
		const i = next++;
		await seeder.req('send', { ch, body: `message ${i}: the quick brown fox jumps over the lazy dog`, cmid: `s${i}` });
	}
}));
console.log(`seeded ${N} messages in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
seeder.close();

const browser = await chromium.launch({ executablePath: '/usr/lib/chromium/chromium', args: ['--no-sandbox', '--enable-precise-memory-info'] });
const page = await (await browser.newContext({ viewport: { width: 1280, height: 800 } })).newPage();
await page.goto(`http://127.0.0.1:${port}/#token=${token('reader')}`);
await page.waitForSelector('#conn[data-state=open]');
await page.click('#btn-browse');
await page.click(`#dlg-browse [data-join="${ch}"]`);
await page.waitForSelector(`#messages .msg[data-seq="${N}"]`);

const rows = [];
for (let p = 1; p <= PAGES; p++) {
	const r = await page.evaluate(async () => {
		const sc = document.querySelector('#messages');
		const low = () => +sc.querySelector('.msg[data-seq]').dataset.seq;
		const before = low();
		const t = performance.now();
		sc.scrollTop = 0;
		while (low() >= before) {
			await new Promise((ok) => requestAnimationFrame(ok));
			if (performance.now() - t > 30000) throw new Error('no older page');
		}
		// one more frame: the page is laid out and painted
		await new Promise((ok) => requestAnimationFrame(ok));
		return {
			ms: performance.now() - t,
			lowest: low(),
			rendered: sc.querySelectorAll('.msg').length,
			dom: document.getElementsByTagName('*').length,
			heapMB: performance.memory ? performance.memory.usedJSHeapSize / 1048576 : 0,
		};
	});
	rows.push(r);
}
const med = (a) => { const s = [...a].sort((x, y) => x - y); return s[Math.floor(s.length / 2)]; };
const part = (rs, what) => `median ${med(rs.map((r) => r.ms)).toFixed(1)} ms (min ${Math.min(...rs.map((r) => r.ms)).toFixed(1)}, max ${Math.max(...rs.map((r) => r.ms)).toFixed(1)}) ${what}`;
const first = rows.slice(0, 10), last = rows.slice(-10);
console.log(`scroll-back, ${PAGES} pages of 50 from seq ${N}:`);
console.log(`  first 10 pages: ${part(first, `to seq ${first.at(-1).lowest}`)}`);
console.log(`  last 10 pages:  ${part(last, `to seq ${last.at(-1).lowest}`)}`);
console.log(`  rendered messages: max ${Math.max(...rows.map((r) => r.rendered))}; DOM elements: first ${rows[0].dom}, last ${rows.at(-1).dom}, max ${Math.max(...rows.map((r) => r.dom))}`);
console.log(`  JS heap: first ${rows[0].heapMB.toFixed(1)} MB, last ${rows.at(-1).heapMB.toFixed(1)} MB`);
await browser.close();
srv.kill('SIGTERM');
await new Promise((ok) => srv.on('exit', ok));
rmSync(dir, { recursive: true, force: true });
clearTimeout(deadline);
