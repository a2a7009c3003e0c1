// The order page: wait for the payment (from /success?session_id=cs_…), then
// show the order live (from /success?order_id=…&token=…), compare each
// restored photo with its original, and download them all.
'use strict';

(function () {
  const {$, el, api, money, plural, when, sleep, say} = window.RC;

  const TERMINAL = new Set(['completed', 'failed', 'refunded']);
  const STEP_NAMES = {
    repair: 'Repair',
    faces: 'Faces',
    colorize: 'Colour',
    upscale_2x: 'Upscale 2×',
    upscale_4x: 'Upscale 4×',
  };
  const STEP_STATUS = {
    pending: 'waiting',
    processing: 'running',
    completed: 'done',
    failed: 'failed',
    skipped: 'skipped',
  };
  const IMAGE_STATUS = {
    pending: 'Waiting',
    uploaded: 'In the queue',
    processing: 'Restoring…',
    completed: 'Restored',
    failed: 'Could not be restored',
  };

  const ui = {
    status: $('#status'),
    announcer: $('#announcer'),
    summary: $('#summary'),
    progress: $('#progress'),
    progressText: $('#progress-text'),
    facts: $('#facts'),
    downloadArea: $('#download-area'),
    download: $('#download'),
    downloadInfo: $('#download-info'),
    section: $('#photos-section'),
    list: $('#images'),
  };

  const state = {
    order: null,
    token: null,
    view: null,
    cards: new Map(), // image id → {node, parts, status, compare}
    headline: '',
    source: null,
    fetching: false,
    again: false,
    polling: false,
    awaiting: false, // a delayed payment method is on its way
  };

  const home = (text) => el('a', {href: '/', text: text || 'Back to your photos'});
  const waiting = (text) => el('span', {class: 'waiting', text});
  const withToken = (url) => url + (url.includes('?') ? '&' : '?') + 'token=' + encodeURIComponent(state.token);

  // ---- payment -----------------------------------------------------------------

  async function waitForPayment(checkout) {
    say(ui.status, '', 'info', waiting('Waiting for your payment to be confirmed…'));
    for (let tries = 1; ; tries += 1) {
      try {
        const c = await api('/api/checkout/' + encodeURIComponent(checkout));
        if (c.status === 'paid' && c.order_id && c.order_token) return c;
        if (c.status === 'refunded') {
          say(ui.status, 'We could not accept this payment as made, so we are refunding it in full. '
            + 'Nothing was charged in the end. ', 'error', home('Go back to your photos to pay again'));
          return null;
        }
        state.awaiting = c.payment_status === 'awaiting_payment';
        if (state.awaiting && tries === 1) {
          say(ui.status, '', 'info', waiting('Your payment is on its way: your bank takes a few days with this '
            + 'payment method. We will email you once it arrives; you can close this page.'));
        }
        if (c.status === 'failed' || c.status === 'expired') {
          say(ui.status, c.status === 'failed'
            ? 'The payment did not go through, so nothing was charged. '
            : 'This payment page expired before the payment was made, so nothing was charged. ', 'error',
          home('Go back to your photos to pay again'));
          return null;
        }
      } catch (e) {
        if (e.status === 404) {
          say(ui.status, 'We cannot find this payment. ', 'error', home('Go back to the start'));
          return null;
        }
        // A network blip: keep trying.
      }
      if (tries === 20 && !state.awaiting) {
        say(ui.status, '', 'info', waiting('Still waiting for the payment confirmation. This can take a minute; '
          + 'you can leave this page open.'));
      }
      await sleep(1000);
    }
  }

  // ---- the order -----------------------------------------------------------------

  async function fetchOrder() {
    return api(`/api/orders/${encodeURIComponent(state.order)}`, {token: state.token});
  }

  /** Fetches the order and renders it; calls made meanwhile are folded into one more fetch. */
  async function refetch() {
    if (state.fetching) { state.again = true; return; }
    state.fetching = true;
    try {
      do {
        state.again = false;
        render(await fetchOrder());
      } while (state.again);
    } catch (_) {
      // Keep what is shown; the next event or poll tries again.
    } finally {
      state.fetching = false;
    }
  }

  function connect() {
    if (!window.EventSource) return poll();
    const url = `/api/orders/${encodeURIComponent(state.order)}/events?token=${encodeURIComponent(state.token)}`;
    const source = new EventSource(url);
    state.source = source;
    source.addEventListener('order', (e) => {
      let data;
      try { data = JSON.parse(e.data); } catch (_) { return; }
      if (TERMINAL.has(data.status)) close();
      if (Array.isArray(data.images)) render(data);
      else refetch();
    });
    source.addEventListener('image', (e) => {
      let data;
      try { data = JSON.parse(e.data); } catch (_) { return; }
      const card = state.cards.get(data.id);
      // Show the new state at once; the re-fetch fills in the rest (error text, restored photo).
      if (card && data.status && card.status !== data.status && data.status !== 'completed') {
        updateBadge(card, data.status, null);
      }
      refetch();
    });
    source.addEventListener('error', () => {
      if (state.source !== source) return;
      close();
      if (!finished()) poll();
    });
  }

  function close() {
    if (state.source) state.source.close();
    state.source = null;
  }

  const finished = () => state.view && TERMINAL.has(state.view.status);

  async function poll() {
    if (state.polling) return;
    state.polling = true;
    while (!finished()) {
      await sleep(2000);
      await refetch();
    }
    state.polling = false;
  }

  // ---- rendering -------------------------------------------------------------------

  function render(view) {
    const first = !state.view;
    state.view = view;
    const {total, completed, failed} = view.progress;
    const purged = Boolean(view.purged_at);

    ui.summary.hidden = false;
    ui.progress.max = Math.max(total, 1);
    ui.progress.value = completed;
    ui.progressText.replaceChildren(el('strong', {text: `${completed} of ${plural(total, 'photo', 'photos')} restored`}),
      failed ? ` · ${failed} could not be restored` : '');
    renderFacts(view);
    ui.downloadArea.hidden = !(completed > 0 && view.status !== 'refunded' && !purged);

    headline(view);
    ui.section.hidden = purged || view.images.length === 0;
    if (!purged) {
      const news = view.images.map((image) => renderImage(image, first)).filter(Boolean);
      if (news.length) ui.announcer.textContent = news.join(' ');
    }
    if (TERMINAL.has(view.status)) close();
  }

  function renderFacts(view) {
    const facts = [
      ['Order', view.id],
      ['Paid', money(view.amount_total, view.currency)],
      ['Placed', when(view.created_at)],
    ];
    if (view.email) facts.push(['Email', view.email]);
    if (view.completed_at) facts.push(['Finished', when(view.completed_at)]);
    const key = JSON.stringify(facts);
    if (ui.facts.dataset.key === key) return;
    ui.facts.dataset.key = key;
    ui.facts.replaceChildren(...facts.map(([k, v]) => el('div', {}, el('dt', {text: k}), el('dd', {text: v}))));
  }

  function headline(view) {
    const {total, completed, failed} = view.progress;
    let kind = 'info';
    let text;
    let spinner = false;
    if (view.purged_at) {
      text = `The photos of this order were deleted on ${when(view.purged_at)}, as our retention policy says.`;
    } else if (view.status === 'processing') {
      spinner = true;
      text = completed || failed
        ? `Payment received. ${completed} of ${plural(total, 'photo', 'photos')} restored so far; this page updates by itself.`
        : 'Payment received. We are restoring your photos now; this page updates by itself.';
    } else if (view.status === 'completed' && !failed) {
      kind = 'ok';
      text = `All done: ${total === 1 ? 'your photo is' : total === 2 ? 'both photos are' : `all ${total} photos are`} restored. `
        + 'Compare them below and download them as a ZIP.'
        + (view.email ? ` We have also emailed a download link to ${view.email}.` : '');
    } else if (view.status === 'completed') {
      kind = 'warn';
      text = `Finished: ${completed} of ${plural(total, 'photo', 'photos')} restored. `
        + (failed === 1 ? 'We could not restore one of them; the reason is shown on that photo.'
          : `We could not restore ${failed} of them; the reason is shown on each photo.`)
        + refundNote(view)
        + (view.email ? ` We have emailed ${view.email} the details.` : '');
    } else if (view.status === 'failed') {
      kind = 'error';
      text = 'We are sorry: we could not restore your photos. The reason is shown on each photo.'
        + refundNote(view)
        + (view.email ? ` We have emailed ${view.email} the details.` : '');
    } else if (view.status === 'refunded') {
      const amount = view.amount_refunded || view.amount_total;
      text = `This order was refunded (${money(amount, view.currency)}). Its photos are no longer being restored.`;
    } else {
      text = `Order status: ${view.status}.`;
    }
    const key = kind + text;
    if (key === state.headline) return;
    state.headline = key;
    if (spinner) say(ui.status, '', kind, waiting(text));
    else say(ui.status, text, kind);
  }

  /** What the shop gives back of the order, as its refunds say. */
  function refundNote(view) {
    const refunds = (view.refunds || []).filter((r) => r.status !== 'failed');
    if (!refunds.length) return '';
    const amount = refunds.reduce((sum, r) => sum + r.amount, 0);
    return ` We are refunding ${money(amount, view.currency)} for what we could not restore.`;
  }

  function renderImage(image, first) {
    let card = state.cards.get(image.id);
    if (!card) {
      card = makeCard(image);
      state.cards.set(image.id, card);
      ui.list.append(card.node);
    }
    const changed = card.seen !== image.status;
    card.seen = image.status;
    if (image.status === 'completed' && image.restored_url && !card.compare) {
      card.compare = makeCompare(image);
      card.media.replaceWith(card.compare);
      card.media = card.compare;
    }
    updateBadge(card, image.status, image);
    renderSteps(card, image);
    renderReview(card, image);
    if (!changed || first) return null;
    if (image.status === 'completed') return `${image.filename} is restored.`;
    if (image.status === 'failed') return `${image.filename} could not be restored.`;
    return null;
  }

  function makeCard(image) {
    const parts = {
      badge: el('span', {class: 'badge'}),
      error: el('p', {class: 'error', hidden: true}),
      steps: el('ol', {class: 'steps', 'aria-label': `Steps for ${image.filename}`}),
      review: el('div', {class: 'review', hidden: true}),
      reviewInfo: el('p', {class: 'muted', hidden: true}),
    };
    const media = RC.thumbnail(withToken(image.original_url), image.filename, `${image.filename}, original`);
    const dims = image.width ? `${image.width} × ${image.height} px` : '';
    const node = el('li', {class: 'photo', dataset: {imageId: image.id}},
      media,
      el('div', {class: 'meta'},
        el('p', {class: 'name', title: image.filename, text: image.filename}),
        dims ? el('p', {class: 'details', text: dims}) : null,
        el('p', {}, parts.badge),
        parts.steps,
        parts.error,
        parts.review,
        parts.reviewInfo));
    return {node, parts, media, status: null, seen: null, compare: null};
  }

  function updateBadge(card, status, image) {
    card.status = status;
    card.node.dataset.status = status;
    let label = IMAGE_STATUS[status] || status;
    if (status === 'processing' && image && image.attempts > 1) label += ` (attempt ${image.attempts})`;
    card.parts.badge.textContent = label;
    if (!image) return;
    const failed = status === 'failed';
    card.parts.error.hidden = !failed;
    card.parts.error.textContent = failed ? (image.error || 'The restoration failed.') : '';
  }

  /** Each step of the photo's chain with where it stands (only when it has more than the repair). */
  function renderSteps(card, image) {
    const steps = image.steps || [];
    const key = JSON.stringify(steps.map((st) => [st.name, st.status, st.attempts]));
    if (card.stepsKey === key) return;
    card.stepsKey = key;
    card.parts.steps.hidden = steps.length < 2;
    card.parts.steps.replaceChildren(...steps.map((st) => {
      const name = STEP_NAMES[st.name] || st.name;
      const status = STEP_STATUS[st.status] || st.status;
      const tries = st.status === 'processing' && st.attempts > 1 ? `, attempt ${st.attempts}` : '';
      return el('li', {dataset: {step: st.name, status: st.status}, title: st.error || '',
        text: `${name}: ${status}${tries}`});
    }));
  }

  /** Within the review window, a restored photo may once be redone or refunded. */
  function reviewOpen(image) {
    const view = state.view;
    return Boolean(view && view.review_until && view.status === 'completed' && !view.purged_at
      && image.status === 'completed' && !image.review && !image.refunded
      && Date.parse(view.review_until) > Date.now());
  }

  function renderReview(card, image) {
    const {review, reviewInfo} = card.parts;
    if (image.review) {
      reviewInfo.hidden = false;
      reviewInfo.textContent = image.review === 'redo'
        ? (image.status === 'completed' ? 'Restored again, as you asked.' : 'Being restored again, as you asked.')
        : `Refunded at your request (${money(image.unit_amount, state.view.currency)}).`;
    } else {
      reviewInfo.hidden = true;
    }
    const open = reviewOpen(image);
    review.hidden = !open;
    if (!open || review.childElementCount) return;
    const noteId = `note-${image.id}`;
    const note = el('textarea', {id: noteId, class: 'review-note', rows: '2', maxlength: '1000',
      placeholder: 'What should we do differently? (optional)'});
    // Accessible names start with the visible text, then say which photo.
    const redoText = 'Redo this photo';
    const refundText = `Refund this photo (${money(image.unit_amount, state.view.currency)})`;
    const redo = el('button', {type: 'button', class: 'button small', text: redoText,
      'aria-label': `${redoText}: ${image.filename}`});
    const refund = el('button', {type: 'button', class: 'button small', text: refundText,
      'aria-label': `${refundText}: ${image.filename}`});
    const message = el('p', {class: 'muted', role: 'status'});
    const ask = async (action) => {
      redo.disabled = true;
      refund.disabled = true;
      try {
        const body = action === 'redo' && note.value.trim() ? {note: note.value.trim()} : {};
        const answer = await api(`/api/orders/${encodeURIComponent(state.order)}/images/${encodeURIComponent(image.id)}/${action}`,
          {method: 'POST', token: state.token, json: body});
        say(message, action === 'redo' ? 'We are restoring this photo again.'
          : `We are refunding ${money(answer.refund_amount, state.view.currency)}.`, 'ok');
        await refetch();
        if (action === 'redo' && !state.source) connect();
      } catch (e) {
        say(message, e.message, 'error');
        redo.disabled = false;
        refund.disabled = false;
      }
    };
    redo.addEventListener('click', () => ask('redo'));
    refund.addEventListener('click', () => ask('refund'));
    review.append(el('label', {for: noteId, class: 'sr-only', text: `A note for the redo of ${image.filename}`}),
      note, redo, refund, message);
  }

  /** The restored photo under the original, the original clipped to the slider's position. */
  function makeCompare(image) {
    const size = image.width ? {width: image.width, height: image.height} : {};
    const view = el('div', {class: 'compare-view'},
      el('img', {class: 'after', src: withToken(image.restored_url), alt: `${image.filename}, restored`, ...size}),
      el('div', {class: 'before'},
        el('img', {src: withToken(image.original_url), alt: `${image.filename}, original before restoration`, ...size})),
      el('div', {class: 'divider', 'aria-hidden': 'true'}),
      el('span', {class: 'tag before-tag', text: 'Before'}),
      el('span', {class: 'tag after-tag', text: 'After'}));
    const range = el('input', {type: 'range', class: 'compare', min: '0', max: '100', step: '1', value: '50',
      'aria-label': `Compare before and after for ${image.filename}`});
    const set = (value) => {
      const v = Math.max(0, Math.min(100, Math.round(Number(value))));
      view.style.setProperty('--pos', v + '%');
      range.setAttribute('aria-valuetext', `${v}% original, ${100 - v}% restored`);
    };
    range.addEventListener('input', () => set(range.value));
    set(50);

    // Dragging across the photo moves the divider too (mouse, pen or touch).
    let dragging = false;
    const follow = (e) => {
      const box = view.getBoundingClientRect();
      if (!box.width) return;
      range.value = String(Math.round(((e.clientX - box.left) / box.width) * 100));
      set(range.value);
    };
    view.addEventListener('pointerdown', (e) => {
      if (e.button !== 0) return;
      dragging = true;
      view.setPointerCapture(e.pointerId);
      follow(e);
    });
    view.addEventListener('pointermove', (e) => { if (dragging) follow(e); });
    const stop = () => { dragging = false; };
    view.addEventListener('pointerup', stop);
    view.addEventListener('pointercancel', stop);

    const wrap = el('div', {class: 'compare-wrap'}, view, el('div', {class: 'compare-control'}, range));
    // A format the browser cannot show (TIFF): say so instead of two broken images.
    const fallback = () => {
      wrap.replaceChildren(el('div', {class: 'thumb'},
        el('div', {class: 'placeholder', role: 'img', 'aria-label': `${image.filename}, restored (no preview)`},
          el('span', {class: 'placeholder-note', 'aria-hidden': 'true', text: 'Restored · no preview'}),
          el('span', {class: 'placeholder-name', 'aria-hidden': 'true',
            text: 'This browser cannot show this format; the photo is in your ZIP.'}))));
    };
    for (const img of view.querySelectorAll('img')) img.addEventListener('error', fallback, {once: true});
    return wrap;
  }

  // ---- download ------------------------------------------------------------------------

  async function download() {
    ui.download.disabled = true;
    say(ui.downloadInfo, 'Preparing your ZIP…');
    try {
      const link = await api(`/api/orders/${encodeURIComponent(state.order)}/download-links`,
        {method: 'POST', token: state.token});
      const a = el('a', {href: link.url, download: '', text: 'the download link'});
      say(ui.downloadInfo, 'Your download is starting. If it does not, use ', 'ok', a,
        ` (valid until ${when(link.expires_at)}, for up to ${plural(link.max_downloads, 'download', 'downloads')}).`);
      a.click();
    } catch (e) {
      say(ui.downloadInfo, e.status === 409 ? 'None of your photos is ready to download yet.' : e.message, 'error');
    } finally {
      ui.download.disabled = false;
    }
  }

  // ---- start -----------------------------------------------------------------------------

  async function start() {
    ui.download.addEventListener('click', download);
    const params = new URLSearchParams(location.search);
    state.order = params.get('order_id');
    state.token = params.get('token');
    const checkout = params.get('session_id');

    if (!(state.order && state.token) && checkout) {
      const paid = await waitForPayment(checkout);
      if (!paid) return;
      state.order = paid.order_id;
      state.token = paid.order_token;
      try { localStorage.removeItem('restoreclick.upload_session'); } catch (_) { /* off */ }
    }
    if (!(state.order && state.token)) {
      say(ui.status, 'There is no order to show here. Use the link in your email, or ', 'info',
        home('start a new order'), '.');
      return;
    }
    history.replaceState(null, '',
      `/success?order_id=${encodeURIComponent(state.order)}&token=${encodeURIComponent(state.token)}`);

    for (let tries = 0; ; tries += 1) {
      try {
        render(await fetchOrder());
        break;
      } catch (e) {
        if (e.status === 404) {
          say(ui.status, 'We cannot find this order. Please check the link in your email.', 'error');
          return;
        }
        say(ui.status, '', 'info', waiting(e.message));
        await sleep(Math.min(2000 * (tries + 1), 10000));
      }
    }
    if (!finished()) connect();
  }

  start();
})();
