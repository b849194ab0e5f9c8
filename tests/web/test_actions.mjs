// What one does to a message, seen by the other side: a thread reply, a
// reaction, an edit (and its history), a delete.
import {
	run, assert, twoUsers, send, msg, withBody, waitFor, countWithBody,
} from './harness.mjs';

// seqOf(page, body): the data-seq of the one message saying body, once it
// has one.
async function seqOf(page, body, root = '#messages') {
	return waitFor(`"${body}" with a data-seq`, async () => {
		const l = withBody(page, body, root);
		if ((await l.count()) !== 1) return false;
		const s = await l.getAttribute('data-seq');
		return s ? Number(s) : false;
	});
}

// act(page, seq, act): hovers the message and clicks its action button.
async function act(page, seq, what, root = '#messages') {
	const m = msg(page, seq, root);
	await m.scrollIntoViewIfNeeded();
	await m.hover();
	await m.locator(`.actions button[data-act="${what}"]`).click();
}

run('actions', async (t) => {
	const r = await twoUsers(t);
	const A = r.A.page, B = r.B.page;

	const root = await t.step('alice posts a message; bob sees it', async () => {
		await send(A, 'a question for the thread');
		const s = await seqOf(A, 'a question for the thread');
		assert.equal(await seqOf(B, 'a question for the thread'), s);
		return s;
	});

	await t.step('bob replies in a thread', async () => {
		await act(B, root, 'reply');
		await B.locator('aside#thread').waitFor();
		await send(B, 'the answer, in the thread', '#thread-composer');
		await seqOf(B, 'the answer, in the thread', '#thread-messages');
	});
	await t.step('the reply is not in the main list', async () => {
		assert.equal(await countWithBody(B, 'the answer, in the thread'), 0);
		assert.equal(await countWithBody(A, 'the answer, in the thread'), 0);
	});
	await t.step('alice sees "1 reply" on her message and opens the thread', async () => {
		const replies = msg(A, root).locator('.replies');
		await replies.filter({ hasText: /\b1\b/ }).waitFor();
		await replies.click();
		await A.locator('aside#thread').waitFor();
		await seqOf(A, 'the answer, in the thread', '#thread-messages');
		await A.locator('#thread-close').click();
		await A.locator('aside#thread').waitFor({ state: 'hidden' });
	});

	await t.step('bob reacts to the message; alice sees the reaction with count 1', async () => {
		await act(B, root, 'react');
		const pick = B.locator('.emoji-picker button[data-emoji]').first();
		await pick.waitFor();
		const emoji = await pick.getAttribute('data-emoji');
		await pick.click();
		const sel = `.reactions .reaction[data-emoji="${emoji}"]`;
		await waitFor(`the ${emoji} reaction with count 1 on alice's side`, async () =>
			/1\s*$/.test((await msg(A, root).locator(sel).textContent({ timeout: 1000 })) || ''));
		await waitFor(`the ${emoji} reaction with count 1 on bob's side`, async () =>
			/1\s*$/.test((await msg(B, root).locator(sel).textContent({ timeout: 1000 })) || ''));
	});

	await t.step('alice edits her message; bob sees the new text, marked edited', async () => {
		await act(A, root, 'edit');
		const box = msg(A, root).locator('textarea.edit-box');
		await box.fill('a better question for the thread');
		await box.press('Enter');
		await box.waitFor({ state: 'detached' });
		for (const p of [A, B]) {
			await msg(p, root).locator('.body', { hasText: 'a better question for the thread' }).waitFor();
			await msg(p, root).locator('.edited').waitFor();
		}
		assert.equal(await countWithBody(B, 'a question for the thread'), 0, 'bob still shows the old text');
	});

	await t.step('Escape in the edit box leaves the text as it was', async () => {
		await act(A, root, 'edit');
		const box = msg(A, root).locator('textarea.edit-box');
		await box.fill('this text is never saved');
		await box.press('Escape');
		await box.waitFor({ state: 'detached' });
		assert.equal((await msg(A, root).locator('.body').innerText()).trim(), 'a better question for the thread');
	});

	await t.step("the edit history lists both versions, oldest first", async () => {
		await act(A, root, 'history');
		const dlg = A.locator('dialog#dlg-history');
		await dlg.waitFor();
		await waitFor('two versions', async () => (await dlg.locator('li').count()) === 2);
		const items = await dlg.locator('li').allInnerTexts();
		assert.match(items[0], /a question for the thread/, 'the first version is not the original');
		assert.match(items[1], /a better question for the thread/, 'the second version is not the edit');
		await A.keyboard.press('Escape');
		await dlg.waitFor({ state: 'hidden' });
	});

	await t.step('alice deletes another message (confirming); bob sees it deleted', async () => {
		await send(A, 'a message to regret');
		const s = await seqOf(A, 'a message to regret');
		await seqOf(B, 'a message to regret');
		await act(A, s, 'delete');
		const dlg = A.locator('dialog#dlg-confirm');
		await dlg.waitFor();
		await dlg.locator('button[value=ok]').click();
		for (const [who, p] of [['alice', A], ['bob', B]])
			await waitFor(`${who}: message ${s} deleted`, async () =>
				(await msg(p, s).count()) === 0 ||
				(await msg(p, s).evaluate((e) => e.classList.contains('deleted'))));
		assert.equal(await countWithBody(B, 'a message to regret'), 0, 'bob still shows the deleted text');
		assert.equal(await countWithBody(A, 'a message to regret'), 0, 'alice still shows the deleted text');
	});
});
