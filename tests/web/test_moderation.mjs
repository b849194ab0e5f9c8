// Roles and moderation in the browser (PROTOCOL.md "People, roles and
// moderation"): alice creates a channel and owns it; bob, a member, sees
// its settings read-only; alice renames it and sets a topic, which bob's
// page follows (`chan` frames); announcement mode closes bob's composer
// (with the reason) but not reactions and thread replies; archiving closes
// every composer; alice makes bob an owner (his settings become editable),
// removes carol from a private channel (carol's sidebar loses it), and
// deletes bob's message as its moderator; an admin who owns nothing changes
// the settings; a taken name (whatever its case) is refused in the create
// dialog, which offers the public channel that has it.
import {
	run, assert, waitFor, signedIn, openChannel, send, sidebarEntry, withBody, msg,
	Client, personToken, countWithBody,
} from './harness.mjs';

const openCh = (page) => page.evaluate(() =>
	document.querySelector('#sidebar [data-ch][aria-current="true"]')?.getAttribute('data-ch') ?? null);
const sidebarIds = (page) => page.evaluate(() =>
	[...document.querySelectorAll('#sidebar [data-ch]')].map((b) => b.getAttribute('data-ch')));
const text = (page, sel) => page.locator(sel).innerText().then((s) => s.trim());

// Creates a channel through #btn-new-channel; returns its id once open.
async function createChannel(page, name, kind = 'public') {
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

// Opens the open channel's settings (#btn-settings); returns the dialog,
// once its member list is drawn.
async function settings(page) {
	await page.locator('#btn-settings').click();
	const dlg = page.locator('dialog#dlg-channel[open]');
	await dlg.waitFor();
	await dlg.locator('ul.members li[data-member]').first().waitFor();
	return dlg;
}

async function closeDialog(page, dlg) {
	await dlg.locator('button[value=cancel]').click();
	await page.locator('dialog#dlg-channel').waitFor({ state: 'detached' });
}

// Changes fields in the settings dialog and saves: {name, topic, archived,
// post}; waits until the dialog closed (the server took it).
async function saveSettings(page, change) {
	const dlg = await settings(page);
	// the fields are filled from ch.info: wait for the current name
	await waitFor('the settings dialog to be filled', async () => (await dlg.locator('input[name=name]').inputValue()) !== '');
	if ('name' in change) await dlg.locator('input[name=name]').fill(change.name);
	if ('topic' in change) await dlg.locator('input[name=topic]').fill(change.topic);
	if ('archived' in change) await dlg.locator('input[name=archived]').setChecked(change.archived);
	if ('post' in change) await dlg.locator('select[name=post]').selectOption(change.post);
	await dlg.locator('button[type=submit]').click();
	try {
		await page.locator('dialog#dlg-channel').waitFor({ state: 'detached' });
	} catch (e) {
		throw new Error(`${e.message}; the dialog says: ${await dlg.locator('p.error').innerText().catch(() => '?')}`);
	}
}

// act(page, seq, act): hovers the message and clicks its action button;
// again if the message was drawn anew meanwhile (a `chan` frame redraws
// the list: who may moderate changed).
async function act(page, seq, what, root = '#messages') {
	await waitFor(`the ${what} action of message ${seq}`, async () => {
		const m = msg(page, seq, root);
		await m.scrollIntoViewIfNeeded({ timeout: 2000 });
		await m.hover({ timeout: 2000 });
		await m.locator(`.actions button[data-act="${what}"]`).click({ timeout: 2000 });
		return true;
	});
}

async function seqOf(page, body, root = '#messages') {
	return waitFor(`"${body}" with a data-seq`, async () => {
		const l = withBody(page, body, root);
		if ((await l.count()) !== 1) return false;
		const s = await l.getAttribute('data-seq');
		return s ? Number(s) : false;
	});
}

// Whether the settings dialog lets its user change things.
async function editable(dlg) {
	const st = {};
	for (const f of ['input[name=name]', 'input[name=topic]', 'input[name=archived]', 'select[name=post]'])
		st[f] = await dlg.locator(f).isEnabled();
	st.save = await dlg.locator('button[type=submit]').count();
	return st;
}

run('moderation', async (t) => {
	const S = t.server;
	const tok = {
		alice: personToken(S, 'alice', { name: 'Alice Liddell' }),
		bob: personToken(S, 'bob', { name: 'Bob Marley' }),
		carol: personToken(S, 'carol', { name: 'Carol King' }),
		dana: personToken(S, 'dana', { name: 'Dana Scully', role: 'admin' }),
	};

	const { A, B, C } = await t.step('alice, bob and carol open their pages', async () => {
		// a channel for each to land in
		const a = await Client.connect(S, 'alice', { token: tok.alice });
		const lobby = (await a.req('ch.create', { name: 'lobby', kind: 'public' })).ch.id;
		for (const u of ['bob', 'carol', 'dana']) {
			const c = await Client.connect(S, u, { token: tok[u] });
			await c.req('ch.join', { ch: lobby });
			await c.close();
		}
		await a.close();
		const pages = {};
		for (const [k, u] of [['A', 'alice'], ['B', 'bob'], ['C', 'carol']]) {
			pages[k] = (await t.user(u, { token: tok[u] })).page;
			await signedIn(pages[k], u);
		}
		return pages;
	});

	const ch = await t.step('alice creates "town-square" in the dialog: she owns it, the settings button shows', async () => {
		const id = await createChannel(A, 'town-square');
		await A.locator('#btn-settings').waitFor({ state: 'visible' });
		const dlg = await settings(A);
		await A.locator('dialog#dlg-channel ul.members li[data-member="alice"]').waitFor();
		const st = await editable(dlg);
		assert.deepEqual(st, { 'input[name=name]': true, 'input[name=topic]': true, 'input[name=archived]': true, 'select[name=post]': true, save: 1 },
			'the owner\'s settings dialog is not editable');
		await closeDialog(A, dlg);
		return id;
	});

	await t.step('bob joins it from Browse', async () => {
		await B.locator('#btn-browse').click();
		const dlg = B.locator('dialog#dlg-browse');
		await dlg.locator(`[data-join="${ch}"]`).click();
		await dlg.waitFor({ state: 'hidden' });
		await B.locator(`#sidebar [data-ch="${ch}"][aria-current="true"]`).waitFor();
		await openChannel(A, ch);
	});

	await t.step('bob\'s settings dialog is read-only: fields disabled, no Save, no member buttons', async () => {
		const dlg = await settings(B);
		await dlg.locator('ul.members li[data-member="bob"]').waitFor();
		const st = await editable(dlg);
		assert.deepEqual(st, { 'input[name=name]': false, 'input[name=topic]': false, 'input[name=archived]': false, 'select[name=post]': false, save: 0 },
			'a member can edit the settings');
		assert.equal(await dlg.locator('ul.members button[data-act]').count(), 0, 'a member is offered make-owner or remove');
		await t.shot(B, 'bob-settings-readonly');
		await closeDialog(B, dlg);
	});

	await t.step('alice renames it "town-hall" and sets a topic: bob\'s sidebar, title and subline follow', async () => {
		await saveSettings(A, { name: 'town-hall', topic: 'Where we meet' });
		await waitFor('bob\'s sidebar entry to say town-hall', async () =>
			/^\s*town-hall\s*$/.test(await sidebarEntry(B, ch).locator('.name').innerText()));
		await waitFor('bob\'s #ch-title to say town-hall', async () => /town-hall/.test(await text(B, '#ch-title')));
		await waitFor('bob\'s #ch-sub to show the topic', async () => (await text(B, '#ch-sub')) === 'Where we meet');
		assert.doesNotMatch(await text(B, '#ch-title'), /town-square/);
		await waitFor('alice\'s #ch-sub to show the topic', async () => (await text(A, '#ch-sub')) === 'Where we meet');
	});

	const root = await t.step('alice posts; then sets announcement mode', async () => {
		await send(A, 'announcement: lunch at noon');
		const s = await seqOf(A, 'announcement: lunch at noon');
		await seqOf(B, 'announcement: lunch at noon');
		await saveSettings(A, { post: 'owners' });
		return s;
	});

	await t.step('bob\'s composer is disabled and says why; #ch-state says Announcements; alice\'s composer is open', async () => {
		await B.locator('#ch-state .tag.announce').waitFor();
		await waitFor('bob\'s #composer to be disabled', () => B.locator('#composer').isDisabled());
		const why = await B.locator('#composer').getAttribute('placeholder');
		assert.match(why, /owner/i, `bob's composer does not say why it is closed: "${why}"`);
		await A.locator('#ch-state .tag.announce').waitFor();
		assert.equal(await A.locator('#composer').isEnabled(), true, 'the owner\'s composer is closed in an announcement channel');
		await t.shot(B, 'bob-announcements');
	});

	await t.step('bob can still react and reply in a thread; alice sees both', async () => {
		const emoji = await waitFor('a reaction picked', async () => {
			await act(B, root, 'react');
			const pick = B.locator('.emoji-picker button[data-emoji]').first();
			const e = await pick.getAttribute('data-emoji', { timeout: 2000 });
			await pick.click({ timeout: 2000 });
			return e;
		});
		await waitFor(`the ${emoji} reaction on alice's side`, async () =>
			/1\s*$/.test((await msg(A, root).locator(`.reactions .reaction[data-emoji="${emoji}"]`).textContent({ timeout: 1000 })) || ''));
		await act(B, root, 'reply');
		await B.locator('aside#thread').waitFor();
		assert.equal(await B.locator('#thread-composer').isEnabled(), true, 'the thread composer is closed in an announcement channel');
		await send(B, 'count me in', '#thread-composer');
		await seqOf(B, 'count me in', '#thread-messages');
		await waitFor('"1 reply" on alice\'s side', async () =>
			/1 repl/.test(await msg(A, root).locator('.replies').innerText({ timeout: 1000 }).catch(() => '')));
		await B.locator('#thread-close').click();
	});

	await t.step('alice archives it: both composers are disabled, both show Archived', async () => {
		await saveSettings(A, { archived: true });
		for (const [who, p] of [['alice', A], ['bob', B]]) {
			await p.locator('#ch-state .tag.archived').waitFor();
			await waitFor(`${who}'s #composer to be disabled`, () => p.locator('#composer').isDisabled());
			assert.match(await p.locator('#composer').getAttribute('placeholder'), /archived/i, `${who}'s composer does not say it is archived`);
		}
		await t.shot(A, 'alice-archived');
	});

	await t.step('alice unarchives it and lets everyone post: the tags go, bob writes again', async () => {
		await saveSettings(A, { archived: false, post: 'all' });
		for (const [who, p] of [['alice', A], ['bob', B]]) {
			await p.locator('#ch-state .tag.archived').waitFor({ state: 'detached' });
			await p.locator('#ch-state .tag.announce').waitFor({ state: 'detached' });
			await waitFor(`${who}'s #composer to be enabled`, () => p.locator('#composer').isEnabled());
		}
		await send(B, 'a message of bob to moderate');
		await seqOf(A, 'a message of bob to moderate');
	});

	await t.step('alice makes bob an owner in the members list', async () => {
		const dlg = await settings(A);
		const row = dlg.locator('ul.members li[data-member="bob"]');
		await row.locator('button[data-act="owner"]').click();
		// the list is drawn again: bob's row now offers "make member"
		await row.locator('button[data-act="member"]').waitFor();
		await closeDialog(A, dlg);
	});

	await t.step('bob opens the settings again: now he may edit them', async () => {
		const dlg = await settings(B);
		try {
			await waitFor('bob\'s settings to be editable', async () => {
				const st = await editable(dlg);
				return Object.values(st).every((v) => v === true || v === 1);
			});
		} catch (e) {
			throw new Error(`${e.message}; fields: ${JSON.stringify(await editable(dlg))}`);
		} finally {
			await t.shot(B, 'bob-settings-owner');
		}
		await closeDialog(B, dlg);
	});

	await t.step('alice deletes bob\'s message as the channel\'s owner; bob sees it deleted', async () => {
		const s = await seqOf(A, 'a message of bob to moderate');
		await act(A, s, 'delete');
		const dlg = A.locator('dialog#dlg-confirm');
		await dlg.waitFor();
		await dlg.locator('button[value=ok]').click();
		for (const [who, p] of [['alice', A], ['bob', B]])
			await waitFor(`${who}: message ${s} deleted`, async () =>
				(await msg(p, s).count()) === 0 || (await msg(p, s).evaluate((e) => e.classList.contains('deleted'))));
		assert.equal(await countWithBody(B, 'a message of bob to moderate'), 0, 'bob still shows his deleted message');
	});

	// ---- a private channel: alice removes carol

	const priv = await t.step('alice creates the private "inner-circle" and invites carol: carol\'s sidebar gets it', async () => {
		const id = await createChannel(A, 'inner-circle', 'private');
		const a = await Client.connect(S, 'alice', { token: tok.alice });
		await a.req('ch.invite', { ch: id, users: ['carol'] });
		await a.close();
		await sidebarEntry(C, id).waitFor();
		await openChannel(C, id);
		await send(A, 'just between us');
		await withBody(C, 'just between us').waitFor();
		return id;
	});

	await t.step('alice removes carol (members list): carol\'s sidebar loses it, its messages go', async () => {
		const dlg = await settings(A);
		await dlg.locator('ul.members li[data-member="carol"] button[data-act="kick"]').click();
		await dlg.locator('ul.members li[data-member="carol"]').waitFor({ state: 'detached' });
		await closeDialog(A, dlg);
		await sidebarEntry(C, priv).waitFor({ state: 'detached' });
		await waitFor('carol to be in another conversation', async () => {
			const c = await openCh(C);
			return c && c !== priv;
		});
		assert.doesNotMatch(await text(C, '#ch-title'), /inner-circle/, 'carol\'s #ch-title still names the channel she was removed from');
		assert.equal(await countWithBody(C, 'just between us'), 0, 'carol still shows the private channel\'s message');
	});

	await t.step('carol\'s history of it is NOT_FOUND now', async () => {
		const c = await Client.connect(S, 'carol', { token: tok.carol });
		await assert.rejects(c.req('history', { ch: priv }), (e) => e.code === 'NOT_FOUND');
		await c.close();
	});

	// ---- an admin who owns nothing

	const D = await t.step('dana (role admin) opens her page and joins town-hall from Browse', async () => {
		const page = (await t.user('dana', { token: tok.dana })).page;
		await signedIn(page, 'dana');
		await page.locator('#btn-browse').click();
		const dlg = page.locator('dialog#dlg-browse');
		await dlg.locator(`[data-join="${ch}"]`).click();
		await dlg.waitFor({ state: 'hidden' });
		await page.locator(`#sidebar [data-ch="${ch}"][aria-current="true"]`).waitFor();
		return page;
	});

	await t.step('dana\'s settings are editable; she changes the topic; alice and bob see it', async () => {
		const dlg = await settings(D);
		const st = await editable(dlg);
		assert.deepEqual(st, { 'input[name=name]': true, 'input[name=topic]': true, 'input[name=archived]': true, 'select[name=post]': true, save: 1 },
			'an admin\'s settings dialog is not editable');
		assert.equal(await dlg.locator('ul.members li[data-member="dana"] .role').count(), 0, 'dana is shown as an owner');
		await closeDialog(D, dlg);
		await saveSettings(D, { topic: 'Set by an admin' });
		await openChannel(A, ch);
		await openChannel(B, ch);
		for (const [who, p] of [['alice', A], ['bob', B], ['dana', D]])
			await waitFor(`${who}'s #ch-sub to show the admin's topic`, async () => (await text(p, '#ch-sub')) === 'Set by an admin');
	});

	// ---- taken names

	await t.step('bob creates "TOWN-HALL": refused in the dialog (he is in it: it offers to open it)', async () => {
		await B.locator('#btn-new-channel').click();
		const dlg = B.locator('dialog#dlg-new-channel[open]');
		await dlg.locator('input[name=name]').fill('TOWN-HALL');
		await dlg.locator('button[type=submit]').click();
		const why = await waitFor('p.error to say the name is taken', async () => (await text(B, 'dialog#dlg-new-channel p.error')) || false);
		assert.match(why, /exists|taken/i, `the dialog's error: "${why}"`);
		assert.equal(await dlg.count(), 1, 'the dialog closed');
		await t.shot(B, 'bob-taken-name');
		await dlg.locator('button[value=cancel]').click();
		await dlg.waitFor({ state: 'detached' });
	});

	await t.step('carol creates "Town-Hall": refused; the dialog offers to join the public channel, and joining opens it', async () => {
		const before = await sidebarIds(C);
		await C.locator('#btn-new-channel').click();
		const dlg = C.locator('dialog#dlg-new-channel[open]');
		await dlg.locator('input[name=name]').fill('Town-Hall');
		await dlg.locator('button[type=submit]').click();
		await waitFor('p.error to say the name is taken', async () => (await text(C, 'dialog#dlg-new-channel p.error')) || false);
		assert.deepEqual((await sidebarIds(C)).sort(), before.sort(), 'a channel was made');
		await dlg.locator(`p.error [data-join="${ch}"]`).click();
		await dlg.waitFor({ state: 'detached' });
		await C.locator(`#sidebar [data-ch="${ch}"][aria-current="true"]`).waitFor();
		await waitFor('carol\'s #ch-title to say town-hall', async () => /town-hall/.test(await text(C, '#ch-title')));
	});

	await t.step('bob creates "Inner-Circle" (a private channel he is not in): refused, nothing of it revealed', async () => {
		await B.locator('#btn-new-channel').click();
		const dlg = B.locator('dialog#dlg-new-channel[open]');
		await dlg.locator('input[name=name]').fill('Inner-Circle');
		await dlg.locator('select[name=kind]').selectOption('private');
		await dlg.locator('button[type=submit]').click();
		const why = await waitFor('p.error to say the name is taken', async () => (await text(B, 'dialog#dlg-new-channel p.error')) || false);
		assert.equal(await dlg.locator('p.error [data-join]').count(), 0, 'the dialog offers to join a private channel');
		assert.ok(!why.includes(priv), 'the dialog shows the private channel\'s id');
		assert.equal(await sidebarEntry(B, priv).count(), 0);
		await dlg.locator('button[value=cancel]').click();
	});
});
