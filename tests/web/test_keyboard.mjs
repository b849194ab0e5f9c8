// The client without a mouse: Tab reaches the composer; Enter sends and
// Shift+Enter makes a new line; Up in the empty composer edits one's last
// message (Enter saves, the other user sees it edited); a message reached
// by keyboard shows its actions and Up/Down move between messages; Ctrl+K
// goes to search; Alt+Down/Alt+Up move between conversations; Escape
// closes a thread opened with a message's reply button.
import {
	run, assert, twoUsers, waitFor, withBody, msg, log,
} from './harness.mjs';

// What has the keyboard focus, in a few words.
function focused(page) {
	return page.evaluate(() => {
		const a = document.activeElement;
		if (!a || a === document.body) return { tag: 'body' };
		const m = a.closest('.msg');
		return {
			tag: a.tagName.toLowerCase(),
			id: a.id || null,
			cls: a.className || null,
			act: a.dataset?.act || null,
			seq: m && m.hasAttribute('data-seq') ? Number(m.dataset.seq) : null,
			isMsg: a.classList.contains('msg'),
			inThread: !!a.closest('#thread'),
		};
	});
}

// Presses key (Tab, Shift+Tab) until pred(focused) holds, at most max times.
async function pressUntil(page, key, pred, what, max = 40) {
	const seen = [];
	for (let i = 0; i < max; i++) {
		const f = await focused(page);
		if (pred(f)) return f;
		seen.push(f.id ? `#${f.id}` : f.act ? `[data-act=${f.act}]` : f.isMsg ? `.msg[${f.seq}]` : f.tag);
		await page.keyboard.press(key);
	}
	const f = await focused(page);
	if (pred(f)) return f;
	throw new Error(`${max} presses of ${key} did not reach ${what}; focus went: ${seen.join(' ')}`);
}

const title = (page) => page.locator('#ch-title').innerText();

run('keyboard', async (t) => {
	const r = await twoUsers(t, { channels: ['random'] });
	const A = r.A.page, B = r.B.page;
	const kb = A.keyboard;

	await t.step('alice: Tab from the top of the page reaches the composer', async () => {
		await A.evaluate(() => document.activeElement?.blur());
		assert.equal((await focused(A)).tag, 'body');
		await pressUntil(A, 'Tab', (f) => f.id === 'composer', '#composer');
	});

	const first = await t.step('she types and presses Enter: bob gets the message', async () => {
		await kb.type('typed without a mouse');
		await kb.press('Enter');
		const m = withBody(B, 'typed without a mouse').and(B.locator('[data-seq]'));
		await m.waitFor();
		assert.equal(await A.locator('#composer').inputValue(), '', 'the composer was not emptied after Enter');
		return Number(await m.getAttribute('data-seq'));
	});

	const two = await t.step('Shift+Enter makes a new line: bob sees one message of two lines', async () => {
		await kb.type('line one');
		await kb.press('Shift+Enter');
		assert.equal(await A.locator('#composer').inputValue(), 'line one\n', 'Shift+Enter did not add a new line (or sent)');
		await kb.type('line two');
		await kb.press('Enter');
		const m = B.locator('#messages .msg[data-seq]').filter({ hasText: 'line two' });
		await m.waitFor();
		assert.equal(await m.count(), 1, 'the two lines arrived as more than one message');
		const lines = (await m.locator('.body').innerText()).split('\n').map((s) => s.trim()).filter(Boolean);
		assert.deepEqual(lines, ['line one', 'line two'], 'the body is not rendered as two lines');
		// and shown on two lines, not one: the body is two lines high
		const h = await m.locator('.body').evaluate((b) => b.getBoundingClientRect().height / parseFloat(getComputedStyle(b).lineHeight || '0'));
		if (Number.isFinite(h)) assert.ok(h > 1.5, `the body is ${h.toFixed(2)} lines high`);
		return Number(await m.getAttribute('data-seq'));
	});

	await t.step('Up in the empty composer opens the edit box of her last message', async () => {
		await msg(A, two).waitFor();
		assert.equal(await A.locator('#composer').inputValue(), '');
		await kb.press('ArrowUp');
		const box = msg(A, two).locator('textarea.edit-box');
		await box.waitFor();
		const f = await focused(A);
		assert.ok(f.cls?.includes('edit-box') && f.seq === two, `the edit box has no focus: ${JSON.stringify(f)}`);
		assert.equal(await box.inputValue(), 'line one\nline two');
		assert.equal(await msg(A, first).locator('textarea.edit-box').count(), 0, 'an older message opened for editing');
	});

	await t.step('she rewrites it and presses Enter: it is saved, bob sees it (edited)', async () => {
		await kb.press('ControlOrMeta+a');
		await kb.type('line one, edited by keyboard');
		await kb.press('Enter');
		await msg(A, two).locator('textarea.edit-box').waitFor({ state: 'detached' });
		await msg(B, two).locator('.edited').waitFor();
		await waitFor('bob to see the new text', async () =>
			(await msg(B, two).locator('.body').innerText()).trim() === 'line one, edited by keyboard');
		log('focus after saving the edit:', JSON.stringify(await focused(A)));
	});

	await t.step('bob answers, so that alice has three messages to move between', async () => {
		await B.locator('#composer').fill('bob answers');
		await B.locator('#composer').press('Enter');
		await withBody(A, 'bob answers').and(A.locator('[data-seq]')).waitFor();
	});

	const seqs = await A.evaluate(() => [...document.querySelectorAll('#messages .msg[data-seq]')].map((e) => Number(e.dataset.seq)));

	await t.step('from the composer, Shift+Tab reaches the newest message: it shows its actions', async () => {
		await pressUntil(A, 'Tab', (f) => f.id === 'composer', '#composer');
		const f = await pressUntil(A, 'Shift+Tab', (x) => x.isMsg, 'a message');
		assert.equal(f.seq, seqs[seqs.length - 1], 'Shift+Tab from the composer reached another message than the newest');
		await msg(A, f.seq).locator('.actions').waitFor({ state: 'visible' });
		await msg(A, f.seq).locator('.actions button[data-act=reply]').waitFor({ state: 'visible' });
		// the others' stay hidden (the mouse is over the sidebar)
		assert.equal(await msg(A, seqs[0]).locator('.actions').isVisible(), false, 'an unfocused message shows its actions');
	});

	await t.step('ArrowUp and ArrowDown move the focus between messages', async () => {
		const at = async () => (await focused(A)).seq;
		const n = seqs.length;
		await kb.press('ArrowUp');
		await waitFor('focus on the message before the newest', async () => (await at()) === seqs[n - 2]);
		assert.ok((await focused(A)).isMsg, 'the focus is inside a message, not on it');
		await msg(A, seqs[n - 2]).locator('.actions').waitFor({ state: 'visible' });
		await kb.press('ArrowUp');
		await waitFor('focus on the one before that', async () => (await at()) === seqs[n - 3]);
		await kb.press('ArrowDown');
		await waitFor('focus back down one', async () => (await at()) === seqs[n - 2]);
		await kb.press('Home');
		await waitFor('Home: focus on the first message', async () => (await at()) === seqs[0]);
		await kb.press('End');
		await waitFor('End: focus on the newest message', async () => (await at()) === seqs[n - 1]);
	});

	await t.step('Ctrl+K puts the focus in #search', async () => {
		await kb.press('Control+k');
		await waitFor('#search to have the focus', async () => (await focused(A)).id === 'search');
	});

	await t.step('Alt+ArrowDown opens the next conversation, Alt+ArrowUp the one before', async () => {
		const order = await A.evaluate(() => [...document.querySelectorAll('#sidebar [data-ch]')].map((b) => b.dataset.ch));
		const cur = order.indexOf(r.ch);
		assert.ok(cur >= 0, 'the channel is not in the sidebar');
		const next = order[(cur + 1) % order.length];
		assert.notEqual(next, r.ch, 'the sidebar has only one conversation');
		const nextName = (await A.locator(`#sidebar [data-ch="${next}"] .name`).innerText()).trim();
		await kb.press('Alt+ArrowDown');
		await A.locator(`#sidebar [data-ch="${next}"][aria-current="true"]`).waitFor();
		await waitFor(`#ch-title to name ${nextName}`, async () => (await title(A)).includes(nextName));
		await kb.press('Alt+ArrowUp');
		await A.locator(`#sidebar [data-ch="${r.ch}"][aria-current="true"]`).waitFor();
		await waitFor('#ch-title to name general', async () => /general/.test(await title(A)));
		assert.equal(await A.locator('textarea.edit-box').count(), 0, 'Alt+ArrowUp opened an edit box');
		await withBody(A, 'bob answers').waitFor();
	});

	await t.step('a focused message\'s reply button, by keyboard, opens the thread', async () => {
		await pressUntil(A, 'Tab', (f) => f.id === 'composer', '#composer');
		const m = await pressUntil(A, 'Shift+Tab', (x) => x.isMsg, 'a message');
		// Tab from the message goes into its actions
		await pressUntil(A, 'Tab', (f) => f.act === 'reply' && f.seq === m.seq, 'its reply button', 6);
		await kb.press('Enter');
		await A.locator('aside#thread').waitFor({ state: 'visible' });
		await waitFor('the thread composer to have the focus', async () => (await focused(A)).id === 'thread-composer');
		await t.shot(A, 'alice-thread');
	});

	await t.step('Escape closes the thread', async () => {
		await kb.press('Escape');
		await A.locator('aside#thread').waitFor({ state: 'hidden' });
	});
});
