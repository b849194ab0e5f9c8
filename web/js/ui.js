// The page around the message lists: sign-in, the top bar, the sidebar,
// the composer, dialogs, search results and notices. The hooks the browser
// tests use are listed in docs/web.md.

import { el, $, clear, timeOf, fullTime } from './util.js';
import { avatarOf, formatBody, markTerms } from './msglist.js';

const STATUS_TEXT = { online: 'online', away: 'away', dnd: 'do not disturb', offline: 'offline' };

export function signIn(problem, done) {
	const app = clear($('#app'));
	app.className = 'signin-page';
	const area = el('textarea', { name: 'token', rows: 4, required: true, 'aria-label': 'Token', placeholder: 'eyJhbGciOiJIUzI1NiIs…', spellcheck: 'false' });
	const form = el('form#signin', { 'aria-labelledby': 'signin-title' },
		el('h1#signin-title', 'Sign in to parley'),
		el('p', 'Open the link your administrator gave you, or paste a token. An operator makes one with ',
			el('code', 'parleyd token --user ID --workspace WS --url'), '.'),
		problem ? el('p#signin-error', { role: 'alert' }, problem) : null,
		el('label', 'Token', area),
		el('button', { type: 'submit' }, 'Sign in'));
	form.addEventListener('submit', (e) => {
		e.preventDefault();
		if (area.value.trim()) done(area.value.trim());
	});
	app.append(form);
	area.focus();
}

export function layout(client) {
	const app = clear($('#app'));
	app.className = 'shell';
	const st = client.store;

	const search = el('input#search', { type: 'search', placeholder: 'Search messages', 'aria-label': 'Search messages', autocomplete: 'off' });
	const status = el('select#status', { 'aria-label': 'Your status' },
		...['online', 'away', 'dnd', 'invisible'].map((s) =>
			el('option', { value: s, selected: client.status === s }, s === 'dnd' ? 'Do not disturb' : s[0].toUpperCase() + s.slice(1))));
	status.addEventListener('change', () => client.setStatus(status.value));

	const top = el('header.top', { role: 'banner' },
		el('button#btn-menu', { type: 'button', 'aria-label': 'Show conversations', 'aria-controls': 'sidebar', 'aria-expanded': 'false' }, '☰'),
		el('span.brand', 'parley'),
		el('form.search', { role: 'search', onsubmit: (e) => { e.preventDefault(); const q = search.value.trim(); if (q) client.search(q); } }, search),
		el('span#conn', { role: 'status', 'aria-live': 'polite' }),
		el('span#me', { dataset: { user: client.me }, title: `${client.me} in ${client.wsId}` },
			el('span.avatar.small', avatarOf(client.me)), el('span.who', client.me)));

	const side = el('nav#sidebar', { 'aria-label': 'Conversations' },
		el('div.ws', client.wsId),
		el('div.mine', presenceDot(client, client.me), el('span.who', client.me), status,
			el('button#btn-signout.link', { type: 'button', onclick: () => client.signOut() }, 'Sign out')),
		el('div.sect', el('h2', 'Channels'),
			el('button#btn-browse.icon', { type: 'button', title: 'Browse channels', 'aria-label': 'Browse channels', onclick: () => browse(client) }, '⌕'),
			el('button#btn-new-channel.icon', { type: 'button', title: 'Create a channel', 'aria-label': 'Create a channel', onclick: () => newChannel(client) }, '+')),
		el('ul#list-channels', { role: 'list' }),
		el('div.sect', el('h2', 'Direct messages'),
			el('button#btn-new-dm.icon', { type: 'button', title: 'New direct message', 'aria-label': 'New direct message', onclick: () => newDm(client) }, '+')),
		el('ul#list-dms', { role: 'list' }));

	const composer = el('textarea#composer', { rows: 1, placeholder: 'Message', 'aria-label': 'Message' });
	const main = el('main#main',
		el('div.ch-head', el('h1#ch-title'), el('button#btn-leave.link', { type: 'button', hidden: true }, 'Leave')),
		el('div#messages', { role: 'log', 'aria-live': 'polite', tabindex: '-1' }),
		el('div#typing', { 'aria-live': 'polite' }),
		composeForm(client, composer, () => [client.view?.ch, 0]));

	const tcomp = el('textarea#thread-composer', { rows: 1, placeholder: 'Reply…', 'aria-label': 'Reply in thread' });
	const thread = el('aside#thread', { 'aria-label': 'Thread', hidden: true },
		el('div.panel-head', el('h2', 'Thread'),
			el('button#thread-close.icon', { type: 'button', 'aria-label': 'Close thread', onclick: () => client.closeThread() }, '×')),
		el('div#thread-messages', { role: 'log', 'aria-live': 'polite' }),
		composeForm(client, tcomp, () => [client.threadView?.ch, client.threadView?.thread]));

	const results = el('aside#search-panel', { 'aria-label': 'Search results', hidden: true },
		el('div.panel-head', el('h2#search-title', 'Search'),
			el('button#search-close.icon', { type: 'button', 'aria-label': 'Close search', onclick: () => { results.hidden = true; } }, '×')),
		el('ul#search-results', { role: 'list' }));

	const toasts = el('div#toasts', { role: 'alert', 'aria-live': 'assertive' });
	app.append(top, side, main, thread, results, toasts);

	const menu = $('#btn-menu');
	menu.addEventListener('click', () => {
		const open = !app.classList.contains('side-open');
		app.classList.toggle('side-open', open);
		menu.setAttribute('aria-expanded', String(open));
	});

	// keyboard: Ctrl/Cmd+K search, Alt+Up/Down switch conversations,
	// Escape closes the open panel
	document.addEventListener('keydown', (e) => {
		if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === 'k') {
			e.preventDefault();
			search.focus();
			search.select();
		} else if (e.altKey && (e.key === 'ArrowUp' || e.key === 'ArrowDown')) {
			e.preventDefault();
			const ids = [...document.querySelectorAll('#sidebar [data-ch]')].map((b) => b.dataset.ch);
			const i = ids.indexOf(client.view?.ch);
			const next = ids[(i + (e.key === 'ArrowUp' ? -1 : 1) + ids.length) % ids.length];
			if (next) client.openChannel(next);
		} else if (e.key === 'Escape' && !document.querySelector('dialog[open]')) {
			if (!$('#search-panel').hidden) $('#search-panel').hidden = true;
			else if (client.threadView) client.closeThread();
			else app.classList.remove('side-open');
		}
	});

	const api = {
		connState() {
			const s = client.conn.state;
			const c = $('#conn');
			c.dataset.state = s;
			let text = { open: 'Connected', connecting: 'Connecting…', offline: 'Offline' }[s];
			if (s === 'offline' && client.conn.retryAt) {
				const secs = Math.max(1, Math.round((client.conn.retryAt - Date.now()) / 1000));
				text = `Offline · retrying in ${secs} s`;
			}
			c.textContent = text;
			c.title = s === 'open' ? `Connected as ${client.me}` : 'Messages you send now are kept and sent when the connection is back.';
		},
		sidebar: () => renderSidebar(client),
		sidebarSoon() {
			if (api.sbTimer) return;
			api.sbTimer = requestAnimationFrame(() => {
				api.sbTimer = null;
				renderSidebar(client);
			});
		},
		header() {
			const ch = st.channels.get(client.view?.ch);
			const title = $('#ch-title');
			if (!ch) return;
			clear(title);
			title.append(ch.kind === 'dm' ? '' : ch.kind === 'private' ? '🔒 ' : '# ', st.displayName(ch));
			const leave = $('#btn-leave');
			leave.hidden = ch.kind === 'dm';
			leave.onclick = () => client.leave(ch.id);
			composer.placeholder = `Message ${ch.kind === 'dm' ? st.displayName(ch) : '#' + ch.name}`;
			composer.setAttribute('aria-label', composer.placeholder);
			document.title = `${st.displayName(ch)} · parley`;
		},
		noChannel() {
			clear($('#ch-title')).append('No conversations yet');
			clear($('#messages')).append(el('p.empty', 'Create a channel, browse the public ones, or start a direct message from the sidebar.'));
		},
		typing() {
			const box = $('#typing');
			const ch = client.view?.ch;
			const t = st.typing.get(ch);
			const now = Date.now();
			const who = [];
			if (t) for (const [u, exp] of t) if (exp > now) who.push(u); else t.delete(u);
			box.textContent = !who.length ? '' :
				who.length === 1 ? `${who[0]} is typing…` :
				who.length <= 3 ? `${who.join(', ')} are typing…` : 'Several people are typing…';
			if (client.conn.state === 'offline') api.connState();
		},
		presence(user) {
			const p = st.presence.get(user);
			for (const d of document.querySelectorAll(`.presence[data-user="${CSS.escape(user)}"]`)) setDot(d, p);
		},
		showThread(on) {
			$('#thread').hidden = !on;
			app.classList.toggle('thread-open', on);
			if (on) $('#search-panel').hidden = true;
		},
		searchResults(q, hits, partial, error) {
			const panel = $('#search-panel');
			const list = clear($('#search-results'));
			panel.hidden = false;
			if (client.threadView) client.closeThread();
			$('#search-title').textContent = error ? 'Search failed' : `${hits.length} result${hits.length === 1 ? '' : 's'} for “${q}”${partial ? ' (partial)' : ''}`;
			if (error) list.append(el('li.empty', error));
			for (const h of hits || []) {
				const ch = st.channels.get(h.ch);
				const body = el('div.body');
				formatBody(body, h.body, client.me);
				markTerms(body, q);
				list.append(el('li', el('button.hit', {
					type: 'button', dataset: { ch: h.ch, seq: h.seq },
					onclick: () => {
						if (matchMedia('(max-width: 720px)').matches) panel.hidden = true;
						client.jumpTo(h.ch, h.seq);
					},
				},
				el('div.meta', el('span.author', h.from), ' in ', el('span.where', ch ? st.displayName(ch) : h.ch), ' · ', el('time', { title: fullTime(h.ts) }, timeOf(h.ts))),
				body)));
			}
			if (hits && !hits.length) list.append(el('li.empty', 'Nothing found. Terms are ANDed; try fewer words, or word* for a prefix.'));
		},
		toast(text) {
			const t = el('div.toast', text);
			$('#toasts').append(t);
			setTimeout(() => t.remove(), 6000);
		},
		closeMenu() {
			app.classList.remove('side-open');
			menu.setAttribute('aria-expanded', 'false');
		},
		focusComposer() {
			if (!matchMedia('(max-width: 720px)').matches) composer.focus({ preventScroll: true });
		},
	};
	api.connState();
	return api;
}

function composeForm(client, area, target) {
	const send = () => {
		const [ch, thread] = target();
		const body = area.value.trim();
		if (!ch || !body) return;
		client.sendMsg(ch, body, thread);
		area.value = '';
		grow(area);
	};
	area.addEventListener('keydown', (e) => {
		if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
			e.preventDefault();
			send();
		} else if (e.key === 'ArrowUp' && !area.value) {
			// edit your last message
			const [ch, thread] = target();
			const v = thread ? client.threadView : client.view;
			const mine = v && [...v.msgs].reverse().find((m) => m.from === client.me && !m.deleted);
			const node = mine && v.els.get(mine.seq);
			if (node && ch) {
				e.preventDefault();
				v.editor(node, mine);
			}
		}
	});
	area.addEventListener('input', () => {
		grow(area);
		const [ch] = target();
		if (ch && area.value) client.typed(ch);
	});
	return el('form.compose', { onsubmit: (e) => { e.preventDefault(); send(); } },
		area, el('button.send', { type: 'submit', 'aria-label': 'Send' }, 'Send'));
}

function grow(area) {
	area.style.height = 'auto';
	area.style.height = `${Math.min(area.scrollHeight, 200)}px`;
}

function renderSidebar(client) {
	const st = client.store;
	const chans = $('#list-channels');
	const dms = $('#list-dms');
	if (!chans) return;
	const all = [...st.channels.values()].sort((a, b) => st.displayName(a).localeCompare(st.displayName(b)));
	const item = (ch) => {
		const b = el('button', {
			type: 'button', dataset: { ch: ch.id },
			'aria-current': client.view?.ch === ch.id ? 'true' : null,
			class: ch.unread ? 'unread-ch' : null,
			onclick: () => client.openChannel(ch.id),
		});
		if (ch.kind === 'dm') {
			const other = (ch.members || []).find((u) => u !== client.me);
			b.append(other && ch.members.length === 2 ? presenceDot(client, other) : el('span.glyph', '👥'));
		} else b.append(el('span.glyph', ch.kind === 'private' ? '🔒' : '#'));
		b.append(el('span.name', st.displayName(ch)));
		if (ch.mentions) b.append(el('span.mentions', { 'aria-label': `${ch.mentions} mentions` }, String(ch.mentions)));
		if (ch.unread) b.append(el('span.unread', { 'aria-label': `${ch.unread} unread` }, String(ch.unread)));
		return el('li', b);
	};
	const focused = document.activeElement?.dataset?.ch;
	clear(chans).append(...all.filter((c) => c.kind !== 'dm').map(item));
	clear(dms).append(...all.filter((c) => c.kind === 'dm').map(item));
	if (focused) document.querySelector(`#sidebar [data-ch="${CSS.escape(focused)}"]`)?.focus();
	let unread = 0;
	for (const c of st.channels.values()) unread += c.unread;
	const ch = st.channels.get(client.view?.ch);
	document.title = `${unread ? `(${unread}) ` : ''}${ch ? st.displayName(ch) + ' · ' : ''}parley`;
}

export function presenceDot(client, user) {
	const d = el('span.presence', { dataset: { user } });
	setDot(d, client.store.presence.get(user));
	return d;
}

function setDot(d, p) {
	const s = p ? (p.status === 'invisible' ? 'offline' : p.status) : 'offline';
	d.dataset.status = s;
	d.title = `${d.dataset.user}: ${STATUS_TEXT[s] || s}`;
	d.setAttribute('role', 'img');
	d.setAttribute('aria-label', d.title);
}

// ---- dialogs ---------------------------------------------------------------

function dialog(id, title, body, { submit } = {}) {
	document.getElementById(id)?.remove();
	const err = el('p.error', { role: 'alert' });
	const form = el('form', { method: 'dialog', novalidate: true }, el('h2', title), body, err,
		el('div.buttons',
			el('button', { type: 'button', value: 'cancel', onclick: () => d.close('cancel') }, submit ? 'Cancel' : 'Close'),
			submit ? el('button.primary', { type: 'submit', value: 'ok' }, submit) : null));
	const d = el(`dialog#${id}`, { 'aria-label': title }, form);
	document.body.append(d);
	d.addEventListener('close', () => d.remove());
	d.showError = (t) => { err.textContent = t; };
	d.form = form;
	d.showModal();
	return d;
}

function newChannel(client) {
	const name = el('input', { name: 'name', required: true, maxlength: 80, autocomplete: 'off', placeholder: 'e.g. design' });
	const kind = el('select', { name: 'kind' }, el('option', { value: 'public' }, 'Public: anyone in the workspace can join'),
		el('option', { value: 'private' }, 'Private: by invitation'));
	const d = dialog('dlg-new-channel', 'Create a channel', [el('label', 'Name', name), el('label', 'Who can join', kind)], { submit: 'Create' });
	d.form.addEventListener('submit', async (e) => {
		e.preventDefault();
		if (!name.value.trim()) {
			d.showError('A channel needs a name.');
			name.focus();
			return;
		}
		try {
			await client.createChannel(name.value.trim(), kind.value);
			d.close('ok');
		} catch (err) {
			d.showError(err.code === 'CONFLICT' ? 'A channel with this name exists already.' : err.message);
		}
	});
}

async function browse(client) {
	const list = el('ul.browse', { role: 'list' }, el('li.empty', 'Loading…'));
	const d = dialog('dlg-browse', 'Public channels', list);
	try {
		const r = await client.req('ch.list', {});
		clear(list);
		const open = r.channels.filter((c) => c.kind === 'public' && !c.member).sort((a, b) => a.name.localeCompare(b.name));
		if (!open.length) list.append(el('li.empty', 'You are in every public channel.'));
		for (const c of open) {
			list.append(el('li', el('span.name', `# ${c.name}`),
				el('button.primary', {
					type: 'button', dataset: { join: c.id },
					onclick: async () => {
						try {
							await client.joinChannel(c);
							d.close('ok');
						} catch (err) {
							d.showError(err.message);
						}
					},
				}, 'Join')));
		}
	} catch (err) {
		d.showError(err.message);
	}
}

function newDm(client) {
	const users = el('input', { name: 'users', required: true, autocomplete: 'off', placeholder: 'bob, carol' });
	const d = dialog('dlg-new-dm', 'Direct message', [el('label', 'With (user ids, separated by commas)', users)], { submit: 'Open' });
	d.form.addEventListener('submit', async (e) => {
		e.preventDefault();
		const ids = [...new Set(users.value.split(/[\s,]+/).filter(Boolean))].filter((u) => u !== client.me);
		if (!ids.length) {
			d.showError('Name at least one other person.');
			return;
		}
		try {
			await client.openDm(ids);
			d.close('ok');
		} catch (err) {
			d.showError(err.message);
		}
	});
}

export function confirm(text) {
	return new Promise((resolve) => {
		const d = dialog('dlg-confirm', 'Are you sure?', el('p', text), { submit: 'Delete' });
		d.querySelector('button.primary').value = 'ok';
		d.form.addEventListener('submit', (e) => {
			e.preventDefault();
			d.close('ok');
		});
		d.addEventListener('close', () => resolve(d.returnValue === 'ok'));
	});
}

export function editHistory(versions) {
	const list = el('ol.versions');
	versions.forEach((v, i) => {
		const body = el('div.body');
		formatBody(body, v.body, '');
		list.append(el('li', el('div.meta', i === 0 ? 'Original' : `Edit ${i}`, ' · ', el('time', fullTime(v.ts))), body));
	});
	dialog('dlg-history', 'Edit history', list);
}
