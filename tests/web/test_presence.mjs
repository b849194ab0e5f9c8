// Typing and presence: bob sees that alice is typing; in a DM alice opens
// from the UI, each sees the other online, and bob sees alice go offline
// once her page is closed.
import {
	run, assert, twoUsers, waitFor, sidebarEntry, TIMEOUT, openChannel, send, withBody,
} from './harness.mjs';

run('presence', async (t) => {
	const r = await twoUsers(t);
	const A = r.A.page, B = r.B.page;

	await t.step('alice types in the composer: bob sees "alice is typing"', async () => {
		await A.locator('#composer').pressSequentially('I am writing someth', { delay: 30 });
		await waitFor('#typing to name alice', async () => /alice/.test(await B.locator('#typing').innerText()));
		assert.doesNotMatch(await A.locator('#typing').innerText(), /alice/, 'alice is told that she is typing');
	});
	await t.step('and the notice goes away after she stops', () =>
		waitFor('#typing to be empty again', async () => !/alice/.test(await B.locator('#typing').innerText()), TIMEOUT * 2));

	const dm = await t.step('alice opens a DM with bob from the UI', async () => {
		await A.locator('#btn-new-dm').click();
		const dlg = A.locator('dialog#dlg-new-dm');
		await dlg.waitFor();
		await dlg.locator('input[name=users]').fill('bob');
		await dlg.locator('input[name=users]').press('Enter');
		await dlg.waitFor({ state: 'hidden' });
		const id = await waitFor('the DM to be the open conversation', async () => {
			const open = A.locator('#sidebar [data-ch][aria-current="true"]');
			const ch = (await open.count()) === 1 ? await open.getAttribute('data-ch') : null;
			return ch && ch !== r.ch ? ch : false;
		});
		return id;
	});

	await t.step("bob's sidebar gets the DM, with alice online", async () => {
		await sidebarEntry(B, dm).waitFor();
		await sidebarEntry(B, dm).locator('.presence[data-user="alice"][data-status="online"]').waitFor();
	});
	await t.step("alice's DM entry shows bob online", () =>
		sidebarEntry(A, dm).locator('.presence[data-user="bob"][data-status="online"]').waitFor());

	await t.step('alice closes her page: bob sees her offline', async () => {
		await r.A.ctx.close();
		r.A.pages = [];
		await sidebarEntry(B, dm).locator('.presence[data-user="alice"][data-status="offline"]')
			.waitFor({ timeout: TIMEOUT * 2 });
	});

	await t.step("bob posts in the channel: the dot by his own name says he is online", async () => {
		await openChannel(B, r.ch);
		await send(B, 'bob was here');
		const mine = withBody(B, 'bob was here').and(B.locator('[data-seq]'));
		await mine.waitFor();
		// the dot of his message, or of the group it joins (same author)
		const statuses = () => B.evaluate(() => [...document.querySelectorAll('#messages .presence[data-user="bob"]')]
			.map((d) => d.getAttribute('data-status')));
		try {
			await waitFor("bob's own .presence[data-user=bob] online in #messages", async () => {
				const l = await statuses();
				return l.length > 0 && l.every((x) => x === 'online');
			});
		} catch (e) {
			throw new Error(`${e.message}; data-status of his dots: ${JSON.stringify(await statuses())}`);
		}
	});
});
