// People in the browser (PROTOCOL.md "People, roles and moderation":
// directory; "Presence": since = last seen): display names from the
// tokens' `name` claims instead of ids (#me, message authors, typing,
// DM names in the sidebar and the header); the new-DM dialog searches
// people by a prefix of their id or of any word of their name, picks one
// as a chip and opens the DM; a 1:1 DM's header says "Online", then "Last
// seen ..." once the other closes the page, also after a reload and a
// parleyd restart.
import {
	run, assert, waitFor, signedIn, openChannel, send, sidebarEntry, withBody,
	Client, personToken, TIMEOUT, waitConn,
} from './harness.mjs';

const openCh = (page) => page.evaluate(() =>
	document.querySelector('#sidebar [data-ch][aria-current="true"]')?.getAttribute('data-ch') ?? null);
const sidebarIds = (page) => page.evaluate(() =>
	[...document.querySelectorAll('#sidebar [data-ch]')].map((b) => b.getAttribute('data-ch')));
const text = (page, sel) => page.locator(sel).innerText().then((s) => s.trim());

// Waits until the text of sel (trimmed) passes test (a RegExp or a string).
async function textIs(page, who, sel, want, ms = TIMEOUT) {
	const ok = (s) => (want instanceof RegExp ? want.test(s) : s === want);
	let last = null;
	try {
		await waitFor(`${who}'s ${sel} to say ${want}`, async () => ok(last = await text(page, sel)), ms);
	} catch (e) {
		throw new Error(`${e.message}; it says ${JSON.stringify(last)}`);
	}
}

// The data-pick ids in the open new-DM dialog's suggestions.
const picks = (page) => page.evaluate(() =>
	[...document.querySelectorAll('dialog#dlg-new-dm ul.suggest button[data-pick]')].map((b) => b.getAttribute('data-pick')).sort());

run('people', async (t) => {
	const S = t.server;
	const tok = {
		alice: personToken(S, 'alice', { name: 'Alice Liddell' }),
		bob: personToken(S, 'bob', { name: 'Bob Marley' }),
		robert: personToken(S, 'robert', { name: 'Bobby Brown' }),
		carol: personToken(S, 'carol', { name: 'Carol King' }),
	};

	const general = await t.step('seed: alice, bob, robert and carol say hello (the directory learns their names); bob writes in #general', async () => {
		const c = {};
		for (const u of ['alice', 'bob', 'robert', 'carol']) c[u] = await Client.connect(S, u, { token: tok[u] });
		assert.equal(c.bob.hello.name, 'Bob Marley', 'hello does not carry the name');
		const ch = (await c.alice.req('ch.create', { name: 'general', kind: 'public' })).ch.id;
		await c.bob.req('ch.join', { ch });
		await c.bob.send(ch, 'hello from bob');
		for (const u of Object.keys(c)) await c[u].close();
		return ch;
	});

	const A = await t.step('alice opens her page: #me shows "Alice Liddell"', async () => {
		const page = (await t.user('alice', { token: tok.alice })).page;
		await signedIn(page, 'alice');
		await textIs(page, 'alice', '#me [data-uname="alice"]', 'Alice Liddell');
		return page;
	});

	await t.step('#general: bob\'s message is signed "Bob Marley", not "bob"', async () => {
		await openChannel(A, general);
		const m = withBody(A, 'hello from bob');
		await m.waitFor();
		await waitFor('the author to say Bob Marley', async () => (await m.locator('.author').innerText()).trim() === 'Bob Marley');
	});

	const B = await t.step('bob opens his page, types in #general: alice sees "Bob Marley is typing…"', async () => {
		const page = (await t.user('bob', { token: tok.bob })).page;
		await signedIn(page, 'bob');
		await textIs(page, 'bob', '#me [data-uname="bob"]', 'Bob Marley');
		await openChannel(page, general);
		await page.locator('#composer').pressSequentially('a long thought', { delay: 30 });
		await textIs(A, 'alice', '#typing', /^Bob Marley is typing/);
		await page.locator('#composer').fill('');
		return page;
	});

	await t.step('alice writes in #general: bob sees it signed "Alice Liddell"', async () => {
		await send(A, 'hi from alice');
		const m = withBody(B, 'hi from alice');
		await m.waitFor();
		await waitFor('the author to say Alice Liddell', async () => (await m.locator('.author').innerText()).trim() === 'Alice Liddell');
	});

	const dlg = A.locator('dialog#dlg-new-dm');
	await t.step('new DM: "Bo" suggests Bob Marley and Bobby Brown (not alice herself, not carol)', async () => {
		await A.locator('#btn-new-dm').click();
		await dlg.waitFor();
		await dlg.locator('input[name=users]').pressSequentially('Bo', { delay: 50 });
		await waitFor('suggestions bob and robert', async () => JSON.stringify(await picks(A)) === '["bob","robert"]');
		assert.match(await dlg.locator('ul.suggest button[data-pick="bob"]').innerText(), /Bob Marley/);
		assert.match(await dlg.locator('ul.suggest button[data-pick="robert"]').innerText(), /Bobby Brown/);
		await t.shot(A, 'alice-suggest-bo');
	});

	await t.step('"Marl" (a later word of the name) suggests only Bob Marley', async () => {
		await dlg.locator('input[name=users]').fill('');
		await dlg.locator('input[name=users]').pressSequentially('Marl', { delay: 50 });
		await waitFor('the only suggestion to be bob', async () => JSON.stringify(await picks(A)) === '["bob"]');
	});

	const dm = await t.step('picking him makes a chip; Open opens the DM, named "Bob Marley"', async () => {
		const before = new Set(await sidebarIds(A));
		await dlg.locator('ul.suggest button[data-pick="bob"]').click();
		const chip = dlg.locator('.chip[data-user="bob"]');
		await chip.waitFor();
		assert.match(await chip.innerText(), /Bob Marley/);
		assert.equal(await dlg.locator('input[name=users]').inputValue(), '', 'the search field was not cleared');
		await dlg.locator('button[type=submit]').click();
		await dlg.waitFor({ state: 'detached' });
		const ch = await waitFor('the DM to be the open conversation', async () => {
			const c = await openCh(A);
			return c && !before.has(c) ? c : false;
		});
		await waitFor('the DM\'s sidebar entry to say Bob Marley', async () =>
			(await sidebarEntry(A, ch).locator('.name').innerText()).trim() === 'Bob Marley');
		await textIs(A, 'alice', '#ch-title', 'Bob Marley');
		return ch;
	});

	await t.step('the header of the DM says bob is "Online"', () => textIs(A, 'alice', '#ch-sub', 'Online'));

	await t.step('bob\'s sidebar gets the DM named "Alice Liddell"; her message is signed with her name', async () => {
		await send(A, 'a word in private');
		await sidebarEntry(B, dm).waitFor();
		await waitFor('bob\'s DM entry to say Alice Liddell', async () =>
			(await sidebarEntry(B, dm).locator('.name').innerText()).trim() === 'Alice Liddell');
		await openChannel(B, dm);
		const m = withBody(B, 'a word in private');
		await m.waitFor();
		assert.equal((await m.locator('.author').innerText()).trim(), 'Alice Liddell');
		await textIs(B, 'bob', '#ch-title', 'Alice Liddell');
		await textIs(B, 'bob', '#ch-sub', 'Online');
	});

	await t.step('bob closes his page: alice\'s header says "Last seen …"', async () => {
		await t.users.find((u) => u.name === 'bob').ctx.close();
		t.users.find((u) => u.name === 'bob').pages = [];
		await textIs(A, 'alice', '#ch-sub', /^Last seen /, TIMEOUT * 2);
		await t.shot(A, 'alice-last-seen');
	});

	await t.step('alice reloads: still "Last seen …" (users.get / presence.watch since)', async () => {
		await A.reload();
		await signedIn(A, 'alice');
		await A.locator(`#sidebar [data-ch="${dm}"][aria-current="true"]`).waitFor();
		await textIs(A, 'alice', '#ch-sub', /^Last seen /);
		await waitFor('the DM\'s sidebar entry to say Bob Marley after the reload', async () =>
			(await sidebarEntry(A, dm).locator('.name').innerText()).trim() === 'Bob Marley');
		await textIs(A, 'alice', '#ch-title', 'Bob Marley');
	});

	await t.step('parleyd restarts; alice reloads: still "Last seen …" (kept across the restart), names still there', async () => {
		await S.restart();
		await waitConn(A, 'open', TIMEOUT * 2);
		await A.reload();
		await signedIn(A, 'alice');
		await A.locator(`#sidebar [data-ch="${dm}"][aria-current="true"]`).waitFor();
		await textIs(A, 'alice', '#ch-sub', /^Last seen /);
		await textIs(A, 'alice', '#ch-title', 'Bob Marley');
		await textIs(A, 'alice', '#me [data-uname="alice"]', 'Alice Liddell');
	});
});
