// Small DOM and formatting helpers shared by the UI modules.

// el('div.msg', {dataset: {seq: 3}, onclick: f}, child, 'text', ...)
export function el(spec, props, ...kids) {
	const m = /^([a-z0-9]+)?(?:#([\w-]+))?((?:\.[\w-]+)*)$/i.exec(spec);
	const node = document.createElement(m[1] || 'div');
	if (m[2]) node.id = m[2];
	if (m[3]) node.className = m[3].slice(1).replace(/\./g, ' ');
	if (props && (typeof props !== 'object' || props instanceof Node || Array.isArray(props))) {
		kids.unshift(props);
		props = null;
	}
	for (const [k, v] of Object.entries(props || {})) {
		if (v === undefined || v === null || v === false) continue;
		if (k === 'dataset') Object.assign(node.dataset, v);
		else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
		else if (k in node && typeof v !== 'string') node[k] = v;
		else node.setAttribute(k, v === true ? '' : String(v));
	}
	append(node, kids);
	return node;
}

function append(node, kids) {
	for (const k of kids) {
		if (k === null || k === undefined || k === false) continue;
		if (Array.isArray(k)) append(node, k);
		else node.append(k instanceof Node ? k : String(k));
	}
}

export const $ = (sel, root = document) => root.querySelector(sel);

export function clear(node) {
	while (node.firstChild) node.firstChild.remove();
	return node;
}

const timeFmt = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
const dayFmt = new Intl.DateTimeFormat(undefined, { weekday: 'short', month: 'short', day: 'numeric' });
const fullFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });

export function timeOf(ms) {
	const d = new Date(ms);
	const today = new Date();
	if (d.toDateString() === today.toDateString()) return timeFmt.format(d);
	return `${dayFmt.format(d)} ${timeFmt.format(d)}`;
}

export const fullTime = (ms) => fullFmt.format(new Date(ms));

// A random id for cmids and the tab: 12 base-36 characters.
export function randomId(n = 12) {
	const a = crypto.getRandomValues(new Uint8Array(n));
	return Array.from(a, (b) => (b % 36).toString(36)).join('');
}

// Exponential backoff with full jitter: attempt 0, 1, 2... -> ms.
export function backoff(attempt, base = 500, cap = 30000) {
	const top = Math.min(cap, base * 2 ** Math.min(attempt, 16));
	return Math.round(top / 2 + Math.random() * (top / 2));
}

// The claims of a JWT, without checking it (the server does that).
export function jwtClaims(token) {
	try {
		const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
		const json = atob(part + '='.repeat((4 - (part.length % 4)) % 4));
		return JSON.parse(new TextDecoder().decode(Uint8Array.from(json, (c) => c.charCodeAt(0))));
	} catch {
		return null;
	}
}

// Notification levels (notify.set), loudest first.
export const LEVELS = ['all', 'mentions', 'none'];

// Words that mention everyone in the conversation ("@channel") or the
// members who are online ("@here"): sent as such in `mentions`.
export const BROADCASTS = ['@channel', '@here'];

// What a body mentions, for send's `mentions`: the user ids written as
// "@id" (ids are [A-Za-z0-9._-]{1,64}), and "@channel" / "@here" as
// themselves.
export function mentionsIn(body) {
	const out = new Set();
	for (const m of body.matchAll(/(^|[^\w@])@([A-Za-z0-9._-]{1,64})/g)) {
		const id = m[2].replace(/[.]+$/, '');
		if (!id) continue;
		out.add(BROADCASTS.includes(`@${id}`) ? `@${id}` : id);
	}
	return [...out].slice(0, 50);
}
