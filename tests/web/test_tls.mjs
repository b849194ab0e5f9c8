// The web client over TLS (issue 16): parleyd runs with a self-signed
// certificate; alice and bob load https://127.0.0.1:PORT/, sign in (the
// client opens wss://, as it must on an https: page), and a message one
// sends reaches the other.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { run, assert, seedWorkspace, signedIn, openChannel, send, withBody, TIMEOUT } from './harness.mjs';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'parley-web-tls-'));
const tls = { cert: path.join(dir, 'cert.pem'), key: path.join(dir, 'key.pem') };
execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1',
	'-nodes', '-keyout', tls.key, '-out', tls.cert, '-days', '2', '-subj', '/CN=127.0.0.1',
	'-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'ignore' });
process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }));

run('tls', async (t) => {
	assert.ok(t.server.origin.startsWith('https://'), t.server.origin);
	const r = await t.step('seed over wss: alice creates a channel, bob joins', () => seedWorkspace(t.server));
	await r.alice.close();
	await r.bob.close();
	const sockets = [];
	const A = await t.step('alice opens https://…/#token=…', () => t.user('alice', {
		before: (page) => page.on('websocket', (ws) => sockets.push(ws.url())),
	}));
	const B = await t.step('bob too', () => t.user('bob'));
	await t.step('both are signed in over TLS', async () => {
		await signedIn(A.page, 'alice');
		await signedIn(B.page, 'bob');
		assert.equal(await A.page.evaluate(() => location.protocol), 'https:');
		assert.ok(sockets.length > 0 && sockets.every((u) => u.startsWith('wss://')),
			`the client's WebSockets: ${JSON.stringify(sockets)}`);
		await openChannel(A.page, r.ch);
		await openChannel(B.page, r.ch);
	});
	await t.step('alice sends, bob sees it', async () => {
		await send(A.page, 'hello over wss');
		await withBody(B.page, 'hello over wss').waitFor({ timeout: TIMEOUT });
		await withBody(A.page, 'hello over wss').waitFor({ timeout: TIMEOUT });
	});
	await t.step('bob answers, alice sees it', async () => {
		await send(B.page, 'and back');
		await withBody(A.page, 'and back').waitFor({ timeout: TIMEOUT });
	});
	await t.shot(B.page, 'bob');
}, { server: { tls } });
