// Notifications in the browser (PROTOCOL.md "Notifications for users who
// are not there"; docs/web.md "Notifications"): alice sets her default
// level for channels in the preferences and a level per channel with the
// bell in the channel header; a second (node) connection of hers reads them
// back with notify.get, and a reload shows them again. A muted channel
// (level none) is dimmed in the sidebar: its unread messages are not bold
// and not counted, a mention of her still is. While her tab is hidden, a
// message from bob makes a desktop notification when her level allows it
// (all; mentions: her id, @channel, @here) and not otherwise (none,
// mentions without a mention), nor while her status is "Do not disturb",
// nor while the tab is visible; one per channel (tag); clicking one opens
// its conversation. Permission is asked only from the preferences' button.
// A level set elsewhere shows after the page reconnects.
// The composer sends "@channel" and "@here" as such in `mentions`, and they
// are highlighted.
//
// The Notification API is observed through an init script that replaces
// window.Notification by a recorder (the permission stays the browser's:
// granted to alice's context), and document.visibilityState is faked
// there (a headless page is always visible).
import {
	run, assert, waitFor, signedIn, openChannel, send, sidebarEntry, badge,
	Client, personToken, withBody,
} from './harness.mjs';

// In every page of a context: notifications recorded in window.__notes
// ({title, body, tag, closed}), calls of requestPermission counted in
// window.__asked, and window.__setVisibility('hidden'|'visible').
function recorder() {
	const Real = window.Notification;
	window.__notes = [];
	window.__asked = 0;
	class Recorded {
		constructor(title, opts = {}) {
			this.title = title;
			this.body = opts.body;
			this.tag = opts.tag;
			this.closed = false;
			this.onclick = null;
			window.__notes.push(this);
		}
		close() {
			this.closed = true;
		}
		static get permission() {
			return Real ? Real.permission : 'default';
		}
		static requestPermission(...a) {
			window.__asked++;
			return Real.requestPermission(...a);
		}
	}
	window.Notification = Recorded;
	let vis = 'visible';
	Object.defineProperty(Document.prototype, 'visibilityState', { configurable: true, get: () => vis });
	Object.defineProperty(Document.prototype, 'hidden', { configurable: true, get: () => vis === 'hidden' });
	window.__setVisibility = (v) => {
		vis = v;
		document.dispatchEvent(new Event('visibilitychange'));
	};
}

const notes = (page) => page.evaluate(() => window.__notes.map(({ title, body, tag, closed }) => ({ title, body, tag, closed })));

async function noteSaying(page, body) {
	return waitFor(`a desktop notification saying "${body}"`, async () => (await notes(page)).find((n) => n.body === body));
}

// Opens the preferences dialog; returns it.
async function prefs(page) {
	await page.locator('#btn-prefs').click();
	const dlg = page.locator('dialog#dlg-prefs[open]');
	await dlg.waitFor();
	return dlg;
}

// Opens the open conversation's notification dialog (the bell); returns it.
async function bell(page) {
	await page.locator('#btn-notify').click();
	const dlg = page.locator('dialog#dlg-notify[open]');
	await dlg.waitFor();
	return dlg;
}

async function submit(page, dlg, id) {
	await dlg.locator('button[type=submit]').click();
	try {
		await page.locator(`dialog#${id}`).waitFor({ state: 'detached' });
	} catch (e) {
		throw new Error(`${e.message}; the dialog says: ${await dlg.locator('p.error').innerText().catch(() => '?')}`);
	}
}

async function cancel(page, dlg, id) {
	await dlg.locator('button[value=cancel]').click();
	await page.locator(`dialog#${id}`).waitFor({ state: 'detached' });
}

// How a sidebar entry looks: muted, bold name, opacity of the name, badges.
const entryLook = (page, ch) => page.evaluate((ch) => {
	const b = document.querySelector(`#sidebar [data-ch="${ch}"]`);
	const name = b.querySelector('.name');
	const cs = getComputedStyle(name);
	return {
		muted: b.dataset.muted === 'true',
		weight: Number(cs.fontWeight),
		opacity: Number(cs.opacity),
		unread: b.querySelector('.unread')?.textContent ?? null,
		mentions: b.querySelector('.mentions')?.textContent ?? null,
	};
}, ch);

run('notify', async (t) => {
	const S = t.server;
	const tok = {
		alice: personToken(S, 'alice', { name: 'Alice Liddell' }),
		bob: personToken(S, 'bob', { name: 'Bob Marley' }),
	};

	const { general, random, news, dm, bob } = await t.step('seed: #general, #random, #news (alice, bob), a DM; bob stays connected (node)', async () => {
		const alice = await Client.connect(S, 'alice', { token: tok.alice });
		const b = await Client.connect(S, 'bob', { token: tok.bob });
		const ids = {};
		for (const name of ['general', 'random', 'news']) {
			ids[name] = (await alice.req('ch.create', { name, kind: 'public' })).ch.id;
			await b.req('ch.join', { ch: ids[name] });
		}
		ids.dm = (await b.req('dm.open', { users: ['alice'] })).ch.id;
		await alice.close();
		return { ...ids, bob: b };
	});
	// notify.get of alice, asked on a connection of her own
	const serverSays = async () => {
		const c = await Client.connect(S, 'alice', { token: tok.alice });
		try {
			const r = await c.req('notify.get');
			return { default: r.default, channels: r.channels || {} };
		} finally {
			await c.close();
		}
	};

	const A = await t.step('alice opens her page (notifications allowed in her browser context)', async () => {
		const u = await t.user('alice', { token: tok.alice, open: false });
		await u.ctx.grantPermissions(['notifications'], { origin: S.origin });
		await u.ctx.addInitScript(recorder);
		const page = await u.tab();
		await signedIn(page, 'alice');
		await openChannel(page, general);
		return page;
	});

	await t.step('preferences: the default is "mentions"; alice makes it "all"; notify.get says so', async () => {
		assert.deepEqual(await serverSays(), { default: 'mentions', channels: {} }, 'notify.get before any change');
		const dlg = await prefs(A);
		const def = dlg.locator('select[name=default]');
		assert.equal(await def.isEnabled(), true, 'the default level cannot be changed');
		assert.equal(await def.inputValue(), 'mentions');
		assert.equal(await dlg.locator('#desktop-state').getAttribute('data-permission'), 'granted');
		await def.selectOption('all');
		await def.focus();
		await t.shot(A, 'preferences');
		await submit(A, dlg, 'dlg-prefs');
		assert.equal((await serverSays()).default, 'all', 'the default did not reach the server');
	});

	await t.step('the bell of #random: alice mutes it (level none); the sidebar shows it muted; notify.get says so', async () => {
		await openChannel(A, random);
		await A.locator('#btn-notify:not([hidden])').waitFor();
		const dlg = await bell(A);
		const level = dlg.locator('select[name=level]');
		assert.equal(await level.inputValue(), '', 'a channel never set does not say it follows the default');
		assert.match(await level.locator('option[value=""]').innerText(), /all messages/, 'the default offered is not the new default');
		await level.selectOption('none');
		await t.shot(A, 'channel-level');
		await submit(A, dlg, 'dlg-notify');
		await sidebarEntry(A, random).and(A.locator('[data-muted="true"]')).waitFor();
		assert.equal(await A.locator('#btn-notify').getAttribute('data-level'), 'none');
		assert.equal((await serverSays()).channels[random], 'none', 'the channel level did not reach the server');
	});

	await t.step('the bell of #general: "mentions"; the DM: "all" unless set', async () => {
		await openChannel(A, general);
		let dlg = await bell(A);
		await dlg.locator('select[name=level]').selectOption('mentions');
		await submit(A, dlg, 'dlg-notify');
		assert.deepEqual(await serverSays(), { default: 'all', channels: { [random]: 'none', [general]: 'mentions' } });
		await openChannel(A, dm);
		dlg = await bell(A);
		assert.match(await dlg.locator('select[name=level] option[value=""]').innerText(), /all messages/);
		await cancel(A, dlg, 'dlg-notify');
		await openChannel(A, general);
	});

	await t.step('after a reload the page shows the same levels (from the server)', async () => {
		await A.reload();
		await signedIn(A, 'alice');
		await sidebarEntry(A, random).and(A.locator('[data-muted="true"]')).waitFor();
		assert.equal((await entryLook(A, general)).muted, false, '#general shown muted');
		const p = await prefs(A);
		assert.equal(await p.locator('select[name=default]').inputValue(), 'all');
		await cancel(A, p, 'dlg-prefs');
		await openChannel(A, general);
		const dlg = await bell(A);
		assert.equal(await dlg.locator('select[name=level]').inputValue(), 'mentions');
		await cancel(A, dlg, 'dlg-notify');
	});

	await t.step('muted #random: unread not bold nor counted, a mention still shows; #news (not muted) is bold', async () => {
		await bob.send(random, 'chatter one');
		await bob.send(random, 'chatter two');
		await bob.send(random, '@alice look at this', { mentions: ['alice'] });
		await bob.send(news, 'news one');
		await waitFor('the mention badge of #random', async () => (await badge(A, random, 'mentions')) === '1');
		await waitFor('the unread badge of #news', async () => (await badge(A, news)) === '1');
		const r = await entryLook(A, random);
		const n = await entryLook(A, news);
		assert.equal(r.muted, true);
		assert.equal(r.unread, null, 'a muted channel shows an unread count');
		assert.ok(r.weight < 600, `a muted channel's name is bold (${r.weight})`);
		assert.ok(r.opacity < 1, 'a muted channel is not dimmed');
		assert.ok(n.weight >= 600 && n.opacity === 1 && !n.muted, `#news does not look unread: ${JSON.stringify(n)}`);
		await t.shot(A, 'muted-sidebar');
		assert.deepEqual(await notes(A), [], 'a desktop notification while the tab is visible');
	});

	await t.step('tab hidden: bob\'s messages that alice\'s levels allow make desktop notifications, the others do not', async () => {
		await A.evaluate(() => window.__setVisibility('hidden'));
		// #general (mentions): a plain message is not enough, a mention is
		await bob.send(general, 'plain in general');
		await bob.send(general, '@alice ping', { mentions: ['alice'] });
		const ping = await noteSaying(A, '@alice ping');
		assert.equal(ping.title, 'Bob Marley in #general');
		assert.ok(!(await notes(A)).some((n) => n.body === 'plain in general'), 'a notification for a message without a mention at level "mentions"');
		// #random (none): not even a mention; the page has it (badge 2)
		await bob.send(random, '@alice muted ping', { mentions: ['alice'] });
		await waitFor('the mention badge of #random to say 2', async () => (await badge(A, random, 'mentions')) === '2');
		// #news (the default: all), @channel in #general, the DM (all)
		await bob.send(news, 'news for all');
		await bob.send(general, '@channel standup', { mentions: ['@channel'] });
		await bob.send(general, '@here anyone?', { mentions: ['@here'] });
		await bob.send(dm, 'psst');
		const n = await noteSaying(A, 'news for all');
		const ch = await noteSaying(A, '@channel standup');
		const here = await noteSaying(A, '@here anyone?');
		const d = await noteSaying(A, 'psst');
		assert.equal(n.title, 'Bob Marley in #news');
		assert.equal(ch.title, 'Bob Marley in #general');
		assert.equal(d.title, 'Bob Marley (direct message)');
		const all = await notes(A);
		assert.ok(!all.some((x) => x.body === '@alice muted ping'), 'a notification in a muted channel');
		assert.deepEqual(all.map((x) => x.body).sort(), ['@alice ping', '@channel standup', '@here anyone?', 'news for all', 'psst'].sort());
		// one per conversation: the same tag within one, different across
		assert.equal(new Set([ping.tag, ch.tag, here.tag]).size, 1, 'the notifications of #general do not share a tag');
		assert.equal(new Set([ping.tag, n.tag, d.tag]).size, 3, 'two conversations share a tag');
	});

	await t.step('status "Do not disturb": no desktop notification', async () => {
		await A.locator('#status').selectOption('dnd');
		const before = (await notes(A)).length;
		await bob.send(news, 'news while dnd');
		await bob.send(dm, 'dm while dnd');
		await waitFor('the unread badge of the DM to say 2', async () => (await badge(A, dm)) === '2');
		await waitFor('the unread badge of #news to say 3', async () => (await badge(A, news)) === '3');
		assert.equal((await notes(A)).length, before, 'a desktop notification while "Do not disturb"');
		await A.locator('#status').selectOption('online');
		await bob.send(dm, 'dm after dnd');
		await noteSaying(A, 'dm after dnd');
	});

	await t.step('clicking the DM\'s notification opens the DM', async () => {
		const i = await A.evaluate(() => window.__notes.findIndex((n) => n.body === 'dm after dnd'));
		await A.evaluate((i) => window.__notes[i].onclick(new Event('click')), i);
		await A.locator(`#sidebar [data-ch="${dm}"][aria-current="true"]`).waitFor();
		await withBody(A, 'dm after dnd').waitFor();
		assert.equal((await notes(A))[i].closed, true, 'the clicked notification stays');
		await A.evaluate(() => window.__setVisibility('visible'));
	});

	await t.step('the composer sends @channel and @here as such; they are highlighted', async () => {
		await openChannel(A, general);
		const body = '@channel and @here: lunch? cc @bob';
		await send(A, body);
		const ev = await bob.waitFrame((f) => f.t === 'ev' && f.body === body, 'alice\'s message');
		assert.deepEqual([...ev.mentions].sort(), ['@channel', '@here', 'bob'], 'the mentions sent');
		const m = withBody(A, body);
		await m.locator('.body .at.all').first().waitFor();
		assert.deepEqual(await m.locator('.body .at.all').allInnerTexts(), ['@channel', '@here']);
	});

	await t.step('permission is asked only from the preferences\' button', async () => {
		const u = await t.user('bob', { token: tok.bob, open: false });
		await u.ctx.addInitScript(recorder);
		const page = await u.tab();
		await signedIn(page, 'bob');
		await openChannel(page, general);
		assert.equal(await page.evaluate(() => window.__asked), 0, 'permission asked on load');
		// alice's @channel is a mention for bob
		await withBody(page, '@channel and @here: lunch? cc @bob').and(page.locator('.mention')).waitFor();
		const dlg = await prefs(page);
		assert.equal(await dlg.locator('#desktop-state').getAttribute('data-permission'), 'default');
		await dlg.locator('#btn-desktop').click();
		await waitFor('requestPermission to be called', () => page.evaluate(() => window.__asked === 1));
		// headless chromium answers "denied"
		await waitFor('the dialog to say what the browser answered', async () =>
			(await dlg.locator('#desktop-state').getAttribute('data-permission')) !== 'default');
		await t.shot(page, 'preferences-asked');
		await cancel(page, dlg, 'dlg-prefs');
	});

	await t.step('a level set on another device shows after a reconnect (notify.get after every hello)', async () => {
		const c = await Client.connect(S, 'alice', { token: tok.alice });
		await c.req('notify.set', { ch: news, level: 'none' });
		await c.close();
		assert.equal((await entryLook(A, news)).muted, false, 'the page knew before reconnecting');
		await bob.close();
		await S.restart();
		await sidebarEntry(A, news).and(A.locator('[data-muted="true"]')).waitFor();
		await A.locator('#conn[data-state="open"]').waitFor({ state: 'attached' });
	});
});
