// Helpers shared by the upload and success pages (loaded first, with defer).
'use strict';

(function () {
  /** The API's error body as an Error: status, code, message, details. */
  class ApiError extends Error {
    constructor(status, code, message, details) {
      super(message);
      this.status = status;
      this.code = code;
      this.details = details || {};
    }
  }

  const $ = (sel, root = document) => root.querySelector(sel);
  const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

  /** Makes an element: el('p', {class: 'x', dataset: {id: 1}}, 'text', child). */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === 'class') node.className = value;
      else if (key === 'dataset') Object.assign(node.dataset, value);
      else if (key === 'text') node.textContent = value;
      else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
      else if (key in node && typeof value !== 'string') node[key] = value;
      else node.setAttribute(key, value === true ? '' : value);
    }
    node.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
    return node;
  }

  /** Turns a response into its JSON body, or throws an ApiError. */
  async function readResponse(response) {
    const type = response.headers.get('content-type') || '';
    const body = type.includes('json') ? await response.json().catch(() => null) : null;
    if (response.ok) return body;
    const error = body && body.error;
    if (error) throw new ApiError(response.status, error.code, error.message, error.details);
    throw new ApiError(response.status, 'http_' + response.status,
      response.status >= 500 ? 'The shop is having trouble right now. Please try again in a moment.'
        : `The request failed (HTTP ${response.status}).`);
  }

  /** fetch + JSON. options: {method, json, body, token, signal}. */
  async function api(url, options = {}) {
    const headers = {accept: 'application/json'};
    let body = options.body;
    if (options.json !== undefined) {
      headers['content-type'] = 'application/json';
      body = JSON.stringify(options.json);
    }
    if (options.token) headers.authorization = 'Bearer ' + options.token;
    let response;
    try {
      response = await fetch(url, {method: options.method || 'GET', headers, body, signal: options.signal,
        credentials: 'same-origin', cache: 'no-store'});
    } catch (e) {
      if (e.name === 'AbortError') throw e;
      throw new ApiError(0, 'network', 'Cannot reach the shop. Check your connection and try again.');
    }
    return readResponse(response);
  }

  /** The first per-file reason of an upload error, or its message. */
  function fileErrorMessage(error) {
    const files = error && error.details && error.details.files;
    const first = Array.isArray(files) && files[0];
    return (first && first.message) || (error && error.message) || 'The upload failed.';
  }

  const moneyFormats = new Map();
  /** Minor units → "$5.00" in the given currency. */
  function money(amount, currency) {
    const code = (currency || 'usd').toUpperCase();
    let format = moneyFormats.get(code);
    if (!format) {
      try {
        format = new Intl.NumberFormat(undefined, {style: 'currency', currency: code});
      } catch (_) {
        format = {format: (n) => n.toFixed(2) + ' ' + code, resolvedOptions: () => ({maximumFractionDigits: 2})};
      }
      moneyFormats.set(code, format);
    }
    const digits = format.resolvedOptions().maximumFractionDigits;
    return format.format(amount / 10 ** digits);
  }

  /** 123456 → "121 KB". */
  function fileSize(bytes) {
    if (!Number.isFinite(bytes)) return '';
    if (bytes < 1024) return bytes + ' B';
    const units = ['KB', 'MB', 'GB'];
    let value = bytes / 1024;
    let i = 0;
    while (value >= 1024 && i < units.length - 1) { value /= 1024; i += 1; }
    return (value < 10 ? value.toFixed(1) : Math.round(value)) + ' ' + units[i];
  }

  const plural = (n, one, many) => `${n} ${n === 1 ? one : many}`;

  const dateFormat = new Intl.DateTimeFormat(undefined, {dateStyle: 'medium', timeStyle: 'short'});
  const when = (iso) => (iso ? dateFormat.format(new Date(iso)) : '');

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  /** Shows a message in a live region: kind is 'info', 'ok' or 'error'. */
  function say(region, text, kind = 'info', ...extra) {
    if (!region) return;
    region.replaceChildren();
    region.dataset.kind = kind;
    if (text) region.append(el('span', {text}));
    region.append(...extra);
  }

  /** The photo's image, or a neutral placeholder with its name when it cannot render (TIFF). */
  function thumbnail(src, filename, alt) {
    const frame = el('div', {class: 'thumb'});
    const img = el('img', {src, alt: alt || filename, loading: 'lazy', decoding: 'async'});
    img.addEventListener('error', () => {
      frame.replaceChildren(el('div', {class: 'placeholder', role: 'img', 'aria-label': (alt || filename) + ' (no preview)'},
        el('span', {class: 'placeholder-note', 'aria-hidden': 'true', text: 'No preview'}),
        el('span', {class: 'placeholder-name', 'aria-hidden': 'true', text: filename})));
    }, {once: true});
    frame.append(img);
    return frame;
  }

  window.RC = {ApiError, $, $$, el, api, readResponse, fileErrorMessage, money, fileSize, plural, when, sleep,
    say, thumbnail};
})();
