// Shared by the end-to-end test, the benchmark and the screenshots: serve the built page (dist/),
// launch headless Chromium with WebGPU (SwiftShader), and drive the lab page.
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';

const TYPES = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript', '.mjs': 'text/javascript', '.css': 'text/css',
  '.wasm': 'application/wasm', '.json': 'application/json', '.txt': 'text/plain; charset=utf-8',
  '.jsonl': 'application/x-ndjson', '.ttf': 'font/ttf', '.png': 'image/png', '.safetensors': 'application/octet-stream',
};

/** Serves `dir` on a free local port; resolves to { url, close, requests }. Unknown paths get the page
 * itself (200, text/html), as single-page-app hosts answer, so the lab must cope with that. Like a
 * static host that allows other origins, it answers GET and HEAD with an ETag (size and modification
 * time) that other origins may read; `requests(method, path)` counts the requests for a path. */
export function serve(dir) {
  const root = path.resolve(dir);
  const counts = new Map();
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://localhost');
    const key = `${req.method} ${url.pathname}`;
    counts.set(key, (counts.get(key) ?? 0) + 1);
    let file = path.join(root, decodeURIComponent(url.pathname));
    if (!file.startsWith(root)) { res.writeHead(403).end(); return; }
    if (fs.existsSync(file) && fs.statSync(file).isDirectory()) file = path.join(file, 'index.html');
    if (!fs.existsSync(file)) file = path.join(root, 'index.html');
    const cors = { 'access-control-allow-origin': '*', 'access-control-expose-headers': 'etag' };
    fs.readFile(file, (err, data) => {
      if (err) { res.writeHead(404, cors).end('not found'); return; }
      const stat = fs.statSync(file);
      res.writeHead(200, {
        'content-type': TYPES[path.extname(file)] ?? 'application/octet-stream', 'cache-control': 'no-store',
        etag: `"${stat.size}-${Math.round(stat.mtimeMs)}"`, ...cors,
      });
      res.end(data); // without a body for HEAD (node knows the method)
    });
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => {
    resolve({
      url: `http://127.0.0.1:${server.address().port}/`,
      close: () => server.close(),
      requests: (method, pathname) => counts.get(`${method} ${pathname}`) ?? 0,
    });
  }));
}

/** Polls `condition` (a function) every 100 ms until it holds; throws after `timeout` ms. */
export async function until(condition, timeout, what) {
  const started = Date.now();
  while (!condition()) {
    if (Date.now() - started > timeout) throw new Error(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Headless Chromium with WebGPU and without any network chatter (flags from the project's notes).
 * Playwright starts every launch with a fresh temporary profile (its own --user-data-dir). */
export async function launch() {
  const executablePath = process.env.CHROMIUM ?? '/usr/bin/chromium';
  const browser = await chromium.launch({
    executablePath,
    headless: true,
    args: [
      '--headless=new', '--no-sandbox', '--enable-unsafe-webgpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
  return { browser, close: () => browser.close() };
}

/** Opens the lab page with `?backend=` and waits until its model is loaded (or it failed). */
export async function openLab(browser, url, backend, { width = 1400, height = 1000 } = {}) {
  const page = await browser.newPage({ viewport: { width, height }, acceptDownloads: true });
  const log = [];
  page.on('console', (m) => log.push(`[${m.type()}] ${m.text()}`));
  page.on('pageerror', (e) => log.push(`[pageerror] ${e.message}`));
  await page.goto(`${url}?backend=${backend}`);
  await waitState(page, ['ready'], 300_000, log);
  return { page, log };
}

/** Waits until <body data-state> is one of `states`; fails early with the page's errors. */
export async function waitState(page, states, timeout, log = []) {
  const started = Date.now();
  for (;;) {
    const { state, errors } = await page.evaluate(() => ({
      state: document.body.dataset.state,
      errors: window.__headscope?.errors ?? [],
    }));
    if (states.includes(state)) return state;
    if (errors.length > 0 && (state === 'no-model' || state === 'ready')) {
      throw new Error(`the page reported: ${errors.join(' | ')}\n${log.slice(-20).join('\n')}`);
    }
    if (Date.now() - started > timeout) {
      throw new Error(`timed out waiting for ${states} (state ${state})\n${log.slice(-30).join('\n')}`);
    }
    await page.waitForTimeout(200);
  }
}

/** The page's published state (window.__headscope). */
export async function labState(page) {
  return page.evaluate(() => {
    const h = window.__headscope ?? {};
    return {
      model: h.model ? JSON.parse(h.model) : null,
      scores: h.scoresJson ? JSON.parse(h.scoresJson) : null,
      tests: h.testsJsonl ? h.testsJsonl.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l)) : [],
      traces: h.tracesJson ? JSON.parse(h.tracesJson) : {},
      sweep: h.sweepDone ? JSON.parse(h.sweepDone) : null,
      headView: h.headView ? JSON.parse(h.headView) : null,
      cot: h.cotJson ? JSON.parse(h.cotJson) : [],
      errors: h.errors ?? [],
    };
  });
}

/** Clicks `button` (Run, a masked sweep), waits until the page leaves 'ready', then until it is ready again. */
export async function clickAndWait(page, button, log = [], timeout = 600_000) {
  await page.click(button);
  await page.waitForFunction(() => document.body.dataset.state !== 'ready', null, { timeout: 5_000 }).catch(() => {});
  await waitState(page, ['ready'], timeout, log);
}

/** Fills the sweep settings and runs it; resolves when it finished. */
export async function runSweep(page, { lengths, depths, maxNew, log = [], timeout = 1_200_000 }) {
  await page.fill('#lengths', lengths);
  await page.fill('#depths', String(depths));
  if (maxNew !== undefined) await page.fill('#max-new', String(maxNew));
  await page.click('#run');
  await waitState(page, ['running'], 30_000, log).catch(() => {});
  await waitState(page, ['ready'], timeout, log);
  const s = await labState(page);
  if (!s.sweep) throw new Error(`the sweep did not finish: ${s.errors.join(' | ')}\n${log.slice(-20).join('\n')}`);
  return s;
}
