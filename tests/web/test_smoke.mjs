// The harness itself: chromium starts, reaches this build's parleyd
// (/healthz), and parleyd exits 0 on SIGTERM and comes back on the same
// port and data directory.
import { run, assert } from './harness.mjs';

run('smoke', async (t) => {
	const u = await t.user('alice', { open: false });
	const page = await u.tab({ url: `${t.server.origin}/healthz` });
	await t.step('the browser reads /healthz', async () => {
		const text = (await page.locator('body').innerText()).trim();
		assert.equal(text, 'ok', `/healthz says ${JSON.stringify(text)}`);
	});
	await t.step('restart parleyd on the same port', async () => {
		const port = t.server.port;
		await t.server.restart();
		assert.equal(t.server.port, port);
		const r = await page.reload();
		assert.equal(r.status(), 200);
		assert.equal((await page.locator('body').innerText()).trim(), 'ok');
	});
});
