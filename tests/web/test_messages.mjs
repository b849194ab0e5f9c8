// Messages between two people: what alice sends appears once on both
// sides, in order; bob's unread badge of a channel he is not looking at
// counts up and clears when he opens it, in his other tab too (the read
// marker moves across tabs).
import {
	run, assert, twoUsers, send, messages, assertOrdered, countWithBody,
	openChannel, badge, signedIn, waitFor,
} from './harness.mjs';

run('messages', async (t) => {
	const r = await twoUsers(t, { channels: ['random'] });
	const A = r.A.page, B = r.B.page;
	const bodies = [1, 2, 3, 4, 5].map((i) => `hello number ${i} from alice`);

	await t.step('alice sends 5 messages quickly', async () => {
		for (const b of bodies) await send(A, b);
	});

	for (const [who, page] of [['bob', B], ['alice', A]])
		await t.step(`${who} sees each of the 5 once, in order, with a data-seq`, async () => {
			await waitFor(`${who}: all 5 messages delivered`, async () => {
				const list = await messages(page);
				return bodies.every((b) => list.some((m) => m.body.trim() === b && m.seq !== null && !m.pending));
			});
			const list = await messages(page);
			for (const b of bodies)
				assert.equal(list.filter((m) => m.body.trim() === b).length, 1, `${who} shows "${b}" not exactly once`);
			const mine = list.filter((m) => bodies.includes(m.body.trim()));
			assert.deepEqual(mine.map((m) => m.body.trim()), bodies, `${who}: the 5 are not in the order sent`);
			assertOrdered(list, `${who}'s #messages`, { contiguous: true });
		});

	const B2 = await t.step('bob looks at #random, in his first tab and in a second one', async () => {
		await openChannel(B, r.more.random);
		const p = await r.B.tab();
		await signedIn(p, 'bob');
		await openChannel(p, r.more.random);
		return p;
	});
	await t.step('alice sends 2 more to the channel bob is not looking at', async () => {
		await send(A, 'while bob looks elsewhere 1');
		await send(A, 'while bob looks elsewhere 2');
	});
	for (const [tab, page] of [['first', B], ['second', B2]])
		await t.step(`bob's unread badge of the channel says 2 in his ${tab} tab`, () =>
			waitFor('unread badge "2"', async () => (await badge(page, r.ch)) === '2'));

	await t.step('bob opens the channel in his first tab: the badge goes, the messages show', async () => {
		await B.bringToFront();
		await openChannel(B, r.ch);
		await waitFor('the badge to clear', async () => (await badge(B, r.ch)) === null);
		await waitFor('the 2 messages', async () =>
			(await countWithBody(B, 'while bob looks elsewhere 1')) === 1 &&
			(await countWithBody(B, 'while bob looks elsewhere 2')) === 1);
	});
	await t.step("and the badge clears in bob's second tab (the read marker moved)", () =>
		waitFor('the badge to clear in the second tab', async () => (await badge(B2, r.ch)) === null));

	await t.step("alice's own messages never made a badge on her side", async () => {
		assert.equal(await badge(A, r.ch), null);
	});
});
