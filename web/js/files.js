// Files (issue 15): uploads from the composer (the paperclip, drag and
// drop, paste) with a tray of progress bars, and the files of messages:
// image previews, PDF first pages, text snippets, chips with a download.
//
// The file API wants `Authorization: Bearer`, which an <img src> or an
// <a href> cannot send. So every byte is fetched with the header and
// shown through an object URL (blob:), which the page's CSP allows
// (img-src blob:). Object URLs are counted by the messages that show
// them and revoked when the last one leaves the DOM (a message list
// keeps at most 300 messages; the rest are dropped, and their previews
// with them). A download fetches the whole file as a blob and saves it
// through an <a download>.

import { el, clear } from './util.js';

export const MAX_FILES = 10; // per message (send's `files`)
const API = '/api/v1/files';
// Types the server serves inline (everything else is an attachment).
const INLINE_IMAGES = ['image/png', 'image/jpeg', 'image/gif', 'image/webp'];
// An image without a server thumbnail is shown from its own bytes up to
// this size; beyond, it is a chip.
const FULL_IMAGE_PREVIEW_MAX = 2 * 1024 * 1024;
// Room kept for a preview: the thumbnail is at most 360 px on its longer
// side; shown at most this wide and high.
const PREVIEW_W = 360;
const PREVIEW_H = 280;
const PDF_H = 160;

export function humanSize(n) {
	if (!Number.isFinite(n) || n < 0) return '';
	if (n < 1024) return `${n} B`;
	const u = ['KB', 'MB', 'GB', 'TB'];
	let v = n;
	let i = -1;
	do {
		v /= 1024;
		i++;
	} while (v >= 1024 && i < u.length - 1);
	return `${v < 10 ? v.toFixed(1) : Math.round(v)} ${u[i]}`;
}

export function fileUrl(id, thumb = false) {
	return `${API}/${encodeURIComponent(id)}${thumb ? '/thumb' : ''}`;
}

// What a file is shown as: 'image', 'pdf', 'text' (with a snippet) or
// 'other'.
export function kindOf(f) {
	const t = (f.type || '').toLowerCase();
	if (t.startsWith('image/')) return 'image';
	if (t === 'application/pdf') return 'pdf';
	if (typeof f.snippet === 'string' && f.snippet.length) return 'text';
	return 'other';
}

function iconOf(f) {
	const t = (f.type || '').toLowerCase();
	if (t.startsWith('image/')) return '🖼';
	if (t === 'application/pdf') return '📕';
	if (t.startsWith('text/') || f.snippet) return '📄';
	if (t.startsWith('audio/')) return '🎵';
	if (t.startsWith('video/')) return '🎬';
	if (/zip|tar|gzip|compress|7z|rar/.test(t)) return '🗜';
	return '📎';
}

// The reason a file API answer failed, for people.
function httpReason(status, body) {
	let msg = '';
	try {
		msg = JSON.parse(body).msg || '';
	} catch {
		/* not JSON */
	}
	if (status === 413) return `Too large${msg ? `: ${msg}` : ''}`;
	if (status === 401) return 'Not signed in (the token was refused)';
	if (status === 404) return 'Not found (deleted, or not shared with you)';
	if (status === 507) return 'The server has no space left';
	if (status === 429) return 'Too many requests; try again';
	return msg ? `${msg} (${status})` : `The server said ${status}`;
}

// ---- blobs (object URLs counted by the elements that show them) -----------

export class Blobs {
	constructor(token) {
		this.token = token;
		this.map = new Map(); // url -> {refs, promise, objectUrl}
	}

	// A 503 with Retry-After is a cluster's host that has not copied the
	// bytes yet (docs/protocol.md, Files): asked again, 30 times at most.
	async fetchBlob(url) {
		for (let tries = 0; ; tries++) {
			const r = await fetch(url, { headers: { Authorization: `Bearer ${this.token()}` }, credentials: 'omit' });
			const wait = Number(r.headers.get('Retry-After'));
			if (r.status === 503 && wait > 0 && tries < 30) {
				await new Promise((ok) => setTimeout(ok, Math.min(wait, 5) * 1000));
				continue;
			}
			if (!r.ok) throw new Error(httpReason(r.status, await r.text().catch(() => '')));
			return r.blob();
		}
	}

	// An object URL for url's bytes, counted until release(url).
	acquire(url) {
		let e = this.map.get(url);
		if (!e) {
			e = { refs: 0, objectUrl: null };
			e.promise = this.fetchBlob(url).then((b) => {
				e.objectUrl = URL.createObjectURL(b);
				if (!e.refs) this.drop(url, e);
				return e.objectUrl;
			});
			e.promise.catch(() => this.map.get(url) === e && this.map.delete(url));
			this.map.set(url, e);
		}
		e.refs++;
		return e.promise;
	}

	release(url) {
		const e = this.map.get(url);
		if (!e) return;
		if (--e.refs <= 0) this.drop(url, e);
	}

	drop(url, e) {
		if (this.map.get(url) === e) this.map.delete(url);
		if (e.objectUrl) {
			URL.revokeObjectURL(e.objectUrl);
			e.objectUrl = null;
		}
	}

	// Releases what the elements under node hold (a message leaving the
	// DOM).
	releaseIn(node) {
		if (!node || !node.querySelectorAll) return;
		const held = node.matches?.('[data-blob]') ? [node] : [];
		for (const n of [...held, ...node.querySelectorAll('[data-blob]')]) {
			this.release(n.dataset.blob);
			delete n.dataset.blob;
		}
	}

	// How many object URLs are live (the tests look).
	get live() {
		let n = 0;
		for (const e of this.map.values()) if (e.objectUrl) n++;
		return n;
	}

	// Fetches the file and saves it under its name.
	async download(f) {
		const blob = await this.fetchBlob(fileUrl(f.id));
		const url = URL.createObjectURL(blob);
		const a = el('a', { href: url, download: f.name || 'file', hidden: true });
		document.body.append(a);
		a.click();
		a.remove();
		// the download has started from the blob; give it time to read
		setTimeout(() => URL.revokeObjectURL(url), 60000);
	}
}

// An <img> whose source is the first of urls that loads, fetched with the
// token; holds its object URL (data-blob) until released. onfail when
// none does.
function blobImg(client, urls, alt, onfail) {
	const img = el('img', { alt, decoding: 'async' });
	let at = 0;
	const next = (i) => {
		const url = urls[i];
		at = i;
		if (!url) {
			onfail?.();
			return;
		}
		img.dataset.blob = url;
		client.blobs.acquire(url).then((src) => {
			if (img.dataset.blob === url) img.src = src;
		}, () => {
			if (img.dataset.blob !== url) return; // left the page meanwhile
			client.blobs.release(url);
			delete img.dataset.blob;
			next(i + 1);
		});
	};
	// bytes that are not an image after all: the next source
	img.addEventListener('error', () => {
		const url = img.dataset.blob;
		if (!url || !img.getAttribute('src')) return;
		img.removeAttribute('src');
		client.blobs.release(url);
		delete img.dataset.blob;
		next(at + 1);
	});
	next(0);
	return img;
}

// ---- files of a message ------------------------------------------------------

// The box an image preview takes, from the image's own size (w, h), so
// the list does not jump when the thumbnail arrives.
function previewBox(f, maxW, maxH) {
	const w = f.w > 0 ? f.w : 4;
	const h = f.h > 0 ? f.h : 3;
	const s = Math.min(1, maxW / w, maxH / h);
	return { w: Math.max(24, Math.round(w * s)), h: Math.max(24, Math.round(h * s)) };
}

function metaLine(client, f) {
	return el('div.file-meta',
		el('span.file-name', { title: f.name }, f.name || 'file'),
		el('span.file-size', humanSize(f.size)),
		downloadButton(client, f));
}

function downloadButton(client, f) {
	const b = el('button.download', {
		type: 'button', dataset: { file: f.id },
		title: `Download ${f.name} (${humanSize(f.size)})`,
		'aria-label': `Download ${f.name}`,
		onclick: async (e) => {
			e.stopPropagation();
			if (b.disabled) return;
			b.disabled = true;
			b.setAttribute('aria-busy', 'true');
			try {
				await client.blobs.download(f);
			} catch (err) {
				client.toast(`Download of ${f.name} failed: ${err.message}`);
			} finally {
				b.disabled = false;
				b.removeAttribute('aria-busy');
			}
		},
	}, '⤓');
	return b;
}

function chip(client, f) {
	return el('div.file.chip-file', { dataset: { file: f.id, kind: 'other' } },
		el('span.file-icon', { 'aria-hidden': 'true' }, iconOf(f)),
		el('div.file-text',
			el('span.file-name', { title: f.name }, f.name || 'file'),
			el('span.file-size', `${humanSize(f.size)}${f.type ? ` · ${f.type}` : ''}`)),
		downloadButton(client, f));
}

// The sources of an image's preview, best first: the thumbnail (asked
// for even without `thumb`: a message sent right after its upload may
// precede the preview, and the server answers 404 when there is none),
// then, for the types a browser shows and a size worth fetching, the
// image itself.
function previewUrls(f) {
	const urls = [fileUrl(f.id, true)];
	if (INLINE_IMAGES.includes((f.type || '').toLowerCase()) && f.size <= FULL_IMAGE_PREVIEW_MAX) urls.push(fileUrl(f.id));
	return urls;
}

function imageFile(client, f) {
	const box = previewBox(f, PREVIEW_W, PREVIEW_H);
	const fig = el('figure.file.image', { dataset: { file: f.id, kind: 'image' } });
	const open = el('button.preview', {
		type: 'button',
		title: `${f.name} — open full size`,
		'aria-label': `Open ${f.name} full size`,
		// a type the browser cannot show (TIFF, HEIC...) is downloaded
		onclick: () => INLINE_IMAGES.includes((f.type || '').toLowerCase())
			? lightbox(client, f)
			: client.blobs.download(f).catch((e) => client.toast(`Download of ${f.name} failed: ${e.message}`)),
	});
	// the room, before the bytes come: the width and the image's shape
	// (a narrow window shrinks both together)
	open.style.width = `${box.w}px`;
	open.style.aspectRatio = `${box.w} / ${box.h}`;
	const img = blobImg(client, previewUrls(f), f.name, () => {
		// no preview after all: the chip
		fig.replaceWith(chip(client, f));
	});
	if (!(f.w > 0 && f.h > 0)) {
		// the shape was not known: take the image's own once it loads
		img.addEventListener('load', () => {
			if (img.naturalWidth && img.naturalHeight) open.style.aspectRatio = `${img.naturalWidth} / ${img.naturalHeight}`;
		}, { once: true });
	}
	img.classList.add('thumb');
	img.width = box.w;
	img.height = box.h;
	open.append(img);
	fig.append(open, el('figcaption', metaLine(client, f)));
	return fig;
}

function pdfFile(client, f) {
	const fig = el('figure.file.pdf', { dataset: { file: f.id, kind: 'pdf' } });
	// the first page (asked for even without `thumb`, as for images); an
	// icon in its place when there is none
	const box = previewBox(f.w && f.h ? f : { w: 210, h: 297 }, PDF_H, PDF_H);
	const frame = el('div.page');
	frame.style.width = `${box.w}px`;
	frame.style.height = `${box.h}px`;
	const img = blobImg(client, [fileUrl(f.id, true)], `First page of ${f.name}`,
		() => frame.replaceWith(el('span.file-icon', { 'aria-hidden': 'true' }, iconOf(f))));
	img.classList.add('thumb');
	img.width = box.w;
	img.height = box.h;
	frame.append(img);
	fig.append(frame);
	fig.append(el('figcaption', el('div.file-text',
		el('span.file-name', { title: f.name }, f.name || 'file.pdf'),
		el('span.file-size', `PDF · ${humanSize(f.size)}`)), downloadButton(client, f)));
	return fig;
}

function textFile(client, f) {
	const more = f.size > new TextEncoder().encode(f.snippet).length;
	return el('figure.file.text', { dataset: { file: f.id, kind: 'text' } },
		el('pre.snippet', { tabindex: '0', 'aria-label': `Start of ${f.name}` }, f.snippet + (more ? '\n…' : '')),
		el('figcaption', metaLine(client, f)));
}

// The files of one message, shown by kind.
export function renderFiles(client, files) {
	const box = el('div.files');
	for (const f of files || []) {
		if (!f || typeof f.id !== 'string') continue;
		const k = kindOf(f);
		if (k === 'image') box.append(imageFile(client, f));
		else if (k === 'pdf') box.append(pdfFile(client, f));
		else if (k === 'text') box.append(textFile(client, f));
		else box.append(chip(client, f));
	}
	return box;
}

// Chips without buttons (inside a search hit, which is a button itself;
// and a message still being sent).
export function fileChips(files) {
	return el('div.files.chips-only', ...(files || []).map((f) =>
		el('span.file.chip-file', { dataset: { file: f.id || '', kind: 'chip' } },
			el('span.file-icon', { 'aria-hidden': 'true' }, iconOf(f)),
			el('span.file-name', { title: f.name }, f.name || 'file'),
			el('span.file-size', humanSize(f.size)))));
}

// The full image in a dialog (Escape or the button closes it), with its
// download.
function lightbox(client, f) {
	document.getElementById('dlg-image')?.close();
	const url = fileUrl(f.id);
	const img = el('img.full', { alt: f.name });
	const status = el('p.meta', 'Loading…');
	const d = el('dialog#dlg-image', { 'aria-label': f.name },
		el('div.lightbox-head',
			el('span.file-name', f.name),
			el('span.file-size', humanSize(f.size)),
			downloadButton(client, f),
			el('button.icon.close', { type: 'button', 'aria-label': 'Close', onclick: () => d.close() }, '×')),
		status, img);
	d.addEventListener('click', (e) => {
		if (e.target === d) d.close(); // the backdrop
	});
	d.addEventListener('close', () => {
		client.blobs.release(url);
		d.remove();
	});
	document.body.append(d);
	d.showModal();
	client.blobs.acquire(url).then((src) => {
		status.remove();
		img.src = src;
	}, (e) => {
		status.textContent = `Could not load the image: ${e.message}`;
	});
}

// ---- uploads (the composer's tray) -------------------------------------------

// A file name for the query: 1-255 bytes of UTF-8, no NUL or '/'.
function safeName(name) {
	let n = String(name || '').replace(/[\0/]/g, '_').trim() || 'file';
	const enc = new TextEncoder();
	if (enc.encode(n).length > 255) {
		const dot = n.lastIndexOf('.');
		const ext = dot > 0 && n.length - dot <= 16 ? n.slice(dot) : '';
		let base = [...n.slice(0, n.length - ext.length)];
		while (base.length && enc.encode(base.join('') + ext).length > 255) base.pop();
		n = base.join('') + ext;
	}
	return n;
}

// POST /api/v1/files with progress. Returns {promise, abort}.
export function uploadFile(token, file, onprogress) {
	const xhr = new XMLHttpRequest();
	const promise = new Promise((resolve, reject) => {
		xhr.open('POST', `${API}?name=${encodeURIComponent(safeName(file.name))}`);
		xhr.setRequestHeader('Authorization', `Bearer ${token}`);
		xhr.upload.onprogress = (e) => onprogress(e.loaded, e.lengthComputable ? e.total : file.size);
		xhr.upload.onload = () => onprogress(file.size, file.size);
		xhr.onload = () => {
			if (xhr.status === 201 || xhr.status === 200) {
				try {
					resolve(JSON.parse(xhr.responseText));
				} catch {
					reject(new Error('The server answered without the file'));
				}
			} else reject(new Error(httpReason(xhr.status, xhr.responseText)));
		};
		xhr.onerror = () => reject(new Error('The upload failed (connection lost or refused; the file may be too large)'));
		xhr.onabort = () => reject(Object.assign(new Error('Cancelled'), { cancelled: true }));
		xhr.send(file);
	});
	return { promise, abort: () => xhr.abort() };
}

// The composer's attachments: a tray of uploads. Each item:
// {key, file, state: 'uploading'|'done'|'error', loaded, total, result,
//  error, up}. onchange() after every change; ondone() when the last
// upload in flight ends.
export class Tray {
	constructor(client, { onchange }) {
		this.client = client;
		this.items = [];
		this.onchange = onchange;
		this.nextKey = 1;
		this.node = el('ul.tray', { 'aria-label': 'Attachments', hidden: true });
		this.note = el('p.tray-note', { 'aria-live': 'polite' });
	}

	get busy() {
		return this.items.some((i) => i.state === 'uploading');
	}

	get failed() {
		return this.items.filter((i) => i.state === 'error');
	}

	get ready() {
		return this.items.filter((i) => i.state === 'done');
	}

	// Adds files (a FileList or array) and starts their uploads; refuses
	// beyond MAX_FILES in all.
	add(files) {
		const list = [...files];
		const room = MAX_FILES - this.items.length;
		if (list.length > room) {
			this.say(`At most ${MAX_FILES} files per message: ${list.length - Math.max(room, 0)} not added.`);
			list.splice(Math.max(room, 0));
		} else this.say('');
		for (const file of list) {
			const it = { key: this.nextKey++, file, state: 'uploading', loaded: 0, total: file.size };
			this.items.push(it);
			this.start(it);
		}
		this.render();
	}

	start(it) {
		it.state = 'uploading';
		it.error = null;
		it.loaded = 0;
		it.up = uploadFile(this.client.conn.token, it.file, (loaded, total) => {
			it.loaded = loaded;
			it.total = total;
			this.progress(it);
		});
		it.up.promise.then((r) => {
			if (!this.items.includes(it)) return;
			it.state = 'done';
			it.result = r;
			it.loaded = it.total;
		}, (e) => {
			if (!this.items.includes(it)) return;
			it.state = 'error';
			it.error = e.message;
		}).finally(() => {
			it.up = null;
			if (!this.items.includes(it)) return;
			this.render();
			this.onchange();
		});
	}

	remove(it) {
		const i = this.items.indexOf(it);
		if (i < 0) return;
		this.items.splice(i, 1);
		if (it.up) it.up.abort();
		this.render();
		this.onchange();
	}

	// The uploaded files, for send (and the tray emptied).
	take() {
		const files = this.ready.map((i) => ({ id: i.result.id, name: i.result.name ?? i.file.name, size: i.result.size ?? i.file.size, type: i.result.type || '' }));
		this.items = this.items.filter((i) => i.state !== 'done');
		this.render();
		return files;
	}

	say(text) {
		this.note.textContent = text;
		this.note.hidden = !text;
	}

	progress(it) {
		const row = this.node.querySelector(`li[data-key="${it.key}"]`);
		if (!row) return;
		const bar = row.querySelector('progress');
		if (bar) {
			bar.max = it.total || 1;
			bar.value = Math.min(it.loaded, it.total || 1);
		}
		const pct = row.querySelector('.pct');
		if (pct) pct.textContent = pctOf(it);
	}

	render() {
		const tray = clear(this.node);
		tray.hidden = !this.items.length;
		for (const it of this.items) {
			const name = it.file.name || 'file';
			const row = el('li.upload', { dataset: { key: it.key, state: it.state, name } },
				el('span.file-icon', { 'aria-hidden': 'true' }, iconOf({ type: it.file.type, name })),
				el('div.upload-main',
					el('div.upload-line',
						el('span.file-name', { title: name }, name),
						el('span.file-size', humanSize(it.file.size)),
						it.state === 'uploading' ? el('span.pct', pctOf(it)) : null,
						it.state === 'done' ? el('span.ok', { 'aria-label': 'uploaded' }, '✓') : null),
					it.state === 'uploading'
						? el('progress', { max: it.total || 1, value: Math.min(it.loaded, it.total || 1), 'aria-label': `Uploading ${name}` })
						: null,
					it.state === 'error' ? el('div.upload-error', { role: 'alert' }, it.error) : null),
				it.state === 'error' && !/^Too large/.test(it.error || '')
					? el('button.retry.link', { type: 'button', onclick: () => { this.start(it); this.render(); this.onchange(); } }, 'Retry')
					: null,
				el('button.cancel.icon', {
					type: 'button',
					title: it.state === 'uploading' ? 'Cancel the upload' : 'Remove',
					'aria-label': `${it.state === 'uploading' ? 'Cancel the upload of' : 'Remove'} ${name}`,
					onclick: () => this.remove(it),
				}, '×'));
			tray.append(row);
		}
	}
}

function pctOf(it) {
	if (!it.total) return '';
	return `${Math.floor((100 * Math.min(it.loaded, it.total)) / it.total)}%`;
}

// Whether a drag carries files (not text or a link dragged in the page).
export function dragHasFiles(e) {
	const t = e.dataTransfer?.types;
	return !!t && [...t].includes('Files');
}
