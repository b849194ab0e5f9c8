// Files (issue 15) in the browser: alice attaches a PNG and a text file
// with the paperclip (the hidden file input) and an unknown binary by
// dropping it on the message area, sees them in the composer's tray
// (progress, then done; Send waits for an upload still running), and
// sends one message with all three. Bob, in his own browser context, sees
// the image as a preview (an <img> from a blob: URL that decoded), the
// text file's first lines, the binary as a chip; the image opens full
// size; downloads give the very bytes alice uploaded; previews' blob:
// URLs are revoked once their message leaves the page. A file over the
// server's --max-file-mb shows an error in the tray and nothing is sent;
// an upload cancelled in flight is left out of the message. A file's name
// finds its message in search, whose hit shows the file as a chip.
import crypto from 'node:crypto';
import fs from 'node:fs';
import zlib from 'node:zlib';
import {
	run, assert, twoUsers, send, msg, withBody, waitFor, countWithBody, log, openChannel, Client, uploadFile, NARROW, WIDE,
} from './harness.mjs';

// ---- a small valid PNG, made here: RGB, 8 bits, a gradient with a frame

function crc32(buf) {
	let c = ~0;
	for (const b of buf) {
		c ^= b;
		for (let k = 0; k < 8; k++) c = (c >>> 1) ^ (0xedb88320 & -(c & 1));
	}
	return ~c >>> 0;
}

function pngChunk(type, data) {
	const len = Buffer.alloc(4);
	len.writeUInt32BE(data.length);
	const td = Buffer.concat([Buffer.from(type, 'ascii'), data]);
	const crc = Buffer.alloc(4);
	crc.writeUInt32BE(crc32(td));
	return Buffer.concat([len, td, crc]);
}

// The colour makePng gives an inner pixel.
const pngPixel = (x, y) => [Math.round((255 * x) / PNG_W), Math.round((255 * y) / PNG_H), 200];

function makePng(w, h) {
	const raw = Buffer.alloc((w * 3 + 1) * h);
	for (let y = 0; y < h; y++) {
		const row = y * (w * 3 + 1);
		raw[row] = 0; // filter: none
		for (let x = 0; x < w; x++) {
			const edge = x < 3 || y < 3 || x >= w - 3 || y >= h - 3;
			const p = row + 1 + x * 3;
			raw[p] = edge ? 40 : Math.round((255 * x) / w);
			raw[p + 1] = edge ? 30 : Math.round((255 * y) / h);
			raw[p + 2] = edge ? 90 : 200;
		}
	}
	const ihdr = Buffer.alloc(13);
	ihdr.writeUInt32BE(w, 0);
	ihdr.writeUInt32BE(h, 4);
	ihdr[8] = 8; // bit depth
	ihdr[9] = 2; // truecolour
	return Buffer.concat([
		Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
		pngChunk('IHDR', ihdr),
		pngChunk('IDAT', zlib.deflateSync(raw)),
		pngChunk('IEND', Buffer.alloc(0)),
	]);
}

// Bytes no one would call text, an image or a PDF (deterministic).
function binaryBytes(n) {
	const b = Buffer.alloc(n);
	let x = 0x9e3779b9;
	for (let i = 0; i < n; i++) {
		x ^= x << 13;
		x ^= x >>> 17;
		x ^= x << 5;
		b[i] = x & 0xff;
	}
	b[0] = 0x00;
	b[1] = 0xfe;
	return b;
}

const sha = (b) => crypto.createHash('sha256').update(b).digest('hex');

const PNG_W = 240, PNG_H = 160;
const png = makePng(PNG_W, PNG_H);
const text = Buffer.from(
	'// quarterly report generator\nfunction total(rows) {\n\treturn rows.reduce((a, r) => a + r.amount, 0);\n}\n' +
	'for (const r of rows) console.log(r.name, r.amount);\n'.repeat(12));
const bin = binaryBytes(5000);
const big = binaryBytes(1536 * 1024); // 1.5 MiB, over --max-file-mb 1

run('files', async (t) => {
	const r = await twoUsers(t, { channels: ['random'] });
	const A = r.A.page, B = r.B.page;
	const tray = '#compose-main ul.tray';

	// Bob's file requests (previews) wait until the test has measured the
	// room his client keeps for them before their bytes come.
	let letPreviews;
	const previewGate = new Promise((res) => { letPreviews = res; });
	await B.route((u) => u.pathname.startsWith('/api/v1/files/'), async (route) => {
		await previewGate;
		await route.continue();
	});

	// Uploads whose name starts with "held-" wait at the browser's edge
	// until the test lets them go: the tray shows them uploading, and a
	// Send meanwhile has to wait.
	let letGo;
	const gate = new Promise((res) => { letGo = res; });
	let held = 0;
	await A.route((u) => u.pathname === '/api/v1/files' && /^held-/.test(u.searchParams.get('name') || ''), async (route) => {
		held++;
		await gate;
		await route.continue();
	});

	await t.step('alice attaches a PNG and a text file with the paperclip', async () => {
		await A.locator('#compose-main button.attach').waitFor();
		assert.equal(await A.locator('#compose-main button.attach').getAttribute('aria-label'), 'Attach files');
		await A.locator('#compose-main input[type=file]').setInputFiles([
			{ name: 'gradient.png', mimeType: 'image/png', buffer: png },
			{ name: 'quarterly-notes.txt', mimeType: 'text/plain', buffer: text },
		]);
		await A.locator(`${tray} li.upload`).nth(1).waitFor();
		assert.equal(await A.locator(`${tray} li.upload`).count(), 2, 'the tray does not list the 2 files');
		for (const name of ['gradient.png', 'quarterly-notes.txt'])
			await A.locator(`${tray} li.upload[data-name="${name}"][data-state="done"]`).waitFor();
		assert.equal(await A.locator(`${tray} li.upload progress`).count(), 0, 'a done upload still shows its progress bar');
	});

	await t.step('dragging files over the message area shows the drop zone', async () => {
		await A.evaluate(({ name, b64 }) => {
			const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
			const dt = new DataTransfer();
			dt.items.add(new File([bytes], name, { type: 'application/octet-stream' }));
			window.testDrop = dt;
			const over = document.querySelector('#messages');
			for (const type of ['dragenter', 'dragover'])
				over.dispatchEvent(new DragEvent(type, { bubbles: true, cancelable: true, dataTransfer: dt }));
		}, { name: 'held-data.bin', b64: bin.toString('base64') });
		const zone = A.locator('main .dropzone');
		await zone.waitFor({ state: 'visible' });
		assert.match(await zone.innerText(), /drop files/i);
		await t.shot(A, 'drop-zone');
	});

	await t.step('dropping it attaches it: it uploads (held), with a progress bar and a cancel button', async () => {
		await A.evaluate(() => {
			document.querySelector('#messages').dispatchEvent(
				new DragEvent('drop', { bubbles: true, cancelable: true, dataTransfer: window.testDrop }));
		});
		await A.locator('main .dropzone').waitFor({ state: 'hidden' });
		const row = A.locator(`${tray} li.upload[data-name="held-data.bin"]`);
		await row.waitFor();
		assert.equal(await row.getAttribute('data-state'), 'uploading');
		await row.locator('progress').waitFor();
		await row.locator('button.cancel').waitFor();
		await waitFor('the held upload to reach the network', () => held >= 1);
		assert.equal(await A.locator(`${tray} li.upload`).count(), 3);
	});

	await t.step('a Send while it uploads waits: nothing is sent yet, the tray stays', async () => {
		await A.locator('#composer').fill('three files for you');
		await A.locator('#composer').press('Enter');
		await A.locator('#compose-main button.send[aria-busy="true"]').waitFor();
		assert.match(await A.locator('#compose-main .tray-note').innerText(), /when the uploads finish/i);
		assert.equal(await A.locator('#messages .msg.pending').count(), 0, 'a message was sent before its upload finished');
		assert.equal(await countWithBody(A, 'three files for you'), 0);
		assert.equal(await A.locator(`${tray} li.upload`).count(), 3);
		await t.shot(A, 'tray-uploading');
	});

	const seq = await t.step('the upload finishes: the message goes by itself, with the 3 files', async () => {
		letGo();
		const s = await waitFor('"three files for you" with a data-seq on alice\'s side', async () => {
			const l = withBody(A, 'three files for you');
			return (await l.count()) === 1 && Number(await l.getAttribute('data-seq'));
		});
		await A.locator(`${tray}`).waitFor({ state: 'hidden' });
		assert.equal(await A.locator('#compose-main button.send').getAttribute('aria-busy'), 'false');
		assert.equal(await A.locator('#composer').inputValue(), '', 'the composer was not emptied');
		return s;
	});

	const m = msg(B, seq);
	const files = await t.step('bob sees the message with its 3 files', async () => {
		await m.waitFor();
		await waitFor('3 files on bob\'s message', async () => (await m.locator('.files .file').count()) === 3);
		return m.locator('.file').evaluateAll((els) => els.map((e) => ({ id: e.dataset.file, kind: e.dataset.kind, text: e.innerText })));
	});
	log('files on bob\'s side:', JSON.stringify(files));
	const idOf = (re) => files.find((f) => re.test(f.text))?.id;
	const pngId = idOf(/gradient\.png/), txtId = idOf(/quarterly-notes\.txt/), binId = idOf(/held-data\.bin/);
	assert.ok(pngId && txtId && binId, `not all three files are named on bob's message: ${JSON.stringify(files)}`);

	await t.step('before its bytes come, the image\'s room is its own size, from the message\'s w/h', async () => {
		const f = m.locator(`.file[data-file="${pngId}"]`);
		const box = await f.locator('button.preview').evaluate((e) => {
			const r = e.getBoundingClientRect();
			return { w: r.width, h: r.height, loaded: e.querySelector('img').naturalWidth };
		});
		assert.equal(box.loaded, 0, 'the preview loaded before it was let through');
		// 240x160 fits the 360x280 preview: kept as it is (without w/h
		// the client would guess 4:3, 360x270)
		assert.ok(Math.abs(box.w - PNG_W) <= 1 && Math.abs(box.h - PNG_H) <= 1, `the room kept is ${box.w}x${box.h}, not ${PNG_W}x${PNG_H}`);
		letPreviews();
	});

	await t.step('the image is a preview: an <img> from a blob: URL that decoded, its room reserved from w/h', async () => {
		const f = m.locator(`.file[data-file="${pngId}"]`);
		assert.equal(await f.getAttribute('data-kind'), 'image');
		const img = f.locator('img.thumb');
		const shown = await waitFor('the preview to load', () => img.evaluate((e) => e.complete && e.naturalWidth > 0 &&
			{ src: e.currentSrc, nw: e.naturalWidth, nh: e.naturalHeight, w: e.clientWidth, h: e.clientHeight }));
		assert.match(shown.src, /^blob:/, 'the preview is not from a blob: URL');
		// the box keeps the image's shape (240x160: 3:2)
		assert.ok(Math.abs(shown.w / shown.h - PNG_W / PNG_H) < 0.05, `the preview box is ${shown.w}x${shown.h}`);
	});

	await t.step('the text file shows its first lines in a monospace block', async () => {
		const f = m.locator(`.file[data-file="${txtId}"]`);
		assert.equal(await f.getAttribute('data-kind'), 'text');
		const snip = await f.locator('.snippet').innerText();
		assert.match(snip, /^\/\/ quarterly report generator\nfunction total\(rows\) \{/);
		const font = await f.locator('.snippet').evaluate((e) => getComputedStyle(e).fontFamily);
		assert.match(font, /mono/i);
	});

	await t.step('the binary is a chip: icon, name, size and a download button', async () => {
		const f = m.locator(`.file[data-file="${binId}"]`);
		assert.equal(await f.getAttribute('data-kind'), 'other');
		assert.match(await f.innerText(), /held-data\.bin[\s\S]*4\.9 KB/);
		await f.locator('button.download').waitFor();
	});

	await t.step('screenshot: bob\'s message list with the files', () => t.shot(B, 'list-with-files'));

	for (const [what, id, bytes] of [['binary', binId, bin], ['text file', txtId, text]])
		await t.step(`bob downloads the ${what}: the same bytes (sha256)`, async () => {
			const [dl] = await Promise.all([
				B.waitForEvent('download'),
				m.locator(`.file[data-file="${id}"] button.download`).click(),
			]);
			const file = await dl.path();
			const got = fs.readFileSync(file);
			assert.equal(got.length, bytes.length, `${what}: ${got.length} bytes downloaded, ${bytes.length} uploaded`);
			assert.equal(sha(got), sha(bytes), `${what}: the downloaded bytes differ`);
			assert.equal(dl.suggestedFilename(), what === 'binary' ? 'held-data.bin' : 'quarterly-notes.txt');
		});

	await t.step('the image opens full size; its bytes are the PNG', async () => {
		await m.locator(`.file[data-file="${pngId}"] button.preview`).click();
		const dlg = B.locator('dialog#dlg-image');
		await dlg.waitFor();
		const full = await waitFor('the full image', () => dlg.locator('img.full').evaluate((e) => e.complete && e.naturalWidth > 0 &&
			{ src: e.currentSrc, w: e.naturalWidth, h: e.naturalHeight }));
		assert.match(full.src, /^blob:/);
		assert.deepEqual([full.w, full.h], [PNG_W, PNG_H], 'the lightbox does not show the full image');
		// its pixels are the PNG's (lossless): a few of them, drawn on a
		// canvas (a blob: image is same-origin, so readable)
		const px = await dlg.locator('img.full').evaluate((e, pts) => {
			const c = document.createElement('canvas');
			c.width = e.naturalWidth;
			c.height = e.naturalHeight;
			const g = c.getContext('2d');
			g.drawImage(e, 0, 0);
			return pts.map(([x, y]) => [...g.getImageData(x, y, 1, 1).data.slice(0, 3)]);
		}, [[1, 1], [120, 80], [200, 30]]);
		assert.deepEqual(px, [[40, 30, 90], pngPixel(120, 80), pngPixel(200, 30)], 'the full image is not the uploaded PNG');
		await t.shot(B, 'lightbox');
		await B.keyboard.press('Escape');
		await dlg.waitFor({ state: 'detached' });
	});

	await t.step('the previews\' blob: URLs are revoked when the messages leave the page', async () => {
		const src = await m.locator(`.file[data-file="${pngId}"] img.thumb`).evaluate((e) => e.currentSrc);
		const loads = (page, url) => page.evaluate((u) => new Promise((res) => {
			const i = new Image();
			i.onload = () => res(true);
			i.onerror = () => res(false);
			i.src = u;
		}), url);
		assert.equal(await loads(B, src), true, 'the preview\'s blob: URL does not load while it is shown');
		await openChannel(B, r.more.random);
		await m.waitFor({ state: 'detached' });
		await waitFor('the blob: URL to be revoked', async () => !(await loads(B, src)));
		await openChannel(B, r.ch);
		await waitFor('the preview to load again', () => msg(B, seq).locator(`.file[data-file="${pngId}"] img.thumb`)
			.evaluate((e, old) => e.complete && e.naturalWidth > 0 && e.currentSrc.startsWith('blob:') && e.currentSrc !== old, src));
	});

	await t.step('a file over --max-file-mb: an error in the tray, and Send sends nothing', async () => {
		await A.locator('#compose-main input[type=file]').setInputFiles([
			{ name: 'too-big.bin', mimeType: 'application/octet-stream', buffer: big },
		]);
		const row = A.locator(`${tray} li.upload[data-name="too-big.bin"]`);
		await row.and(A.locator('[data-state="error"]')).waitFor();
		const why = await row.locator('.upload-error').innerText();
		log('the too-large upload says:', why);
		assert.match(why, /too large/i);
		await A.locator('#composer').fill('this must not be sent');
		await A.locator('#composer').press('Enter');
		assert.match(await A.locator('#compose-main .tray-note').innerText(), /could not be uploaded/i);
		assert.equal(await A.locator('#messages .msg.pending').count(), 0, 'a message was sent with a failed upload');
		assert.equal(await A.locator('#composer').inputValue(), 'this must not be sent', 'the text was taken');
		await t.shot(A, 'too-large');
	});

	await t.step('alice removes the failed file and sends text only: bob gets it next, nothing between', async () => {
		await A.locator(`${tray} li.upload[data-name="too-big.bin"] button.cancel`).click();
		await A.locator(tray).waitFor({ state: 'hidden' });
		await send(A, 'just text after the big one');
		const next = msg(B, seq + 1);
		await next.waitFor();
		assert.equal((await next.locator('.body').innerText()).trim(), 'just text after the big one');
		assert.equal(await next.locator('.file').count(), 0);
		assert.equal(await countWithBody(B, 'this must not be sent'), 0);
	});

	await t.step('cancelling an upload in flight removes it; the message goes without it', async () => {
		let release2;
		const gate2 = new Promise((res) => { release2 = res; });
		await A.route((u) => u.pathname === '/api/v1/files' && /^slow-/.test(u.searchParams.get('name') || ''),
			async (route) => { await gate2; await route.continue().catch(() => {}); });
		await A.locator('#compose-main input[type=file]').setInputFiles([
			{ name: 'slow-one.bin', mimeType: 'application/octet-stream', buffer: bin },
			{ name: 'kept.txt', mimeType: 'text/plain', buffer: Buffer.from('kept file\n') },
		]);
		await A.locator(`${tray} li.upload[data-name="kept.txt"][data-state="done"]`).waitFor();
		await A.locator(`${tray} li.upload[data-name="slow-one.bin"] button.cancel`).click();
		await A.locator(`${tray} li.upload[data-name="slow-one.bin"]`).waitFor({ state: 'detached' });
		release2();
		await send(A, 'one kept file');
		const l = msg(B, seq + 2);
		await l.waitFor();
		assert.equal((await l.locator('.body').innerText()).trim(), 'one kept file');
		await waitFor('one file on it', async () => (await l.locator('.file').count()) === 1);
		assert.match(await l.locator('.file').innerText(), /kept\.txt/);
	});

	await t.step('narrow window: the files fit the width (nothing sticks out)', async () => {
		await B.setViewportSize(NARROW);
		await msg(B, seq).scrollIntoViewIfNeeded();
		await waitFor('the preview', () => msg(B, seq).locator('img.thumb').evaluate((e) => e.complete && e.naturalWidth > 0));
		const over = await B.evaluate(() => {
			const sc = document.querySelector('#messages');
			return sc.scrollWidth - sc.clientWidth;
		});
		assert.ok(over <= 1, `the message list scrolls sideways by ${over} px`);
		await t.shot(B, 'narrow');
	});

	await t.step('search: a file\'s name finds its message; the hit shows the file as a chip', async () => {
		await B.setViewportSize(WIDE);
		// seeded as a script would: upload, then send with the id
		const c = await Client.connect(t.server, 'alice');
		const up = await uploadFile(t.server, 'alice', 'zanzibarquux-budget.txt', Buffer.from('budget: 12\n'));
		await c.send(r.ch, 'the numbers', { files: [up.id] });
		await c.close();
		await B.locator('input#search').fill('zanzibarquux');
		await B.locator('input#search').press('Enter');
		const hit = B.locator('#search-results .hit');
		await hit.first().waitFor();
		assert.equal(await hit.count(), 1);
		const chip = hit.locator(`.files .file[data-file="${up.id}"]`);
		await chip.waitFor();
		assert.match(await chip.innerText(), /zanzibarquux-budget\.txt[\s\S]*11 B/);
		await t.shot(B, 'search-hit');
	});
}, { server: { extra: ['--max-file-mb', '1'] } });
