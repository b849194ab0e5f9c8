// Making conversations through the UI: alice creates a public and a
// private channel; bob finds the public one (and not the private one) in
// "Browse channels", joins it and reads what was said before; alice opens a
// group DM with bob and carol (carol is a protocol client in node), which
// bob's sidebar gets without a reload, and whose messages reach both once;
// an @mention makes a badge that opening the channel clears; bob leaves
// and the channel is back in "Browse"; bad channel names are refused with a
// reason in the dialog.
import {
	run, assert, waitFor, signedIn, openChannel, send, sidebarEntry, badge,
	withBody, countWithBody, Client, log,
} from './harness.mjs';

// The data-ch of the open conversation (aria-current), or null.
function openCh(page) {
	return page.evaluate(() => document.querySelector('#sidebar [data-ch][aria-current="true"]')?.getAttribute('data-ch') ?? null);
}

// The data-ch ids in the sidebar.
function sidebarIds(page) {
	return page.evaluate(() => [...document.querySelectorAll('#sidebar [data-ch]')].map((b) => b.getAttribute('data-ch')));
}

const title = (page) => page.locator('#ch-title').innerText();

// Creates a channel through #btn-new-channel; returns its id once it is
// the open conversation.
async function createChannel(page, name, kind) {
	const before = new Set(await sidebarIds(page));
	await page.locator('#btn-new-channel').click();
	const dlg = page.locator('dialog#dlg-new-channel');
	await dlg.waitFor();
	await dlg.locator('input[name=name]').fill(name);
	await dlg.locator('select[name=kind]').selectOption(kind);
	await dlg.locator('button[type=submit]').click();
	await dlg.waitFor({ state: 'hidden' });
	return waitFor(`"${name}" to be the open conversation`, async () => {
		const ch = await openCh(page);
		return ch && !before.has(ch) ? ch : false;
	});
}

// The user ids named in a sidebar entry's .name ("bob, carol").
async function namesIn(page, ch) {
	const text = await sidebarEntry(page, ch).locator('.name').innerText();
	return text.split(/[\s,]+/).filter(Boolean).sort();
}

// Frames of kind ev with this body in channel ch that the node client got.
const evCount = (c, ch, body) => c.frames.filter((f) => f.t === 'ev' && f.ch === ch && f.k === 'msg' && f.body === body).length;

run('conversations', async (t) => {
	const seed = await t.step('seed: alice creates #lobby, bob and carol join; carol stays connected (node)', async () => {
		const alice = await Client.connect(t.server, 'alice');
		const bob = await Client.connect(t.server, 'bob');
		const carol = await Client.connect(t.server, 'carol');
		const r = await alice.req('ch.create', { name: 'lobby', kind: 'public' });
		await bob.req('ch.join', { ch: r.ch.id });
		await carol.req('ch.join', { ch: r.ch.id });
		await alice.close();
		await bob.close();
		return { lobby: r.ch.id, carol };
	});
	const carol = seed.carol;

	const { A, B } = await t.step('alice and bob open their links', async () => {
		const a = await t.user('alice');
		const b = await t.user('bob');
		await signedIn(a.page, 'alice');
		await signedIn(b.page, 'bob');
		await openChannel(a.page, seed.lobby);
		await openChannel(b.page, seed.lobby);
		return { A: a.page, B: b.page };
	});

	const pub = await t.step('alice creates the public channel "design-talk": it opens in her sidebar', async () => {
		const ch = await createChannel(A, 'design-talk', 'public');
		assert.match(await sidebarEntry(A, ch).locator('.name').innerText(), /^\s*design-talk\s*$/);
		await waitFor('#ch-title to say design-talk', async () => /design-talk/.test(await title(A)));
		return ch;
	});
	await t.step('alice says something in it', async () => {
		await send(A, 'welcome to design');
		await withBody(A, 'welcome to design').and(A.locator('[data-seq]')).waitFor();
	});

	const priv = await t.step('alice creates the private channel "secret-plans": it opens, its entry has the lock', async () => {
		const ch = await createChannel(A, 'secret-plans', 'private');
		assert.match(await sidebarEntry(A, ch).locator('.name').innerText(), /^\s*secret-plans\s*$/);
		assert.match(await sidebarEntry(A, ch).innerText(), /🔒/, 'the private channel\'s sidebar entry shows no lock');
		assert.doesNotMatch(await sidebarEntry(A, pub).innerText(), /🔒/, 'the public channel\'s sidebar entry shows a lock');
		await waitFor('#ch-title to say secret-plans', async () => /secret-plans/.test(await title(A)));
		return ch;
	});

	await t.step('bob browses: the public channel is there to join, the private one is not', async () => {
		await B.locator('#btn-browse').click();
		const dlg = B.locator('dialog#dlg-browse');
		await dlg.waitFor();
		await dlg.locator(`[data-join="${pub}"]`).waitFor();
		assert.equal(await dlg.locator(`[data-join="${priv}"]`).count(), 0, 'the private channel can be joined from Browse');
		assert.doesNotMatch(await dlg.innerText(), /secret-plans/, 'Browse names the private channel');
		assert.equal(await dlg.locator(`[data-join="${seed.lobby}"]`).count(), 0, 'Browse offers a channel bob is in already');
	});

	await t.step('bob joins: it is in his sidebar, open, with alice\'s earlier message', async () => {
		const dlg = B.locator('dialog#dlg-browse');
		await dlg.locator(`[data-join="${pub}"]`).click();
		await dlg.waitFor({ state: 'hidden' });
		await B.locator(`#sidebar [data-ch="${pub}"][aria-current="true"]`).waitFor();
		await waitFor('bob\'s #ch-title to say design-talk', async () => /design-talk/.test(await title(B)));
		await withBody(B, 'welcome to design').waitFor();
		assert.equal(await countWithBody(B, 'welcome to design'), 1);
		assert.equal(await sidebarEntry(B, priv).count(), 0, 'bob\'s sidebar has the private channel');
	});

	await t.step('alice\'s later message reaches bob, once', async () => {
		await openChannel(A, pub);
		await send(A, 'glad you are here bob');
		await withBody(B, 'glad you are here bob').and(B.locator('[data-seq]')).waitFor();
		assert.equal(await countWithBody(B, 'glad you are here bob'), 1);
	});

	const dm = await t.step('alice opens a group DM with "bob, carol": it opens, named with both', async () => {
		const before = new Set(await sidebarIds(A));
		await A.locator('#btn-new-dm').click();
		const dlg = A.locator('dialog#dlg-new-dm');
		await dlg.waitFor();
		await dlg.locator('input[name=users]').fill('bob, carol');
		await dlg.locator('input[name=users]').press('Enter');
		await dlg.waitFor({ state: 'hidden' });
		const ch = await waitFor('the group DM to be alice\'s open conversation', async () => {
			const c = await openCh(A);
			return c && !before.has(c) ? c : false;
		});
		await waitFor('alice\'s DM entry to name bob and carol', async () =>
			JSON.stringify(await namesIn(A, ch)) === '["bob","carol"]');
		return ch;
	});

	await t.step('bob\'s sidebar gets the DM without a reload, named alice and carol', async () => {
		await sidebarEntry(B, dm).waitFor();
		await waitFor('bob\'s DM entry to name alice and carol', async () =>
			JSON.stringify(await namesIn(B, dm)) === '["alice","carol"]');
		// bob did not switch: he is still in design-talk
		assert.equal(await openCh(B), pub, 'the new DM took bob away from what he was reading');
	});

	await t.step('alice writes in the DM: bob and carol get it exactly once', async () => {
		await send(A, 'hello you two');
		await openChannel(B, dm);
		await withBody(B, 'hello you two').and(B.locator('[data-seq]')).waitFor();
		await carol.waitFrame((f) => f.t === 'ev' && f.ch === dm && f.body === 'hello you two', 'the DM message');
		// a second message: once it is there, a duplicate of the first would be too
		await send(A, 'and a second one');
		await withBody(B, 'and a second one').and(B.locator('[data-seq]')).waitFor();
		await carol.waitFrame((f) => f.t === 'ev' && f.ch === dm && f.body === 'and a second one', 'the second DM message');
		assert.equal(await countWithBody(B, 'hello you two'), 1, 'bob shows the DM message not exactly once');
		assert.equal(evCount(carol, dm, 'hello you two'), 1, 'carol got the DM message not exactly once');
		assert.equal(await countWithBody(A, 'hello you two'), 1, 'alice shows her DM message not exactly once');
	});

	await t.step('carol answers from node: alice and bob see it once', async () => {
		await carol.send(dm, 'carol here');
		for (const [who, p] of [['alice', A], ['bob', B]]) {
			await withBody(p, 'carol here').waitFor();
			assert.equal(await countWithBody(p, 'carol here'), 1, `${who} shows carol's answer not exactly once`);
		}
	});

	await t.step('bob looks at #lobby; alice writes "@bob look" in design-talk: a mention badge and an unread badge', async () => {
		await openChannel(B, seed.lobby);
		await openChannel(A, pub);
		await send(A, '@bob look');
		await waitFor('bob\'s .mentions badge of design-talk to say 1', async () => (await badge(B, pub, 'mentions')) === '1');
		await waitFor('bob\'s .unread badge of design-talk', async () => (await badge(B, pub, 'unread')) === '1');
		assert.equal(await badge(A, pub, 'mentions'), null, 'alice got a mention badge for her own message');
	});

	await t.step('bob opens design-talk: both badges clear, the message is there', async () => {
		await openChannel(B, pub);
		await withBody(B, '@bob look').waitFor();
		await waitFor('bob\'s badges of design-talk to clear', async () =>
			(await badge(B, pub, 'mentions')) === null && (await badge(B, pub, 'unread')) === null);
	});

	await t.step('bob leaves design-talk: it leaves his sidebar', async () => {
		const leave = B.locator('#btn-leave');
		await leave.waitFor({ state: 'visible' });
		await leave.click();
		await sidebarEntry(B, pub).waitFor({ state: 'detached' });
		await waitFor('bob to be in another conversation', async () => {
			const c = await openCh(B);
			return c && c !== pub;
		});
		assert.doesNotMatch(await title(B), /design-talk/, '#ch-title still names the channel bob left');
	});

	await t.step('and it is back in bob\'s Browse', async () => {
		await B.locator('#btn-browse').click();
		const dlg = B.locator('dialog#dlg-browse');
		await dlg.waitFor();
		await dlg.locator(`[data-join="${pub}"]`).waitFor();
		await dlg.locator('button[value=cancel]').click();
		await dlg.waitFor({ state: 'detached' });
	});

	// ---- refusals: the dialog stays open and says why

	const newChannelDialog = async () => {
		await A.locator('#btn-new-channel').click();
		const dlg = A.locator('dialog#dlg-new-channel[open]');
		await dlg.waitFor();
		return dlg;
	};
	const errorText = (dlg) => dlg.locator('p.error').innerText().then((s) => s.trim());

	const idsBefore = await sidebarIds(A);
	const unchanged = async (what) => {
		// a round trip through the server after the refusal: ch.list of a
		// fresh protocol client of alice's knows every channel she is in
		const c = await Client.connect(t.server, 'alice');
		const r = await c.req('ch.list', {});
		await c.close();
		const mine = r.channels.filter((x) => x.member !== false).map((x) => x.id).sort();
		assert.deepEqual(mine, [...idsBefore].sort(), `${what}: alice's channels changed`);
		assert.deepEqual((await sidebarIds(A)).sort(), [...idsBefore].sort(), `${what}: alice's sidebar changed`);
	};

	await t.step('an empty name: the dialog stays open and says what is wrong', async () => {
		const dlg = await newChannelDialog();
		await dlg.locator('input[name=name]').fill('');
		await dlg.locator('button[type=submit]').click();
		// either the client's own message in p.error, or the browser's
		// validation message of the required field (its bubble is not in
		// the DOM)
		const shown = await waitFor('an error for the empty name', async () => {
			const p = await errorText(dlg);
			if (p) return `p.error: ${p}`;
			const v = await dlg.locator('input[name=name]').evaluate((i) => (i.matches(':invalid') ? i.validationMessage : ''));
			return v ? `validation: ${v}` : false;
		});
		log(`empty name: ${shown}`);
		assert.equal(await dlg.count(), 1, 'the dialog closed');
		await unchanged('an empty name');
	});

	await t.step('a name of spaces only: the dialog stays open with a reason in p.error', async () => {
		const dlg = A.locator('dialog#dlg-new-channel[open]');
		await dlg.locator('input[name=name]').fill('   ');
		await dlg.locator('button[type=submit]').click();
		log(`spaces: p.error says "${await waitFor('p.error to say why', () => errorText(dlg))}"`);
		assert.equal(await dlg.count(), 1, 'the dialog closed');
		await unchanged('a name of spaces');
	});

	await t.step('an 81-byte name (80 characters, one of them é): refused, the dialog says so', async () => {
		const dlg = A.locator('dialog#dlg-new-channel[open]');
		const name = 'é' + 'x'.repeat(79);
		assert.equal(Buffer.byteLength(name), 81);
		await dlg.locator('input[name=name]').fill('');
		await dlg.locator('p.error').evaluate((p) => { p.textContent = ''; });
		await dlg.locator('input[name=name]').fill(name);
		await dlg.locator('button[type=submit]').click();
		log(`81-byte name: p.error says "${await waitFor('p.error to say why', () => errorText(dlg))}"`);
		assert.equal(await dlg.count(), 1, 'the dialog closed');
		await unchanged('an 81-byte name');
		await t.shot(A, 'alice-long-name');
	});

	await t.step('Cancel closes the dialog; nothing was made', async () => {
		await A.locator('dialog#dlg-new-channel button[value=cancel]').click();
		await A.locator('dialog#dlg-new-channel').waitFor({ state: 'detached' });
		await unchanged('after Cancel');
	});

	// (A taken name is not refused yet: docs/protocol.md, section 6, says
	// the server does not answer CONFLICT so far.)

	await carol.close();
});
