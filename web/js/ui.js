// The page around the message lists: sign-in, the top bar, the sidebar,
// the composer, dialogs, search results and notices. The hooks the browser
// tests use are listed in docs/web.md.

import { el, $, clear, timeOf, fullTime, LEVELS } from './util.js';
import { avatarOf, formatBody, markTerms } from './msglist.js';

// Notification levels (notify.set), as the dialogs say them.
const LEVEL_TEXT = { all: 'all messages', mentions: 'mentions only', none: 'nothing (muted)' };
const LEVEL_OPTION = {
	all: 'All messages',
	mentions: 'Only mentions of me, @channel and @here',
	none: 'Nothing (mute)',
};

const STATUS_TEXT = { online: 'online', away: 'away', dnd: 'do not disturb', offline: 'offline' };

const ago = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' });

export function agoText(ms) {
	const s = Math.round((ms - Date.now()) / 1000);
	if (s > -60) return 'just now';
	if (s > -3600) return ago.format(Math.round(s / 60), 'minute');
	if (s > -86400) return ago.format(Math.round(s / 3600), 'hour');
	if (s > -7 * 86400) return ago.format(Math.round(s / 86400), 'day');
	return `on ${new Date(ms).toLocaleDateString()}`;
}

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
			el('span.avatar.small', { dataset: { uavatar: client.me } }, avatarOf(client.me)),
			el('span.who', { dataset: { uname: client.me } }, client.me)));

	const side = el('nav#sidebar', { 'aria-label': 'Conversations' },
		el('div.ws', client.wsId),
		el('div.mine', presenceDot(client, client.me), el('span.who', { dataset: { uname: client.me } }, client.me), status,
			el('button#btn-prefs.link', { type: 'button', 'aria-haspopup': 'dialog', onclick: () => preferences(client) }, 'Preferences'),
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
		el('div.ch-head',
			el('div.ch-names', el('h1#ch-title'), el('span#ch-state'), el('div#ch-sub')),
			el('button#btn-notify.icon', { type: 'button', hidden: true, 'aria-haspopup': 'dialog', onclick: () => notifySettings(client, client.view?.ch) }),
			el('button#btn-settings.icon', { type: 'button', hidden: true, title: 'Channel settings', 'aria-label': 'Channel settings', onclick: () => channelSettings(client, client.view?.ch) }, '⚙'),
			el('button#btn-leave.link', { type: 'button', hidden: true }, 'Leave')),
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
			$('#btn-settings').hidden = ch.kind === 'dm';
			const bell = $('#btn-notify');
			// only with the server's settings (notify.get answered)
			bell.hidden = !client.notify;
			if (client.notify) {
				const level = client.levelOf(ch.id);
				const label = `Notifications: ${LEVEL_TEXT[level]}${client.notify.channels[ch.id] ? '' : ' (default)'}`;
				bell.textContent = level === 'none' ? '🔕' : '🔔';
				bell.title = label;
				bell.setAttribute('aria-label', label);
				bell.dataset.level = level;
			}
			const state = clear($('#ch-state'));
			if (ch.archived) state.append(el('span.tag.archived', 'Archived'));
			if (ch.post === 'owners') state.append(el('span.tag.announce', { title: 'Only owners post; everyone can react and reply in threads' }, 'Announcements'));
			api.subline();
			const blocked = client.postBlocked(ch);
			composer.disabled = !!blocked;
			composer.form.querySelector('.send').disabled = !!blocked;
			composer.placeholder = blocked || `Message ${ch.kind === 'dm' ? st.displayName(ch) : '#' + ch.name}`;
			composer.setAttribute('aria-label', blocked ? 'Message (not allowed here)' : composer.placeholder);
			$('#thread-composer').disabled = !!ch.archived;
			$('#thread-composer').form.querySelector('.send').disabled = !!ch.archived;
			$('#thread-composer').placeholder = ch.archived ? 'This channel is archived.' : 'Reply…';
			document.title = `${st.displayName(ch)} · parley`;
		},
		// Under the title: the topic, or for a DM with one person their
		// presence and last seen.
		subline() {
			const ch = st.channels.get(client.view?.ch);
			const sub = $('#ch-sub');
			if (!ch || !sub) return;
			const other = ch.kind === 'dm' && ch.members?.length === 2 && ch.members.find((u) => u !== client.me);
			if (other) {
				const p = st.presence.get(other);
				const seen = (p && p.status === 'offline' && p.since) || st.users.get(other)?.last_seen;
				sub.textContent = !p || p.status === 'offline'
					? (seen ? `Last seen ${agoText(seen)}` : 'Offline')
					: STATUS_TEXT[p.status] ? STATUS_TEXT[p.status][0].toUpperCase() + STATUS_TEXT[p.status].slice(1) : p.status;
				sub.dataset.user = other;
			} else {
				sub.textContent = ch.topic || '';
				delete sub.dataset.user;
			}
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
			if (t) for (const [u, exp] of t) if (exp > now) who.push(client.userName(u)); else t.delete(u);
			box.textContent = !who.length ? '' :
				who.length === 1 ? `${who[0]} is typing…` :
				who.length <= 3 ? `${who.join(', ')} are typing…` : 'Several people are typing…';
			if (client.conn.state === 'offline') api.connState();
		},
		// Display names learnt: every place that shows one of these users.
		names(ids) {
			for (const u of ids) {
				const name = st.nameOf(u);
				for (const e of document.querySelectorAll(`[data-uname="${CSS.escape(u)}"]`)) e.textContent = name;
				for (const e of document.querySelectorAll(`[data-uavatar="${CSS.escape(u)}"]`)) e.textContent = avatarOf(name);
			}
			renderSidebar(client);
			api.header();
			api.typing();
		},
		presence(user) {
			const p = st.presence.get(user);
			for (const d of document.querySelectorAll(`.presence[data-user="${CSS.escape(user)}"]`)) setDot(d, p);
			if ($('#ch-sub')?.dataset.user === user) api.subline();
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
				el('div.meta', el('span.author', { dataset: { uname: h.from } }, client.userName(h.from)), ' in ', el('span.where', ch ? st.displayName(ch) : h.ch), ' · ', el('time', { title: fullTime(h.ts) }, timeOf(h.ts))),
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
		// muted (level none): dimmed, unread not bold and not counted;
		// mentions still show
		const muted = client.muted(ch.id);
		const b = el('button', {
			type: 'button', dataset: muted ? { ch: ch.id, muted: 'true' } : { ch: ch.id },
			'aria-current': client.view?.ch === ch.id ? 'true' : null,
			class: [ch.unread && !muted ? 'unread-ch' : '', muted ? 'muted' : ''].join(' ').trim() || null,
			title: muted ? 'Muted' : null,
			onclick: () => client.openChannel(ch.id),
		});
		if (ch.kind === 'dm') {
			const other = (ch.members || []).find((u) => u !== client.me);
			b.append(other && ch.members.length === 2 ? presenceDot(client, other) : el('span.glyph', '👥'));
		} else b.append(el('span.glyph', ch.kind === 'private' ? '🔒' : '#'));
		b.append(el('span.name', st.displayName(ch)));
		if (muted) b.append(el('span.muted-mark', { role: 'img', 'aria-label': 'muted' }, '🔕'));
		if (ch.mentions) b.append(el('span.mentions', { 'aria-label': `${ch.mentions} mentions` }, String(ch.mentions)));
		if (ch.unread && !muted) b.append(el('span.unread', { 'aria-label': `${ch.unread} unread` }, String(ch.unread)));
		return el('li', b);
	};
	const focused = document.activeElement?.dataset?.ch;
	clear(chans).append(...all.filter((c) => c.kind !== 'dm').map(item));
	clear(dms).append(...all.filter((c) => c.kind === 'dm').map(item));
	if (focused) document.querySelector(`#sidebar [data-ch="${CSS.escape(focused)}"]`)?.focus();
	let unread = 0;
	for (const c of st.channels.values()) if (!client.muted(c.id)) unread += c.unread;
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
	// one submit at a time: a second Enter while the first is in flight
	// does nothing
	form.addEventListener('submit', (e) => {
		if (d.inFlight) e.stopImmediatePropagation();
	}, { capture: true });
	d.run = async (fn) => {
		if (d.inFlight) return;
		d.inFlight = true;
		const b = form.querySelector('button.primary');
		if (b) b.disabled = true;
		try {
			await fn();
		} finally {
			d.inFlight = false;
			if (b) b.disabled = false;
		}
	};
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
		await d.run(async () => { try {
			await client.createChannel(name.value.trim(), kind.value);
			d.close('ok');
		} catch (err) {
			if (err.code !== 'CONFLICT') {
				d.showError(err.message);
				return;
			}
			// the name is taken; a public channel can be joined instead
			const c = err.ch;
			d.showError(c ? `#${c.name} exists already. ` : 'A channel with this name exists already (names are unique, whatever the case).');
			if (c && !client.store.channels.has(c.id)) {
				d.querySelector('p.error').append(el('button.link', {
					type: 'button', dataset: { join: c.id },
					onclick: async () => {
						try {
							await client.joinChannel(c);
							d.close('ok');
						} catch (e2) {
							d.showError(e2.message);
						}
					},
				}, `Join #${c.name}`));
			} else if (c) {
				d.querySelector('p.error').append(el('button.link', { type: 'button', onclick: () => { d.close('ok'); client.openChannel(c.id); } }, `Open #${c.name}`));
			}
		} });
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

// A DM with one person or a few: pick people by searching their names
// or ids (users.search), or type ids separated by commas.
function newDm(client) {
	const picked = new Map(); // id -> name
	const chips = el('div.chips', { 'aria-live': 'polite' });
	const users = el('input', { name: 'users', autocomplete: 'off', placeholder: 'Search people by name or id', role: 'combobox', 'aria-expanded': 'false', 'aria-controls': 'dm-suggest', 'aria-autocomplete': 'list' });
	const list = el('ul#dm-suggest.suggest', { role: 'listbox', 'aria-label': 'People' });
	const d = dialog('dlg-new-dm', 'Direct message', [el('label', 'With', chips, users), list], { submit: 'Open' });
	const drawChips = () => {
		clear(chips);
		for (const [id, name] of picked)
			chips.append(el('span.chip', { dataset: { user: id } }, name === id ? id : `${name} (${id})`,
				el('button', { type: 'button', 'aria-label': `Remove ${name}`, onclick: () => { picked.delete(id); drawChips(); users.focus(); } }, '×')));
	};
	const pick = (u) => {
		picked.set(u.id, u.name || u.id);
		client.store.users.set(u.id, { name: u.name || u.id, last_seen: u.last_seen });
		users.value = '';
		clear(list);
		users.setAttribute('aria-expanded', 'false');
		drawChips();
		users.focus();
	};
	let seq = 0;
	let timer = null;
	users.addEventListener('input', () => {
		clearTimeout(timer);
		const q = users.value.trim();
		if (!q || /[,\s]/.test(q)) {
			clear(list);
			return;
		}
		timer = setTimeout(async () => {
			const mine = ++seq;
			let r;
			try {
				r = await client.req('users.search', { q: q.slice(0, 64), limit: 8 });
			} catch {
				return; // typing ids still works
			}
			if (mine !== seq) return;
			clear(list);
			for (const u of r.users.filter((x) => x.id !== client.me && !picked.has(x.id))) {
				list.append(el('li', { role: 'option' }, el('button', { type: 'button', dataset: { pick: u.id }, onclick: () => pick(u) },
					presenceDot(client, u.id), el('span.name', u.name || u.id), u.name && u.name !== u.id ? el('span.meta', u.id) : null)));
				if (u.status) client.store.presence.set(u.id, { status: u.status, since: 0 });
			}
			users.setAttribute('aria-expanded', String(!!list.children.length));
		}, 120);
	});
	users.addEventListener('keydown', (e) => {
		if (e.key === 'ArrowDown' && list.querySelector('button')) {
			e.preventDefault();
			list.querySelector('button').focus();
		}
	});
	list.addEventListener('keydown', (e) => {
		const items = [...list.querySelectorAll('button')];
		const i = items.indexOf(document.activeElement);
		if (e.key === 'ArrowDown' && items[i + 1]) { e.preventDefault(); items[i + 1].focus(); }
		if (e.key === 'ArrowUp') { e.preventDefault(); (items[i - 1] || users).focus(); }
	});
	d.form.addEventListener('submit', async (e) => {
		e.preventDefault();
		const typed = users.value.split(/[\s,]+/).filter(Boolean);
		const ids = [...new Set([...picked.keys(), ...typed])].filter((u) => u !== client.me);
		if (!ids.length) {
			d.showError('Name at least one other person.');
			return;
		}
		await d.run(async () => {
			try {
				await client.openDm(ids);
				d.close('ok');
			} catch (err) {
				d.showError(err.message);
			}
		});
	});
}

// Channel settings: what ch.info says; owners and admins change the name,
// topic, archived and announcement mode, and manage members.
async function channelSettings(client, chId) {
	const st = client.store;
	const ch = st.channels.get(chId);
	if (!ch || ch.kind === 'dm') return;
	// who may change what: from a fresh ch.info (a role change sends no frame)
	await client.loadInfo(chId);
	const mod = client.canModerate(chId);
	const name = el('input', { name: 'name', maxlength: 80, autocomplete: 'off', disabled: !mod });
	const topic = el('input', { name: 'topic', maxlength: 250, autocomplete: 'off', disabled: !mod, placeholder: 'What this channel is about' });
	const archived = el('input', { type: 'checkbox', name: 'archived', disabled: !mod });
	const post = el('select', { name: 'post', disabled: !mod },
		el('option', { value: 'all' }, 'Everyone can post'),
		el('option', { value: 'owners' }, 'Only owners post (announcements)'));
	const info = el('p.meta');
	const members = el('ul.members', { role: 'list' });
	const invite = el('input', { name: 'invite', autocomplete: 'off', placeholder: 'user ids, separated by commas' });
	const d = dialog('dlg-channel', `#${ch.name}`, [
		info,
		el('label', 'Name', name),
		el('label', 'Topic', topic),
		el('label.check', archived, 'Archived (read-only)'),
		el('label', 'Who can post', post),
		el('h3', 'Members'),
		members,
		el('div.invite', invite, el('button', { type: 'button', onclick: () => doInvite() }, 'Invite')),
	], { submit: mod ? 'Save' : null });
	let cur = null;
	const fill = (c) => {
		cur = c;
		name.value = c.name;
		topic.value = c.topic || '';
		archived.checked = !!c.archived;
		post.value = c.post || 'all';
		info.textContent = `${c.kind === 'private' ? 'Private' : 'Public'} channel · ${c.members} member${c.members === 1 ? '' : 's'} · ${mod ? (client.admin ? 'you are an admin' : 'you are an owner') : 'only owners change these'}`;
	};
	const drawMembers = async () => {
		clear(members);
		let r;
		try {
			r = await client.req('ch.members', { ch: chId, limit: 200 });
		} catch (err) {
			d.showError(err.message);
			return;
		}
		const owners = new Set(cur?.owners || []);
		for (const u of r.members) {
			const row = el('li', { dataset: { member: u } },
				presenceDot(client, u),
				el('span.name', { dataset: { uname: u } }, client.userName(u)),
				owners.has(u) ? el('span.role', 'owner') : null);
			if (mod && u !== client.me) {
				row.append(owners.has(u)
					? el('button', { type: 'button', dataset: { act: 'member' }, onclick: () => setRole(u, 'member') }, 'Make member')
					: el('button', { type: 'button', dataset: { act: 'owner' }, onclick: () => setRole(u, 'owner') }, 'Make owner'),
				el('button.danger', { type: 'button', dataset: { act: 'kick' }, onclick: () => kick(u) }, 'Remove'));
			}
			members.append(row);
		}
		if (r.more) members.append(el('li.meta', 'and more…'));
		// their status now (they are not all watched)
		try {
			const g = await client.req('users.get', { users: r.members.slice(0, 500) });
			for (const u of g.users) {
				if (u.id === client.me) continue;
				st.presence.set(u.id, { status: u.status, since: u.last_seen });
				for (const dot of members.querySelectorAll(`.presence[data-user="${CSS.escape(u.id)}"]`)) setDot(dot, st.presence.get(u.id));
			}
		} catch {
			/* dots stay as they were */
		}
	};
	const reload = async () => {
		const c = await client.loadInfo(chId);
		if (c) fill(c);
		await drawMembers();
	};
	const setRole = async (u, role) => {
		try {
			await client.req('ch.role', { ch: chId, user: u, role });
			await reload();
		} catch (err) {
			d.showError(err.code === 'CONFLICT' ? 'A channel keeps at least one owner.' : err.message);
		}
	};
	const kick = async (u) => {
		try {
			await client.req('ch.kick', { ch: chId, users: [u] });
			await reload();
		} catch (err) {
			d.showError(err.message);
		}
	};
	const doInvite = async () => {
		const ids = invite.value.split(/[\s,]+/).filter(Boolean);
		if (!ids.length) return;
		try {
			await client.req('ch.invite', { ch: chId, users: ids });
			invite.value = '';
			await reload();
		} catch (err) {
			d.showError(err.message);
		}
	};
	d.form.addEventListener('submit', async (e) => {
		e.preventDefault();
		if (!cur) return;
		const args = { ch: chId };
		if (name.value.trim() !== cur.name) args.name = name.value.trim();
		if (topic.value.trim() !== (cur.topic || '')) args.topic = topic.value.trim();
		if (archived.checked !== !!cur.archived) args.archived = archived.checked;
		if (post.value !== (cur.post || 'all')) args.post = post.value;
		if (Object.keys(args).length === 1) {
			d.close('ok');
			return;
		}
		try {
			const r = await client.req('ch.set', args);
			client.learnChannel(r.ch);
			d.close('ok');
		} catch (err) {
			d.showError(err.code === 'CONFLICT' ? 'Another channel has this name.' : err.message);
		}
	});
	try {
		await reload();
	} catch (err) {
		d.showError(err.message);
	}
}

// Notification level of one channel or DM (notify.set with ch). A
// conversation never set explicitly follows the default; "Default" is
// offered only then (the server has no way to unset a level).
function notifySettings(client, chId) {
	const st = client.store;
	const ch = st.channels.get(chId);
	if (!ch || !client.notify) return;
	const own = client.notify.channels[chId];
	const fallback = ch.kind === 'dm' ? 'all' : client.notify.default;
	const level = el('select', { name: 'level' },
		own ? null : el('option', { value: '' }, `Default: ${LEVEL_TEXT[fallback]}`),
		...LEVELS.map((l) => el('option', { value: l, selected: own === l }, LEVEL_OPTION[l])));
	const where = ch.kind === 'dm' ? st.displayName(ch) : `#${ch.name}`;
	const d = dialog('dlg-notify', `Notifications for ${where}`, [
		el('label', 'Notify me about', level),
		el('p.meta', ch.kind === 'dm'
			? 'Direct messages notify you of every message unless you choose otherwise here.'
			: 'Muted channels are dimmed in the sidebar; mentions of you still show there.'),
	], { submit: 'Save' });
	level.focus();
	d.form.addEventListener('submit', async (e) => {
		e.preventDefault();
		if (!level.value || level.value === own) {
			d.close('ok');
			return;
		}
		await d.run(async () => {
			try {
				await client.setNotify(level.value, chId);
				d.close('ok');
			} catch (err) {
				d.showError(err.message);
			}
		});
	});
}

// Preferences: the default notification level for channels (notify.set)
// and this browser's desktop notifications (asked for only from the
// button: a user gesture).
function preferences(client) {
	const n = client.notify;
	const def = el('select', { name: 'default', disabled: !n },
		...LEVELS.map((l) => el('option', { value: l, selected: (n?.default || 'mentions') === l }, LEVEL_OPTION[l])));
	const perm = el('p#desktop-state.meta', { 'aria-live': 'polite' });
	const ask = el('button#btn-desktop', { type: 'button' }, 'Enable desktop notifications');
	const onHere = el('input', { type: 'checkbox', name: 'desktop', checked: client.desktopOn() });
	const onLabel = el('label.check', onHere, 'Show them while parley is in a background tab');
	const draw = () => {
		const p = typeof Notification === 'undefined' ? 'unsupported' : Notification.permission;
		perm.textContent = {
			unsupported: 'This browser cannot show desktop notifications.',
			default: 'Desktop notifications are off in this browser.',
			granted: 'This browser may show desktop notifications.',
			denied: 'Desktop notifications are blocked for this site in your browser’s settings.',
		}[p] || p;
		perm.dataset.permission = p;
		ask.hidden = p !== 'default';
		onLabel.hidden = p !== 'granted';
	};
	ask.addEventListener('click', async () => {
		ask.disabled = true;
		try {
			await Notification.requestPermission();
		} catch {
			/* an old browser: the callback form; the state shows anyway */
		}
		ask.disabled = false;
		draw();
	});
	const d = dialog('dlg-prefs', 'Preferences', [
		el('h3', 'Notifications'),
		el('label', 'In channels, notify me about', def),
		el('p.meta', n
			? 'Each channel or direct message can differ: the bell in its header. Direct messages notify you of every message unless you choose otherwise there.'
			: 'This server does not keep notification settings.'),
		el('h3', 'Desktop notifications'),
		perm, ask, onLabel,
		el('p.meta', 'Shown while this tab is in the background, for the messages your settings allow, unless your status is “Do not disturb”. Notifications to your phone or by mail, when you are on no device, come from the server if its operator connected one.'),
	], { submit: 'Save' });
	draw();
	d.form.addEventListener('submit', async (e) => {
		e.preventDefault();
		client.setDesktop(onHere.checked);
		if (!n || def.value === client.notify?.default) {
			d.close('ok');
			return;
		}
		await d.run(async () => {
			try {
				await client.setNotify(def.value);
				d.close('ok');
			} catch (err) {
				d.showError(err.message);
			}
		});
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
