// Scroll-back: 600 messages in a channel; scrolling #messages to the top
// again and again pages older history in until seq 1 shows, and what is
// rendered is always contiguous, ascending and without duplicates, each
// message with its own text.
import {
	run, assert, seedWorkspace, signedIn, openChannel, messages, assertOrdered, waitFor, log, shownIn,
} from './harness.mjs';

const N = 600;
const MAX_RENDERED = 300; // docs/web.md: the most messages a list renders

run('scrollback', async (t) => {
	const { ch, alice } = await t.step('seed: 600 messages from alice', async () => {
		const r = await seedWorkspace(t.server);
		for (let i = 1; i <= N; i += 50) {
			const batch = [];
			for (let j = i; j < i + 50 && j <= N; j++) batch.push(r.alice.send(r.ch, `scroll message ${j}`));
			const res = await Promise.all(batch);
			res.forEach((x, k) => assert.equal(x.seq, i + k, 'seeding: unexpected seq'));
		}
		return r;
	});

	const B = await t.step('bob opens the channel', async () => {
		const u = await t.user('bob');
		await signedIn(u.page, 'bob');
		await openChannel(u.page, ch);
		return u.page;
	});

	const check = async (when) => {
		const list = await messages(B);
		assert.ok(list.length > 0, `${when}: no message rendered`);
		assertOrdered(list, when, { contiguous: true });
		// the page stays fast however long the channel: a bounded window
		assert.ok(list.length <= MAX_RENDERED, `${when}: ${list.length} messages rendered (at most ${MAX_RENDERED})`);
		for (const m of list)
			assert.equal(m.body.trim(), `scroll message ${m.seq}`, `${when}: message ${m.seq} shows another's text`);
		return list;
	};

	await t.step('the newest message shows first, scrolled into view', async () => {
		await waitFor(`message ${N} on screen`, () => shownIn(B, `#messages .msg[data-seq="${N}"]`));
		await check('at the start');
	});

	await t.step('scroll to the top until seq 1 is rendered', async () => {
		let lowest = Math.min(...(await check('at the start')).map((m) => m.seq));
		let rounds = 0;
		while (lowest > 1) {
			rounds++;
			assert.ok(rounds <= 100, `still no seq 1 after ${rounds} scrolls (lowest ${lowest})`);
			await B.locator('#messages').evaluate((el) => { el.scrollTop = 0; });
			const before = lowest;
			lowest = await waitFor(`older messages than ${before} after scrolling to the top`, async () => {
				// keep nudging: a client may load on the scroll event only
				await B.locator('#messages').evaluate((el) => {
					el.scrollTop = 0;
					el.dispatchEvent(new Event('scroll'));
				});
				const list = await messages(B);
				const low = Math.min(...list.map((m) => m.seq));
				return low < before ? low : false;
			});
			await check(`after scroll ${rounds}`);
		}
		log(`seq 1 rendered after ${rounds} scrolls`);
	});

	await t.step('seq 1 is at the top of the list', async () => {
		const list = await check('at the top');
		assert.equal(list[0].seq, 1);
	});

	await t.step('scrolling back down pages newer messages in until the newest again', async () => {
		let highest = Math.max(...(await check('at the top')).map((m) => m.seq));
		let rounds = 0;
		while (highest < N) {
			rounds++;
			assert.ok(rounds <= 100, `still no seq ${N} after ${rounds} scrolls down (highest ${highest})`);
			const before = highest;
			highest = await waitFor(`newer messages than ${before} after scrolling to the bottom`, async () => {
				await B.locator('#messages').evaluate((el) => {
					el.scrollTop = el.scrollHeight;
					el.dispatchEvent(new Event('scroll'));
				});
				const list = await messages(B);
				const high = Math.max(...list.map((m) => m.seq));
				return high > before ? high : false;
			});
			await check(`after scroll down ${rounds}`);
		}
		// loading keeps what the reader looks at still: the newest is
		// below, one more scroll to the bottom shows it
		await waitFor(`message ${N} on screen`, async () => {
			await B.locator('#messages').evaluate((el) => { el.scrollTop = el.scrollHeight; });
			return shownIn(B, `#messages .msg[data-seq="${N}"]`);
		});
	});
	await alice.close();
}, { server: { extra: ['--send-rate', '1000', '--send-burst', '1000'] } });
