// Search: alice searches a word that one old message holds; clicking the
// hit opens its channel scrolled to that message, highlighted.
import {
	run, assert, seedWorkspace, signedIn, openChannel, waitFor, shownIn, msg,
} from './harness.mjs';

run('search', async (t) => {
	const r = await t.step('seed: two channels; the word is in message 3 of 150', async () => {
		const r = await seedWorkspace(t.server);
		const other = await r.alice.req('ch.create', { name: 'random', kind: 'public' });
		r.other = other.ch.id;
		for (let i = 1; i <= 150; i++) {
			const x = await r.alice.send(r.ch, i === 3 ? 'the password is zanzibarquux, keep it' : `filler message ${i}`);
			assert.equal(x.seq, i);
		}
		await r.alice.send(r.other, 'nothing to find here');
		await r.alice.close();
		await r.bob.close();
		return r;
	});

	const A = await t.step('alice opens the other channel', async () => {
		const u = await t.user('alice');
		await signedIn(u.page, 'alice');
		await openChannel(u.page, r.other);
		return u.page;
	});

	const hit = A.locator(`#search-results .hit[data-ch="${r.ch}"][data-seq="3"]`);
	await t.step('she searches the word: one hit, message 3', async () => {
		await A.locator('input#search').fill('zanzibarquux');
		await A.locator('input#search').press('Enter');
		await hit.waitFor();
		assert.equal(await A.locator('#search-results .hit').count(), 1);
		assert.match(await hit.innerText(), /zanzibarquux/);
	});

	await t.step('clicking it opens the channel at the message, highlighted and on screen', async () => {
		await hit.click();
		await A.locator(`#sidebar [data-ch="${r.ch}"][aria-current="true"]`).waitFor();
		await msg(A, 3).and(A.locator('.highlight')).waitFor();
		await waitFor('message 3 on screen', () => shownIn(A, '#messages .msg[data-seq="3"]'));
		assert.match(await msg(A, 3).locator('.body').innerText(), /zanzibarquux/);
	});
}, { server: { extra: ['--send-rate', '1000', '--send-burst', '1000'] } });
