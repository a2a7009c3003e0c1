// The customer's journey through a RUNNING shop, in headless Chromium:
// upload two photos and a bad file, pay on the dev checkout, watch the
// restoration, compare before/after, download the ZIP, and view the order on
// a phone. Prints one line per step; exits 0 only when every step passed.
//
//   BASE_URL=http://127.0.0.1:8088 PHOTOS=/abs/a.jpg:/abs/b.png BAD_FILE=/abs/notes.jpg \
//   SCREENSHOTS=/tmp/shots DOWNLOADS=/tmp/dl node journey.mjs
//
// CHROMIUM overrides the browser (default /usr/bin/chromium); Playwright never
// downloads one.

import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { chromium } from 'playwright-core';

const AXE = fs.readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');

function need(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`journey: set ${name} (see the top of journey.mjs)`);
    process.exit(2);
  }
  return value;
}

const BASE = need('BASE_URL').replace(/\/+$/, '');
const PHOTOS = need('PHOTOS').split(':').filter(Boolean);
const BAD_FILE = need('BAD_FILE');
const SHOTS = need('SCREENSHOTS');
const DOWNLOADS = need('DOWNLOADS');
const EMAIL = process.env.EMAIL || 'journey@example.com';
const RESTORE_TIMEOUT = Number(process.env.RESTORE_TIMEOUT_MS || 120_000);

if (PHOTOS.length !== 2) {
  console.error(`journey: PHOTOS must name two photo files separated by ':' (got ${PHOTOS.length})`);
  process.exit(2);
}
for (const file of [...PHOTOS, BAD_FILE]) {
  if (!path.isAbsolute(file) || !fs.existsSync(file)) {
    console.error(`journey: ${file} is not an absolute path to an existing file`);
    process.exit(2);
  }
}
fs.mkdirSync(SHOTS, { recursive: true });
fs.mkdirSync(DOWNLOADS, { recursive: true });

const photoNames = PHOTOS.map((p) => path.basename(p));
const badName = path.basename(BAD_FILE);

const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
let browser;
try {
  browser = await chromium.launch({
    executablePath,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
} catch (error) {
  console.log(`not ok 0 - start Chromium at ${executablePath} (apt-get install -y chromium, or set CHROMIUM)`);
  console.log(String(error.message || error).replace(/^/gm, '    '));
  process.exit(1);
}
const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, acceptDownloads: true });
const page = await context.newPage();
page.setDefaultTimeout(30_000);

// Problems on the shop's own pages (script errors, CSP refusals, 5xx answers)
// fail the step they happen in; 4xx answers are expected (the bad file).
const problems = [];
page.on('pageerror', (e) => problems.push(`script error: ${e.message}`));
page.on('console', (msg) => {
  if (msg.type() !== 'error') return;
  const url = msg.location().url || page.url();
  const ours = url.startsWith(BASE) && !new URL(url).pathname.startsWith('/dev/');
  if (/Failed to load resource: the server responded with a status of 4\d\d/.test(msg.text())) return;
  if (ours || /Content Security Policy/i.test(msg.text())) problems.push(`console error: ${msg.text()} (${url})`);
});

const shot = (name, fullPage = true) => page.screenshot({ path: path.join(SHOTS, name), fullPage });
const check = (condition, message) => {
  if (!condition) throw new Error(message);
};
const text = (selector) => page.locator(selector).first().innerText();

// WCAG 2 A/AA checks (labels, names, contrast, structure) by axe-core, run in
// the page through DevTools so the page's own CSP stays as strict as served.
async function audit(where) {
  await page.evaluate(`${AXE};0`);
  const result = await page.evaluate(() =>
    window.axe.run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] } }));
  const bad = result.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  check(bad.length === 0, `accessibility on ${where}: ` + bad.map((v) =>
    `${v.id} (${v.impact}): ${v.help} — ${v.nodes.slice(0, 3).map((n) => n.target.join(' ')).join(', ')}`).join('; '));
  return `${result.passes.length} axe rules pass`;
}

let number = 0;
let passed = 0;
async function step(title, body) {
  number += 1;
  try {
    const note = await body();
    if (problems.length) throw new Error(problems.splice(0).join('\n'));
    passed += 1;
    console.log(`ok ${number} - ${title}${note ? ` (${note})` : ''}`);
  } catch (error) {
    console.log(`not ok ${number} - ${title}`);
    console.log(String((error && error.stack) || error).replace(/^/gm, '    '));
    const failure = path.join(SHOTS, 'failure.png');
    await page.screenshot({ path: failure, fullPage: true }).catch(() => {});
    console.log(`    screenshot: ${failure}, page: ${page.url()}`);
    console.log(`journey: ${passed} passed, 1 failed`);
    await browser.close().catch(() => {});
    process.exit(1);
  }
}

await step('upload two photos and a bad file; each gets its own state', async () => {
  await page.goto(BASE + '/');
  // A fresh visitor: no session left over from an earlier run.
  await page.evaluate(() => localStorage.clear());
  await page.goto(BASE + '/');
  check(await page.getByLabel(/email/i).count() === 1, 'the email field has no label');
  await page.setInputFiles('#files', [...PHOTOS, BAD_FILE]);
  await page.waitForFunction(() =>
    document.querySelectorAll('.photo[data-state="ready"][data-file-id]').length === 2
    && document.querySelector('.photo[data-state="error"] .error')?.textContent.trim(), null, { timeout: 60_000 });
  const ready = await page.locator('.photo[data-state="ready"] .name').allInnerTexts();
  check(JSON.stringify([...ready].sort()) === JSON.stringify([...photoNames].sort()),
    `ready photos are ${JSON.stringify(ready)}, expected ${JSON.stringify(photoNames)}`);
  const bad = page.locator('.photo[data-state="error"]');
  check(await bad.count() === 1, 'expected exactly one file with an error');
  check((await bad.locator('.name').innerText()) === badName, 'the error is not next to the bad file');
  const error = (await bad.locator('.error').innerText()).trim();
  await page.waitForFunction(() => /\b2 photos\b/.test(document.querySelector('#price').textContent));
  const plain = await text('#price');
  check(/2 photos × .+ = .+/.test(plain), `price reads "${plain}"`);
  // The local engine upscales but has no face model: one is offered, the other listed only.
  check(await page.getByLabel(/Enhance faces/).isDisabled(), 'faces are offered without a face model');
  await page.getByLabel(/Upscale 2×/).check();
  await page.waitForFunction(() => /in all/.test(document.querySelector('#price').textContent));
  const price = await text('#price');
  const lines = await page.locator('#price-lines li').allInnerTexts();
  check(/2 photos: .+ in all/.test(price) && lines.some((l) => /^Upscale 2× × 2: /.test(l)),
    `with the upscale the price reads "${price}", ${JSON.stringify(lines)}`);
  await page.getByLabel(/Upscale 4×/).check();
  check(!(await page.getByLabel(/Upscale 2×/).isChecked()), 'both upscales are chosen at once');
  await page.getByLabel(/Upscale 2×/).check();
  await shot('01-upload.png');
  const upload = await audit('the upload page');
  await page.getByRole('button', { name: `Dismiss the error for ${badName}` }).click();
  await page.waitForFunction(() => !document.querySelector('.photo[data-state="error"]'));
  check(await page.locator('.photo').count() === 2, 'the two photos did not remain after dismissing the error');
  check(await page.locator('#pay').isEnabled(), 'Pay is disabled with two photos ready');
  check(new URL(page.url()).searchParams.get('session_id')?.startsWith('ups_'), 'the URL does not carry the session');
  return `${badName}: "${error}"; ${price}; ${upload}`;
});

await step('pay on the dev checkout', async () => {
  await page.fill('#email', EMAIL);
  await Promise.all([
    page.waitForURL((url) => url.pathname !== '/', { timeout: 30_000 }),
    page.click('#pay'),
  ]);
  await page.getByRole('button', { name: /^Pay/ }).waitFor();
  await shot('02-dev-checkout.png');
  await Promise.all([
    page.waitForURL((url) => url.pathname === '/success', { timeout: 30_000 }),
    page.getByRole('button', { name: /^Pay/ }).click(),
  ]);
  return page.url().replace(BASE, '');
});

await step('watch the order until both photos are restored', async () => {
  await page.waitForFunction(() => {
    const q = new URLSearchParams(location.search);
    return q.get('order_id') && q.get('token') && !document.querySelector('#summary').hidden;
  }, null, { timeout: 60_000 });
  const caught = await page.evaluate(() =>
    document.querySelectorAll('.photo[data-image-id]:not([data-status="completed"])').length > 0
    || !document.querySelector('.photo[data-image-id]'));
  await shot('03-progress.png');
  await page.waitForFunction(() =>
    document.querySelectorAll('.photo[data-image-id][data-status="completed"] input.compare').length === 2
    && document.querySelector('#status').dataset.kind === 'ok', null, { timeout: RESTORE_TIMEOUT });
  const progress = await page.evaluate(() => {
    const p = document.querySelector('#progress');
    return { value: p.value, max: p.max, text: document.querySelector('#progress-text').innerText };
  });
  check(progress.value === 2 && progress.max === 2, `progress is ${progress.value}/${progress.max}`);
  check(/2 of 2 photos restored/.test(progress.text), `progress reads "${progress.text}"`);
  // Restored images really load.
  await page.waitForFunction(() => [...document.querySelectorAll('.compare-view img')]
    .every((img) => img.complete && img.naturalWidth > 0));
  const steps = await page.locator('.photo[data-image-id] .steps li[data-status="completed"]').allInnerTexts();
  check(steps.filter((t) => /^Upscale 2×/.test(t)).length === 2 && steps.filter((t) => /^Repair/.test(t)).length === 2,
    `each photo shows its repair and upscale done: ${JSON.stringify(steps)}`);
  await shot('04-completed.png');
  const audited = await audit('the order page');
  return `${progress.text}; ${caught ? 'caught it while processing' : 'already done when the page showed it'}; `
    + `status: "${(await text('#status')).trim()}"; ${audited}`;
});

await step('compare before and after with the keyboard and the mouse', async () => {
  const range = page.locator('.photo[data-image-id] input.compare').first();
  const label = await range.getAttribute('aria-label');
  check(/^Compare before and after for /.test(label || ''), `the slider is labelled "${label}"`);
  const read = () => range.evaluate((r) => {
    const view = r.closest('.photo').querySelector('.compare-view');
    const before = view.querySelector('.before');
    const box = view.getBoundingClientRect();
    const clip = getComputedStyle(before).clipPath;
    // The right inset of the original's clip, in % of the photo's width.
    const m = /inset\(\S+ (?:calc\()?([\d.]+)%/.exec(clip);
    return { value: Number(r.value), pos: view.style.getPropertyValue('--pos').trim(), clip,
      rightInset: m ? Number(m[1]) : NaN, width: box.width };
  });
  const agrees = (s) => s.pos === `${s.value}%` && Math.abs(s.rightInset - (100 - s.value)) < 0.01;
  const start = await read();
  check(start.value === 50 && agrees(start), `initial state ${JSON.stringify(start)}`);

  await range.focus();
  await page.keyboard.press('ArrowLeft');
  const left = await read();
  check(left.value === 49 && agrees(left), `after ArrowLeft ${JSON.stringify(left)}`);
  await page.keyboard.press('Home');
  const home = await read();
  check(home.value === 0 && agrees(home), `after Home ${JSON.stringify(home)}`);
  await page.keyboard.press('End');
  const end = await read();
  check(end.value === 100 && agrees(end) && end.clip !== home.clip, `after End ${JSON.stringify(end)}`);

  // The mouse: click a quarter of the way along the range, then drag it to three quarters.
  const box = await range.boundingBox();
  const y = box.y + box.height / 2;
  await page.mouse.click(box.x + box.width * 0.25, y);
  const clicked = await read();
  check(clicked.value > 10 && clicked.value < 40 && agrees(clicked), `after a click ${JSON.stringify(clicked)}`);
  await page.mouse.move(box.x + box.width * 0.25, y);
  await page.mouse.down();
  await page.mouse.move(box.x + box.width * 0.5, y, { steps: 5 });
  await page.mouse.move(box.x + box.width * 0.75, y, { steps: 5 });
  await page.mouse.up();
  const dragged = await read();
  check(dragged.value > 60 && dragged.value < 90 && agrees(dragged), `after a drag ${JSON.stringify(dragged)}`);

  // Dragging across the photo itself moves the divider too.
  const photo = await page.locator('.photo[data-image-id] .compare-view').first().boundingBox();
  await page.mouse.move(photo.x + photo.width * 0.6, photo.y + photo.height / 2);
  await page.mouse.down();
  await page.mouse.move(photo.x + photo.width * 0.35, photo.y + photo.height / 2, { steps: 5 });
  await page.mouse.up();
  const onPhoto = await read();
  check(Math.abs(onPhoto.value - 35) <= 2 && agrees(onPhoto), `after dragging on the photo ${JSON.stringify(onPhoto)}`);
  await range.focus();
  await shot('05-compare.png');
  return `keys 50→49→0→100, click →${clicked.value}, drag →${dragged.value}, on photo →${onPhoto.value}; `
    + `clip "${onPhoto.clip}"`;
});

await step('download all photos as a ZIP', async () => {
  const [download] = await Promise.all([
    page.waitForEvent('download', { timeout: 30_000 }),
    page.click('#download'),
  ]);
  const saved = path.join(DOWNLOADS, 'order.zip');
  await download.saveAs(saved);
  const bytes = fs.readFileSync(saved);
  check(bytes.length > 1024, `the ZIP has only ${bytes.length} bytes`);
  check(bytes[0] === 0x50 && bytes[1] === 0x4b, 'the download does not start with PK');
  const name = download.suggestedFilename();
  check(/^restoreclick-ord_[\w-]+\.zip$/.test(name), `the download is named ${name}`);
  const info = await text('#download-info');
  check(/valid until/.test(info) && await page.locator('#download-info a[href^="/download/"]').count() === 1,
    `the link is not shown: "${info}"`);
  return `saved ${saved} (${bytes.length} bytes, sent as ${name})`;
});

await step('have one photo refunded in the review window', async () => {
  const card = page.locator('.photo[data-image-id]').nth(1);
  const name = (await card.locator('.name').innerText()).trim();
  check(await page.getByRole('button', { name: /^Redo this photo: / }).count() === 2, 'each restored photo offers a redo');
  await card.getByRole('button', { name: /^Refund this photo \(.+\): / }).click();
  await card.locator('p', { hasText: 'Refunded at your request' }).waitFor({ timeout: 30_000 });
  check(await card.getByRole('button', { name: /^(Redo|Refund) this photo/ }).count() === 0,
    'a refunded photo still offers a review');
  await shot('05b-refunded.png');
  return `${name}: "${(await card.locator('p', { hasText: 'Refunded' }).innerText()).trim()}"`;
});

await step('reload the order on a phone from its URL alone', async () => {
  const url = new URL(page.url());
  check(url.searchParams.get('order_id')?.startsWith('ord_') && url.searchParams.get('token'),
    `the URL does not carry the order and its token: ${url}`);
  check(!url.searchParams.has('session_id'), 'the URL still carries the checkout session');
  await page.setViewportSize({ width: 375, height: 740 });
  await page.evaluate(() => localStorage.clear());
  await page.reload();
  await page.waitForFunction(() =>
    document.querySelectorAll('.photo[data-image-id][data-status="completed"] input.compare').length === 2
    && [...document.querySelectorAll('.compare-view img')].every((img) => img.complete && img.naturalWidth > 0),
  null, { timeout: 30_000 });
  await shot('06-phone.png');
  const widths = await page.evaluate(() => ({ scroll: document.documentElement.scrollWidth, inner: innerWidth }));
  check(widths.scroll <= widths.inner, `the page overflows: scrollWidth ${widths.scroll} > innerWidth ${widths.inner}`);
  return `scrollWidth ${widths.scroll} <= innerWidth ${widths.inner}`;
});

await browser.close();
console.log(`screenshots in ${SHOTS}`);
console.log(`journey: ${passed} passed, 0 failed`);
