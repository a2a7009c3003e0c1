// The upload page: pick or drop photos, each uploaded in its own request (the
// first creates the session, the rest join it, a few at a time), then pay.
'use strict';

(function () {
  const {$, el, api, ApiError, fileErrorMessage, money, fileSize, plural, when, say, thumbnail} = window.RC;

  const STORAGE_KEY = 'restoreclick.upload_session';
  const PARALLEL = 3;

  const ui = {
    input: $('#files'),
    zone: $('#dropzone'),
    list: $('#photos'),
    section: $('#photos-section'),
    message: $('#message'),
    announcer: $('#announcer'),
    form: $('#checkout'),
    price: $('#price'),
    email: $('#email'),
    pay: $('#pay'),
    expiry: $('#expiry'),
    options: $('#options'),
    optionList: $('#option-list'),
    priceLines: $('#price-lines'),
  };

  const state = {
    session: null, // ups_… once the first upload succeeded
    view: null, // the latest session view
    entries: [], // one per card, in display order
    queue: [], // entries waiting to upload
    active: 0, // uploads in flight
    paying: false,
    pricing: null, // GET /api/pricing: the price per photo, the options and the limits
    chosen: new Set(), // option ids chosen for every photo
  };
  let nextKey = 1;

  // ---- session ---------------------------------------------------------------

  function remember(sessionId) {
    try {
      if (sessionId) localStorage.setItem(STORAGE_KEY, sessionId);
      else localStorage.removeItem(STORAGE_KEY);
    } catch (_) { /* storage may be off; the URL still carries the session */ }
    const url = sessionId ? '/?session_id=' + encodeURIComponent(sessionId) : '/';
    history.replaceState(null, '', url);
  }

  function adopt(view) {
    if (!view || !view.session_id) return;
    if (state.session !== view.session_id) {
      state.session = view.session_id;
      remember(view.session_id);
    }
    state.view = view;
  }

  /** The session is gone (expired, unknown or paid elsewhere): start a new one. */
  function restartSession(reason, reupload) {
    state.session = null;
    state.view = null;
    remember(null);
    for (const entry of state.entries.slice()) {
      if (entry.state === 'error' || entry.state === 'uploading') continue;
      if (entry.file && (reupload || !entry.fileId)) {
        entry.fileId = null;
        entry.state = 'queued';
        if (!state.queue.includes(entry)) state.queue.push(entry);
        updateCard(entry);
      } else {
        dropEntry(entry);
      }
    }
    if (reason) say(ui.message, reason, 'info');
  }

  // ---- options ---------------------------------------------------------------

  const UPSCALES = ['upscale_2x', 'upscale_4x'];

  function offer(id) {
    const options = (state.pricing && state.pricing.options) || [];
    return options.find((o) => o.id === id && o.available) || null;
  }

  function renderOptions() {
    const options = (state.pricing && state.pricing.options) || [];
    const currency = state.pricing && state.pricing.currency;
    ui.optionList.replaceChildren(...options.map((o) => {
      const id = 'option-' + o.id;
      const input = el('input', {type: 'checkbox', id, name: 'option', value: o.id,
        disabled: !o.available, 'aria-describedby': id + '-hint'});
      input.checked = state.chosen.has(o.id);
      input.addEventListener('change', () => {
        if (input.checked) {
          state.chosen.add(o.id);
          // A photo is upscaled once: the two sizes exclude each other.
          for (const other of UPSCALES.filter((u) => u !== o.id && UPSCALES.includes(o.id))) {
            state.chosen.delete(other);
            const box = $('#option-' + other);
            if (box) box.checked = false;
          }
        } else {
          state.chosen.delete(o.id);
        }
        for (const entry of state.entries) updateCard(entry);
        refresh();
      });
      const price = `+${money(o.unit_amount, currency)} per photo`;
      return el('div', {class: 'option' + (o.available ? '' : ' unavailable')},
        input,
        el('label', {for: id}, el('strong', {text: o.label}), ' ', el('span', {class: 'muted', text: price})),
        el('p', {class: 'muted hint', id: id + '-hint',
          text: o.available ? o.description : `${o.description} Not offered here yet.`}));
    }));
    ui.options.hidden = options.length === 0;
  }

  /** Whether a photo is colourised: its own toggle, else the choice for every photo. */
  function colourised(entry) {
    if (!offer('colorize')) return false;
    return entry.colour === undefined || entry.colour === null ? state.chosen.has('colorize') : entry.colour;
  }

  /** The option ids one photo gets. */
  function optionsOf(entry) {
    const ids = [...state.chosen].filter((id) => id !== 'colorize' && offer(id));
    if (colourised(entry)) ids.push('colorize');
    return ids;
  }

  /**
   * Whether a photo looks black-and-white or toned (sepia): every pixel has
   * nearly the same tint. Read off the thumbnail, scaled down; a photo the
   * browser cannot draw is not judged.
   */
  function looksMonochrome(img) {
    try {
      const side = 48;
      const canvas = document.createElement('canvas');
      canvas.width = side;
      canvas.height = side;
      const ctx = canvas.getContext('2d', {willReadFrequently: true});
      ctx.drawImage(img, 0, 0, side, side);
      const data = ctx.getImageData(0, 0, side, side).data;
      let n = 0; let sa = 0; let sb = 0; let saa = 0; let sbb = 0;
      for (let i = 0; i < data.length; i += 4) {
        const a = data[i] - data[i + 1];
        const b = data[i + 1] - data[i + 2];
        n += 1; sa += a; sb += b; saa += a * a; sbb += b * b;
      }
      const spread = Math.sqrt(Math.max(0, saa / n - (sa / n) ** 2) + Math.max(0, sbb / n - (sb / n) ** 2));
      return spread < 10;
    } catch (_) {
      return false;
    }
  }

  // ---- cards -----------------------------------------------------------------

  function sourceOf(entry) {
    if (entry.file) return entry.objectUrl || (entry.objectUrl = URL.createObjectURL(entry.file));
    return `/api/upload/${encodeURIComponent(state.session)}/files/${encodeURIComponent(entry.fileId)}`;
  }

  function makeCard(entry) {
    const parts = {
      name: el('p', {class: 'name'}),
      details: el('p', {class: 'details'}),
      status: el('p', {class: 'state'}),
      bar: el('progress', {class: 'bar', max: 1, hidden: true}),
      error: el('p', {class: 'error', hidden: true}),
      remove: el('button', {type: 'button', class: 'button small remove'}),
      colour: el('input', {type: 'checkbox', class: 'colour', id: 'colour-' + entry.key}),
      colourLabel: el('label', {for: 'colour-' + entry.key}),
      colourRow: el('p', {class: 'colour-row', hidden: true}),
      suggestion: el('span', {class: 'suggestion', hidden: true, text: 'Looks black-and-white: colourising suits it.'}),
    };
    parts.remove.addEventListener('click', () => removeEntry(entry));
    parts.colour.addEventListener('change', () => {
      entry.colour = parts.colour.checked;
      refresh();
    });
    parts.colourRow.append(parts.colour, parts.colourLabel, ' ', parts.suggestion);
    const thumb = thumbnail(sourceOf(entry), entry.name, 'Photo ' + entry.name);
    const img = thumb.querySelector('img');
    if (img) {
      img.addEventListener('load', () => {
        entry.monochrome = looksMonochrome(img);
        updateCard(entry);
      }, {once: true});
    }
    const node = el('li', {class: 'photo', dataset: {key: entry.key}},
      thumb,
      el('div', {class: 'meta'}, parts.name, parts.details, parts.status, parts.bar, parts.error, parts.colourRow),
      el('div', {class: 'actions'}, parts.remove));
    entry.node = node;
    entry.parts = parts;
    updateCard(entry);
    return node;
  }

  function updateCard(entry) {
    const {node, parts} = entry;
    if (!node) return;
    node.dataset.state = entry.state;
    if (entry.fileId) node.dataset.fileId = entry.fileId;
    else delete node.dataset.fileId;
    parts.name.textContent = entry.name;
    parts.name.title = entry.name;
    const dims = entry.width ? ` · ${entry.width} × ${entry.height} px` : '';
    parts.details.textContent = fileSize(entry.bytes) + dims;
    const labels = {
      queued: 'Waiting to upload…',
      uploading: 'Uploading…',
      ready: 'Ready',
      removing: 'Removing…',
      error: 'Not uploaded',
    };
    parts.status.textContent = labels[entry.state];
    const showBar = entry.state === 'uploading';
    parts.bar.hidden = !showBar;
    if (showBar && entry.progress !== undefined) parts.bar.value = entry.progress;
    else parts.bar.removeAttribute('value');
    parts.bar.setAttribute('aria-label', 'Uploading ' + entry.name);
    parts.error.hidden = entry.state !== 'error';
    parts.error.textContent = entry.state === 'error' ? entry.error : '';
    const isError = entry.state === 'error';
    parts.remove.textContent = isError ? 'Dismiss' : 'Remove';
    parts.remove.setAttribute('aria-label', (isError ? 'Dismiss the error for ' : 'Remove ') + entry.name);
    parts.remove.disabled = entry.state === 'uploading' || entry.state === 'removing';
    const colorize = offer('colorize');
    parts.colourRow.hidden = !colorize || isError;
    if (colorize) {
      parts.colour.checked = colourised(entry);
      const label = `Colourise this photo (+${money(colorize.unit_amount, state.pricing.currency)})`;
      parts.colourLabel.textContent = label;
      parts.colour.setAttribute('aria-label', `${label}: ${entry.name}`);
      parts.suggestion.hidden = !entry.monochrome || parts.colour.checked;
    }
    node.dataset.monochrome = entry.monochrome ? 'true' : 'false';
  }

  function addEntry(entry) {
    entry.key = nextKey++;
    state.entries.push(entry);
    ui.list.append(makeCard(entry));
    ui.section.hidden = false;
    return entry;
  }

  function dropEntry(entry) {
    const i = state.entries.indexOf(entry);
    if (i >= 0) state.entries.splice(i, 1);
    const q = state.queue.indexOf(entry);
    if (q >= 0) state.queue.splice(q, 1);
    if (entry.node) entry.node.remove();
    if (entry.objectUrl) URL.revokeObjectURL(entry.objectUrl);
    ui.section.hidden = state.entries.length === 0;
  }

  /** Puts the keyboard focus somewhere sensible after a card goes away. */
  function focusAfter(index) {
    const next = state.entries[index] || state.entries[index - 1];
    if (next && next.parts && !next.parts.remove.disabled) next.parts.remove.focus();
    else ui.input.focus();
  }

  // ---- uploading ---------------------------------------------------------------

  function send(entry) {
    return new Promise((resolve, reject) => {
      const form = new FormData();
      if (state.session) form.append('session_id', state.session);
      form.append('files', entry.file, entry.name);
      const xhr = new XMLHttpRequest();
      xhr.open('POST', '/api/upload');
      xhr.setRequestHeader('accept', 'application/json');
      xhr.upload.addEventListener('progress', (e) => {
        if (!e.lengthComputable) return;
        entry.progress = e.loaded / e.total;
        updateCard(entry);
      });
      xhr.addEventListener('load', () => {
        let body = null;
        try { body = JSON.parse(xhr.responseText); } catch (_) { /* not JSON */ }
        if (xhr.status >= 200 && xhr.status < 300 && body) return resolve(body);
        const error = body && body.error;
        if (error) return reject(new ApiError(xhr.status, error.code, error.message, error.details));
        reject(new ApiError(xhr.status, 'http_' + xhr.status, xhr.status === 413
          ? 'This file is too large.' : `The upload failed (HTTP ${xhr.status}). Please try again.`));
      });
      xhr.addEventListener('error', () =>
        reject(new ApiError(0, 'network', 'Cannot reach the shop. Check your connection and try again.')));
      xhr.send(form);
    });
  }

  /** The file of the session view that this upload created. */
  function claim(view, entry) {
    const taken = new Set(state.entries.map((e) => e.fileId).filter(Boolean));
    const free = view.files.filter((f) => !taken.has(f.id));
    return free.find((f) => f.filename === entry.name && f.bytes === entry.bytes)
      || free.find((f) => f.bytes === entry.bytes)
      || free[free.length - 1];
  }

  const sessionGone = (e) => e.status === 404 || e.status === 410 || e.code === 'session_paid';

  async function uploadOne(entry) {
    const usedSession = state.session;
    entry.state = 'uploading';
    entry.progress = undefined;
    updateCard(entry);
    try {
      const view = await send(entry);
      if (!state.entries.includes(entry)) return;
      adopt(view);
      const file = claim(view, entry);
      if (file) {
        entry.fileId = file.id;
        entry.name = file.filename;
        entry.width = file.width;
        entry.height = file.height;
        entry.bytes = file.bytes;
      }
      entry.state = 'ready';
      updateCard(entry);
    } catch (e) {
      if (!state.entries.includes(entry)) return;
      if (usedSession && sessionGone(e)) {
        entry.state = 'queued';
        updateCard(entry);
        state.queue.unshift(entry);
        if (state.session === usedSession) {
          restartSession(e.code === 'session_paid'
            ? 'Your earlier photos are already paid for, so these go into a new order.'
            : 'Your earlier upload had expired, so your photos are being uploaded again.', e.code !== 'session_paid');
        }
        return;
      }
      entry.state = 'error';
      entry.error = fileErrorMessage(e);
      updateCard(entry);
      ui.announcer.textContent = `${entry.name} was not uploaded: ${entry.error}`;
    }
  }

  function pump() {
    while (state.queue.length && state.active < (state.session ? PARALLEL : 1)) {
      const entry = state.queue.shift();
      state.active += 1;
      uploadOne(entry).finally(() => {
        state.active -= 1;
        pump();
        if (!state.active && !state.queue.length) settle();
      });
    }
    refresh();
  }

  /** All uploads are done: fetch the session once more so the price is exact. */
  async function settle() {
    if (state.session) {
      try {
        const view = await api('/api/upload/' + encodeURIComponent(state.session));
        if (!state.active && !state.queue.length) reconcile(view);
      } catch (_) { /* keep the last view */ }
    }
    const ready = state.entries.filter((e) => e.state === 'ready').length;
    const failed = state.entries.filter((e) => e.state === 'error').length;
    ui.announcer.textContent = `${plural(ready, 'photo', 'photos')} ready to restore.`
      + (failed ? ` ${plural(failed, 'file was', 'files were')} not uploaded.` : '');
    refresh();
  }

  /** Makes the cards match a session view (files removed or added elsewhere, a reload). */
  function reconcile(view) {
    adopt(view);
    const ids = new Set(view.files.map((f) => f.id));
    for (const entry of state.entries.slice()) {
      if (entry.fileId && !ids.has(entry.fileId) && entry.state === 'ready') dropEntry(entry);
    }
    const known = new Set(state.entries.map((e) => e.fileId).filter(Boolean));
    for (const f of view.files) {
      if (known.has(f.id)) continue;
      addEntry({file: null, fileId: f.id, name: f.filename, bytes: f.bytes, width: f.width, height: f.height,
        state: 'ready'});
    }
    refresh();
  }

  function addFiles(files) {
    const list = Array.from(files || []);
    if (!list.length) return;
    for (const file of list) {
      const entry = addEntry({file, name: file.name || 'photo', bytes: file.size, state: 'queued'});
      state.queue.push(entry);
    }
    say(ui.message, '');
    ui.announcer.textContent = `Uploading ${plural(list.length, 'photo', 'photos')}…`;
    pump();
  }

  async function removeEntry(entry) {
    const index = state.entries.indexOf(entry);
    if (entry.state === 'error' || entry.state === 'queued' || !entry.fileId) {
      dropEntry(entry);
      focusAfter(index);
      refresh();
      return;
    }
    entry.state = 'removing';
    updateCard(entry);
    try {
      const view = await api(`/api/upload/${encodeURIComponent(state.session)}/files/${encodeURIComponent(entry.fileId)}`,
        {method: 'DELETE'});
      dropEntry(entry);
      adopt(view);
      ui.announcer.textContent = `Removed ${entry.name}.`;
    } catch (e) {
      if (e.status === 404) {
        dropEntry(entry);
      } else {
        entry.state = 'ready';
        updateCard(entry);
        say(ui.message, `Could not remove ${entry.name}: ${e.message}`, 'error');
      }
    }
    focusAfter(index);
    refresh();
  }

  // ---- price and payment -------------------------------------------------------

  function refresh() {
    const view = state.view;
    const busy = state.active > 0 || state.queue.length > 0;
    const count = view ? view.files.length : 0;
    ui.priceLines.hidden = true;
    if (view && count > 0) {
      const p = view.price;
      const lines = optionLines(view);
      if (lines.length) {
        const total = p.amount_total + lines.reduce((sum, l) => sum + l.amount, 0);
        ui.price.textContent = `${plural(p.quantity, 'photo', 'photos')}: ${money(total, p.currency)} in all`;
        ui.priceLines.replaceChildren(
          el('li', {text: `Repair × ${p.quantity}: ${money(p.amount_total, p.currency)}`}),
          ...lines.map((l) => el('li', {text: `${l.label} × ${l.quantity}: ${money(l.amount, p.currency)}`})));
        ui.priceLines.hidden = false;
      } else {
        ui.price.textContent = `${plural(p.quantity, 'photo', 'photos')} × ${money(p.unit_amount, p.currency)}`
          + ` = ${money(p.amount_total, p.currency)}`;
      }
    } else if (busy) {
      ui.price.textContent = 'Uploading your photos…';
    } else {
      const p = state.pricing;
      ui.price.textContent = p ? `No photos yet · ${money(p.unit_amount, p.currency)} per photo.` : 'No photos yet.';
    }
    ui.price.classList.toggle('empty', count === 0);
    ui.expiry.textContent = view && count > 0
      ? `Unpaid photos are kept until ${when(view.expires_at)}.` : '';
    ui.pay.disabled = state.paying || busy || count === 0;
    ui.pay.title = busy ? 'Wait for the uploads to finish' : '';
  }

  /** One line per chosen option: how many of the session's photos get it, and what that adds. */
  function optionLines(view) {
    const ready = state.entries.filter((e) => e.fileId && view.files.some((f) => f.id === e.fileId));
    const options = (state.pricing && state.pricing.options) || [];
    return options.filter((o) => o.available).map((o) => {
      const quantity = ready.filter((e) => optionsOf(e).includes(o.id)).length;
      return {label: o.label, quantity, amount: quantity * o.unit_amount};
    }).filter((l) => l.quantity > 0);
  }

  /** The checkout's choice: the options for every photo, and the photos that differ. */
  function choice() {
    const every = [...state.chosen].filter((id) => offer(id));
    const photoOptions = {};
    for (const entry of state.entries) {
      if (!entry.fileId || entry.state !== 'ready') continue;
      const own = optionsOf(entry);
      const same = own.length === every.length && own.every((id) => every.includes(id));
      if (!same) photoOptions[entry.fileId] = own;
    }
    return {options: every, ...(Object.keys(photoOptions).length ? {photo_options: photoOptions} : {})};
  }

  async function pay(event) {
    event.preventDefault();
    if (ui.pay.disabled) return;
    const email = ui.email.value.trim();
    ui.email.removeAttribute('aria-invalid');
    if (email && !ui.email.checkValidity()) {
      ui.email.setAttribute('aria-invalid', 'true');
      say(ui.message, 'Please check the email address: it does not look complete.', 'error');
      ui.email.focus();
      return;
    }
    state.paying = true;
    ui.pay.textContent = 'Opening the payment page…';
    refresh();
    say(ui.message, 'Opening the secure payment page…', 'info');
    try {
      const body = await api('/api/checkout', {method: 'POST',
        json: {session_id: state.session, ...choice(), ...(email ? {email} : {})}});
      location.href = body.checkout_url;
      return;
    } catch (e) {
      state.paying = false;
      ui.pay.textContent = 'Pay and restore';
      if (e.code === 'invalid_email') {
        ui.email.setAttribute('aria-invalid', 'true');
        say(ui.message, 'Please check the email address: ' + e.message + '.', 'error');
        ui.email.focus();
      } else if (e.status === 409) {
        restartSession(null, false);
        say(ui.message, 'These photos are already paid for. Your order link is in your email; '
          + 'choose new photos to start another order.', 'info');
      } else if (e.status === 410) {
        restartSession('Your upload expired before the payment, so your photos are being uploaded again.', true);
        pump();
      } else {
        say(ui.message, e.message, 'error');
      }
      refresh();
    }
  }

  // ---- drag and drop -----------------------------------------------------------

  function setupDrop() {
    let depth = 0;
    const hasFiles = (e) => e.dataTransfer && Array.from(e.dataTransfer.types || []).includes('Files');
    ui.zone.addEventListener('dragenter', (e) => {
      if (!hasFiles(e)) return;
      e.preventDefault();
      depth += 1;
      ui.zone.classList.add('dragging');
    });
    ui.zone.addEventListener('dragover', (e) => {
      if (!hasFiles(e)) return;
      e.preventDefault();
      e.dataTransfer.dropEffect = 'copy';
    });
    ui.zone.addEventListener('dragleave', () => {
      depth = Math.max(0, depth - 1);
      if (!depth) ui.zone.classList.remove('dragging');
    });
    ui.zone.addEventListener('drop', (e) => {
      e.preventDefault();
      depth = 0;
      ui.zone.classList.remove('dragging');
      addFiles(e.dataTransfer.files);
    });
    // A photo dropped next to the zone must not replace the page.
    window.addEventListener('dragover', (e) => { if (hasFiles(e)) e.preventDefault(); });
    window.addEventListener('drop', (e) => {
      if (!hasFiles(e)) return;
      e.preventDefault();
      addFiles(e.dataTransfer.files);
    });
  }

  // ---- start -------------------------------------------------------------------

  async function start() {
    const params = new URLSearchParams(location.search);
    let stored = null;
    try { stored = localStorage.getItem(STORAGE_KEY); } catch (_) { /* off */ }
    const sessionId = params.get('session_id') || stored;
    const cancelled = params.get('checkout') === 'cancelled';

    ui.input.addEventListener('change', () => {
      addFiles(ui.input.files);
      ui.input.value = '';
    });
    ui.form.addEventListener('submit', pay);
    setupDrop();
    // Coming back with the browser's back button from the payment page.
    window.addEventListener('pageshow', (e) => {
      if (!e.persisted) return;
      state.paying = false;
      ui.pay.textContent = 'Pay and restore';
      refresh();
    });

    try {
      state.pricing = await api('/api/pricing');
      const formats = $('#drop-formats');
      if (formats) {
        formats.textContent = 'JPEG, PNG, WebP or TIFF · up to '
          + `${fileSize(state.pricing.max_file_bytes)} and ${state.pricing.max_files} photos · each checked as it uploads`;
      }
      renderOptions();
    } catch (_) { /* the page works without it: the price shows after the first upload */ }

    if (sessionId) {
      try {
        const view = await api('/api/upload/' + encodeURIComponent(sessionId));
        if (view.status === 'paid') {
          remember(null);
          say(ui.message, 'Those photos are already paid for: the link to your order is in your email. '
            + 'Choose new photos to start another order.', 'info');
        } else if (view.status === 'expired') {
          remember(null);
          say(ui.message, 'Your earlier upload has expired. Please choose your photos again.', 'info');
        } else {
          reconcile(view);
          if (cancelled) {
            say(ui.message, 'The payment was cancelled and nothing was charged. Your photos are still here: '
              + 'you can pay whenever you are ready.', 'info');
          } else if (view.status === 'payment_failed') {
            say(ui.message, 'The last payment did not go through. You can try again.', 'error');
          }
        }
      } catch (e) {
        if (e.status === 404 || e.status === 410) {
          remember(null);
          if (params.get('session_id')) {
            say(ui.message, 'That upload is no longer available. Please choose your photos again.', 'info');
          }
        } else {
          say(ui.message, e.message, 'error');
        }
      }
    }
    refresh();
  }

  start();
})();
