// Signing in: the link `parleyd token --url` prints opens the client signed
// in, without the token ever leaving the page in a URL; without a token the
// page asks for one; refused tokens say why.
import { run, assert, signedIn } from './harness.mjs';

run('signin', async (t) => {
	const s = t.server;
	const urls = [];
	const watch = (page) => {
		page.on('request', (r) => urls.push(r.url()));
		page.on('websocket', (ws) => urls.push(ws.url()));
	};

	const link = await t.step('parleyd token --url prints her link', async () => {
		const l = await s.tokenUrl('alice');
		assert.match(l, new RegExp(`^http://127\\.0\\.0\\.1:${s.port}/#token=[\\w-]+\\.[\\w-]+\\.[\\w-]+$`), `odd link: ${l}`);
		return l;
	});
	const alice = await t.step('alice opens that link', () =>
		t.user('alice', { before: watch, url: link, token: link.split('#token=')[1] }));
	await t.step('she is signed in: #me and #conn open', () => signedIn(alice.page, 'alice'));
	assert.match(await alice.page.locator('#me').innerText(), /alice/, '#me does not show the user');

	await t.step('a reload keeps her signed in (the tab keeps the token)', async () => {
		await alice.page.reload();
		await signedIn(alice.page, 'alice');
	});

	await t.step('the token is in no URL the page requested', () => {
		assert.ok(urls.length > 0, 'no request seen');
		assert.ok(urls.some((u) => u.startsWith('ws://')), `no WebSocket opened: ${urls}`);
		const sig = alice.token.split('.')[2];
		const leaks = urls.filter((u) => u.includes(alice.token) || u.includes(sig));
		assert.deepEqual(leaks, [], 'the token appears in request URLs');
	});

	const anon = await t.step('a page without a token shows form#signin', async () => {
		const u = await t.user('anonymous', { url: `${s.origin}/` });
		await u.page.locator('form#signin').waitFor();
		assert.equal(await u.page.locator('#me[data-user]').count(), 0, 'signed in without a token');
		return u;
	});

	await t.step('pasting a token into the form signs in', async () => {
		const page = anon.page;
		await page.locator('form#signin textarea[name=token]').fill(s.token('carol'));
		await page.locator('form#signin [type=submit], form#signin button:not([type=button])').first().click();
		await signedIn(page, 'carol');
	});

	await t.step('an expired token shows #signin-error saying so', async () => {
		const u = await t.user('expired', { token: s.token('dave', { exp: Math.floor(Date.now() / 1000) - 3600 }) });
		const err = u.page.locator('#signin-error');
		await err.filter({ hasText: /\S/ }).waitFor();
		await u.page.locator('form#signin').waitFor();
		assert.match(await err.innerText(), /expired/i, '#signin-error does not say the token expired');
	});

	await t.step('a token signed with another secret shows #signin-error', async () => {
		const u = await t.user('wrongsecret', { token: s.token('erin', { secret: 'not-the-server-secret' }) });
		const err = u.page.locator('#signin-error');
		await err.filter({ hasText: /\S/ }).waitFor();
		await u.page.locator('form#signin').waitFor();
		assert.match(await err.innerText(), /signature|invalid|bad|refused|rejected|not valid/i,
			'#signin-error gives no reason');
		assert.equal(await u.page.locator('#me[data-user]').count(), 0, 'signed in with a bad token');
	});
});
