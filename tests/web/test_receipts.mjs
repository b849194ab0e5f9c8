// Receipts in DMs (PROTOCOL.md "Receipts"): the ticks on one's own DM
// messages say sent, delivered (a device of every other member has it) or
// read (every other member read it). In a 1:1 DM: sent while bob is away,
// delivered once his page is connected though he looks at another channel,
// read when he opens the DM. In a group DM with carol (a node client that
// tells `delivered` and `read` herself): read only when both have read.
// After a parleyd restart a reloaded page asks `receipts` again and shows
// the same ticks.
import {
	run, assert, waitFor, signedIn, openChannel, send, withBody, sidebarEntry, badge,
	Client, waitConn, TIMEOUT, personToken, ticksOf, msg,
} from './harness.mjs';

// The data-seq of the one message saying body, once it has one.
async function seqOf(page, body) {
	return waitFor(`"${body}" with a data-seq`, async () => {
		const l = withBody(page, body);
		if ((await l.count()) !== 1) return false;
		const s = await l.getAttribute('data-seq');
		return s ? Number(s) : false;
	});
}

// Waits until the ticks of message seq say state.
async function ticksAre(page, who, seq, state, ms = TIMEOUT) {
	try {
		await waitFor(`${who}'s ticks on ${seq} to say ${state}`, async () => (await ticksOf(page, seq)) === state, ms);
	} catch (e) {
		const title = await page.locator(`#messages .ticks[data-seq="${seq}"]`).getAttribute('title', { timeout: 1000 }).catch(() => null);
		throw new Error(`${e.message}; now data-state=${await ticksOf(page, seq)} title=${JSON.stringify(title)}`);
	}
}

const openCh = (page) => page.evaluate(() =>
	document.querySelector('#sidebar [data-ch][aria-current="true"]')?.getAttribute('data-ch') ?? null);

run('receipts', async (t) => {
	const S = t.server;
	const tok = {
		alice: personToken(S, 'alice', { name: 'Alice Liddell' }),
		bob: personToken(S, 'bob', { name: 'Bob Marley' }),
		carol: personToken(S, 'carol', { name: 'Carol King' }),
	};

	const seed = await t.step('seed: #general (alice, bob), a DM alice-bob, a group DM alice-bob-carol; carol stays connected (node)', async () => {
		const alice = await Client.connect(S, 'alice', { token: tok.alice });
		const bob = await Client.connect(S, 'bob', { token: tok.bob });
		const carol = await Client.connect(S, 'carol', { token: tok.carol });
		const general = (await alice.req('ch.create', { name: 'general', kind: 'public' })).ch.id;
		await bob.req('ch.join', { ch: general });
		const dm = (await alice.req('dm.open', { users: ['bob'] })).ch.id;
		const group = (await alice.req('dm.open', { users: ['bob', 'carol'] })).ch.id;
		await alice.close();
		await bob.close();
		return { general, dm, group, carol };
	});
	const { general, dm, group, carol } = seed;

	const A = await t.step('alice opens her page and the DM with bob', async () => {
		const u = await t.user('alice', { token: tok.alice });
		await signedIn(u.page, 'alice');
		await sidebarEntry(u.page, dm).waitFor();
		await openChannel(u.page, dm);
		return u.page;
	});

	const s1 = await t.step('bob is not connected: alice\'s message shows one tick, "sent"', async () => {
		await send(A, 'are you there, bob?');
		const s = await seqOf(A, 'are you there, bob?');
		await ticksAre(A, 'alice', s, 'sent');
		return s;
	});

	const B = await t.step('bob opens his page (he lands in #general, not the DM): alice\'s message becomes "delivered"', async () => {
		const u = await t.user('bob', { token: tok.bob });
		const page = u.page;
		await signedIn(page, 'bob');
		await ticksAre(A, 'alice', s1, 'delivered');
		assert.equal(await openCh(page), general, 'bob\'s page opened the DM by itself');
		assert.equal(await badge(page, dm, 'unread'), '1', 'bob\'s DM entry has no unread badge of 1');
		return page;
	});

	const s2 = await t.step('alice sends again while bob looks at #general: "delivered", not read (his badge says 2)', async () => {
		await openChannel(B, general);
		await send(A, 'second question');
		const s = await seqOf(A, 'second question');
		await ticksAre(A, 'alice', s, 'delivered');
		await waitFor('bob\'s DM badge to say 2', async () => (await badge(B, dm, 'unread')) === '2');
		assert.equal(await ticksOf(A, s1), 'delivered', 'the first message is no longer "delivered" while bob has not read it');
		return s;
	});

	await t.step('bob opens the DM: both of alice\'s messages become "read"', async () => {
		await openChannel(B, dm);
		await withBody(B, 'second question').waitFor();
		await ticksAre(A, 'alice', s1, 'read');
		await ticksAre(A, 'alice', s2, 'read');
		assert.match(await A.locator(`#messages .ticks[data-seq="${s2}"]`).getAttribute('title'), /read/i);
		assert.equal(await msg(B, s2).locator('.ticks').count(), 0, 'bob sees receipt ticks on alice\'s message');
	});

	await t.step('bob answers: his message has ticks on his side, alice has it (delivered at least)', async () => {
		await send(B, 'yes, here');
		const s = await seqOf(B, 'yes, here');
		await withBody(A, 'yes, here').waitFor();
		// alice's page is on the DM and shows the newest message: read
		await ticksAre(B, 'bob', s, 'read');
	});

	// ---- a group DM: read only when both others have read

	const g1 = await t.step('bob goes to #general; alice writes in the group DM: "sent" (carol\'s device has not told delivered)', async () => {
		await openChannel(B, general);
		await sidebarEntry(A, group).waitFor();
		await openChannel(A, group);
		await send(A, 'hello both of you');
		const s = await seqOf(A, 'hello both of you');
		await carol.waitFrame((f) => f.t === 'ev' && f.ch === group && f.seq === s, 'the group DM message');
		// bob's page has it and says delivered; carol has not said so
		await carol.waitFrame((f) => f.t === 'receipt' && f.ch === group && f.user === 'bob' && f.delivered >= s,
			'bob\'s delivered receipt');
		await ticksAre(A, 'alice', s, 'sent');
		return s;
	});

	await t.step('bob reads it: still one tick for alice ("read by" bob, carol has nothing)', async () => {
		await openChannel(B, group);
		await withBody(B, 'hello both of you').waitFor();
		await carol.waitFrame((f) => f.t === 'receipt' && f.ch === group && f.user === 'bob' && f.read >= g1, 'bob\'s read receipt');
		const tk = A.locator(`#messages .ticks[data-seq="${g1}"]`);
		await waitFor('alice\'s ticks title to say who read it', async () => /read by/i.test(await tk.getAttribute('title')));
		assert.equal(await ticksOf(A, g1), 'sent', 'the ticks moved on though carol has not even received the message');
	});

	await t.step('carol tells delivered: "delivered" (not read: carol has not read)', async () => {
		await carol.req('delivered', { ch: group, seq: g1 });
		await ticksAre(A, 'alice', g1, 'delivered');
	});

	await t.step('carol reads: now "read"', async () => {
		await carol.req('read', { ch: group, seq: g1 });
		await ticksAre(A, 'alice', g1, 'read');
	});

	const s3 = await t.step('back in the 1:1 DM, bob looking at #general: a third message is "delivered"', async () => {
		await openChannel(B, general);
		await openChannel(A, dm);
		await send(A, 'one more before the restart');
		const s = await seqOf(A, 'one more before the restart');
		await ticksAre(A, 'alice', s, 'delivered');
		return s;
	});

	// ---- durable: a restart, and a page that knows nothing

	await t.step('parleyd restarts; both pages reconnect', async () => {
		await carol.close();
		await S.restart();
		await waitConn(A, 'open', TIMEOUT * 2);
		await waitConn(B, 'open', TIMEOUT * 2);
	});

	await t.step('alice reloads her page: the ticks come back from `receipts` (read, read, delivered)', async () => {
		await A.reload();
		await signedIn(A, 'alice');
		await openChannel(A, dm);
		await withBody(A, 'one more before the restart').waitFor();
		await ticksAre(A, 'alice', s1, 'read');
		await ticksAre(A, 'alice', s2, 'read');
		await ticksAre(A, 'alice', s3, 'delivered');
	});

	await t.step('and the group DM\'s message is still "read" by both', async () => {
		await openChannel(A, group);
		await withBody(A, 'hello both of you').waitFor();
		await ticksAre(A, 'alice', g1, 'read');
	});

	await t.step('bob opens the DM after the restart: the third message becomes "read"', async () => {
		await openChannel(A, dm);
		await openChannel(B, dm);
		await withBody(B, 'one more before the restart').waitFor();
		await ticksAre(A, 'alice', s3, 'read');
	});
});
