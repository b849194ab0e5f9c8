// A phone-sized window (390x844): the page fits the width, the composer is
// on screen and usable, and the conversations (folded away in the narrow
// layout) can be reached with the menu button that controls #sidebar.
import {
	run, assert, seedWorkspace, signedIn, send, waitFor, Client, NARROW, withBody,
} from './harness.mjs';

// onScreen(page, sel): the element's box lies within the window and the
// element is what is drawn at its centre (not covered).
function onScreen(page, sel) {
	return page.evaluate((sel) => {
		const e = document.querySelector(sel);
		if (!e) return false;
		const b = e.getBoundingClientRect();
		if (b.width <= 0 || b.height <= 0 || b.left < -1 || b.top < -1 ||
			b.right > innerWidth + 1 || b.bottom > innerHeight + 1)
			return false;
		const at = document.elementFromPoint(b.left + b.width / 2, b.top + b.height / 2);
		return !!at && (at === e || e.contains(at) || at.contains(e));
	}, sel);
}

run('narrow', async (t) => {
	const r = await t.step('seed: two public channels, alice and bob in both', async () => {
		const r = await seedWorkspace(t.server);
		const c = await r.alice.req('ch.create', { name: 'random', kind: 'public' });
		await r.bob.req('ch.join', { ch: c.ch.id });
		r.other = c.ch.id;
		await r.alice.close();
		return r;
	});

	const u = await t.user('alice', { viewport: NARROW });
	const A = u.page;
	await t.step('alice signs in on a 390x844 window', () => signedIn(A, 'alice'));

	const noSideways = async (when) => {
		const w = await A.evaluate(() => [document.documentElement.scrollWidth, innerWidth]);
		assert.ok(w[0] <= w[1], `${when}: the page is wider than the window (${w[0]} > ${w[1]} px)`);
	};

	await t.step('the composer is on screen; the page fits the width', async () => {
		await waitFor('#composer on screen', () => onScreen(A, '#composer'));
		await noSideways('signed in');
	});

	// The client opens one of the two on its own; alice goes to the other.
	const current = await waitFor('an open conversation', async () => {
		const c = A.locator('#sidebar [data-ch][aria-current="true"]');
		return (await c.count()) === 1 ? c.getAttribute('data-ch') : false;
	});
	const target = current === r.ch ? r.other : r.ch;
	const entry = `#sidebar [data-ch="${target}"]`;
	const menu = '[aria-controls="sidebar"]';
	const showSidebar = async () => {
		if (!(await onScreen(A, entry))) {
			assert.ok(await onScreen(A, menu), 'the conversations are off screen and no on-screen button controls #sidebar');
			await A.locator(menu).click();
		}
		await waitFor('the conversation on screen', () => onScreen(A, entry));
	};
	await t.step('the menu button brings the conversations on screen', async () => {
		await showSidebar();
		await t.shot(A, 'alice_sidebar');
	});

	await t.step('alice opens the other conversation from there; the composer is usable again', async () => {
		await A.locator(entry).click();
		await A.locator(`${entry}[aria-current="true"]`).waitFor({ state: 'attached' });
		await waitFor('#composer on screen, not covered', () => onScreen(A, '#composer'));
		await noSideways('in the other conversation');
	});

	await t.step('she sends a message: it shows on her screen and reaches bob', async () => {
		const text = 'sent from a phone-sized window';
		await send(A, text);
		const m = withBody(A, text);
		await m.and(A.locator('[data-seq]')).waitFor();
		const seq = await m.getAttribute('data-seq');
		await waitFor('her message on screen', () => onScreen(A, `#messages .msg[data-seq="${seq}"] .body`));
		await r.bob.waitFrame((f) => f.t === 'ev' && f.ch === target && f.body === text, 'the message');
		await noSideways('after sending');
	});

	await t.step('tapping the conversation already open in the menu goes back to it too', async () => {
		await showSidebar();
		await A.locator(entry).click();
		await waitFor('#composer on screen, not covered by the conversations', () => onScreen(A, '#composer'));
	});
	await r.bob.close();
});
