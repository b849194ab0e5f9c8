// parleyd restarts under two open clients: both see the connection go,
// alice's message written while the server is down waits as pending and is
// delivered exactly once after the restart, and nothing is missing or
// doubled afterwards (messages from a third client included).
import {
	run, assert, twoUsers, send, messages, assertOrdered, waitFor, waitConn, countWithBody,
	Client, withBody, TIMEOUT,
} from './harness.mjs';

run('restart', async (t) => {
	const r = await twoUsers(t);
	const A = r.A.page, B = r.B.page;
	const bodies = ['before the restart 1', 'before the restart 2'];

	await t.step('alice sends 2 messages; bob sees them', async () => {
		for (const b of bodies) await send(A, b);
		await waitFor('both on bob\'s side', async () =>
			(await countWithBody(B, bodies[0])) === 1 && (await countWithBody(B, bodies[1])) === 1);
	});

	await t.step('SIGTERM: parleyd exits 0', () => t.server.stopOk());

	await t.step('both pages see the connection go (#conn not open)', async () => {
		for (const p of [A, B])
			await waitFor('#conn to leave "open"', async () =>
				['connecting', 'offline'].includes(await p.locator('#conn').getAttribute('data-state')));
	});

	const down = 'written while the server was down';
	await t.step('alice sends a message while it is down: it shows as pending', async () => {
		await send(A, down);
		const m = withBody(A, down);
		await m.and(A.locator('.pending')).waitFor();
		assert.equal(await m.getAttribute('data-seq'), null, 'a pending message has a data-seq');
	});

	await t.step('parleyd starts again on the same port and data', async () => {
		const port = t.server.port;
		await t.server.start();
		assert.equal(t.server.port, port);
	});

	await t.step('both pages reconnect (#conn open)', async () => {
		await waitConn(A, 'open', TIMEOUT * 2);
		await waitConn(B, 'open', TIMEOUT * 2);
	});

	await t.step('the pending message is delivered once: bob has it, alice shows it sent', async () => {
		await waitFor("bob's copy", async () => (await countWithBody(B, down)) >= 1);
		await waitFor("alice's copy not pending, with a data-seq", async () => {
			const l = (await messages(A)).filter((m) => m.body.trim() === down);
			return l.length === 1 && !l[0].pending && l[0].seq !== null;
		});
	});

	await t.step('carol (a node client) sends 3 after the restart', async () => {
		const carol = await Client.connect(t.server, 'carol');
		await carol.req('ch.join', { ch: r.ch });
		for (let i = 1; i <= 3; i++) await carol.send(r.ch, `from carol ${i}`);
		await carol.close();
	});

	for (const [who, p] of [['alice', A], ['bob', B]])
		await t.step(`${who}: every message once, seqs contiguous from 1`, async () => {
			const all = [...bodies, down, 'from carol 1', 'from carol 2', 'from carol 3'];
			await waitFor(`${who}: all 6 messages with a seq`, async () => {
				const l = await messages(p);
				return all.every((b) => l.some((m) => m.body.trim() === b && m.seq !== null));
			});
			const l = await messages(p);
			for (const b of all)
				assert.equal(l.filter((m) => m.body.trim() === b).length, 1, `${who} shows "${b}" not exactly once`);
			assert.deepEqual(l.map((m) => m.body.trim()), all, `${who}: the messages are not in order`);
			assertOrdered(l, who, { contiguous: true });
			assert.equal(l[0].seq, 1);
			assert.equal(l.filter((m) => m.pending).length, 0, `${who} still shows a pending message`);
		});

	await t.step('the server holds the message once', async () => {
		const c = await Client.connect(t.server, 'bob');
		const h = await c.req('history', { ch: r.ch, limit: 50 });
		assert.equal(h.msgs.filter((m) => m.body === down).length, 1, 'the server stored it more than once');
		await c.close();
	});
});
