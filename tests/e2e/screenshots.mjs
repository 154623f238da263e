// The README's screenshots of the lab page, taken in headless Chromium on the CPU path:
// docs/web-lab.png (the page after a sweep, as a 1366x768 screen shows it), docs/web-heatmaps.png (results),
// docs/web-head-view.png (where the best head looked), docs/web-masking.png (before/after masking),
// docs/web-compare.png (the masked run beside the unmasked one), docs/web-lessons.png (the lessons'
// masking step beside the page) and docs/web-lab-zh.png (the same in Simplified Chinese).
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { serve, launch, openLab, runSweep, waitState, clickAndWait } from './lib.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const DOCS = path.join(ROOT, 'docs');
fs.mkdirSync(DOCS, { recursive: true });
const srv = await serve(process.env.HEADSCOPE_DIST ?? path.join(ROOT, 'dist'));
const { browser, close } = await launch();
try {
  // A laptop's screen: the page must show inputs, Run and results at once there.
  const { page, log } = await openLab(browser, srv.url, 'cpu', { width: 1366, height: 768 });
  const s = await runSweep(page, { lengths: '256:1024:4', depths: 5, maxNew: 32, log });
  const mean = (v) => v.reduce((a, b) => a + b, 0) / Math.max(v.length, 1);
  const best = Object.entries(s.scores).sort((a, b) => mean(b[1]) - mean(a[1]))[0][0];
  // A passing test at the longest length, the needle nearest mid-context, for the head view and the rerun.
  const tests = s.tests;
  const longest = Math.max(...tests.map((x) => x.length));
  const candidates = tests.map((t, i) => [t, i]).filter(([t]) => t.recall >= 0.5 && t.length === longest);
  candidates.sort((a, b) => Math.abs(a[0].depth_percent - 50) - Math.abs(b[0].depth_percent - 50));
  const pick = candidates.length ? candidates[0][1] : 0;
  await page.click(`#tests li[data-index="${pick}"]`);
  const [layer, head] = best.split('-').map(Number);
  await page.locator('#heads-canvas').scrollIntoViewIfNeeded();
  const box = await page.locator('#heads-canvas').boundingBox();
  const m = await page.evaluate(() => JSON.parse(window.__headscope.headCells));
  const at = (o, len, k, n) => o + Math.floor((k * len) / n);
  const cx = (at(m.x0, m.x1 - m.x0, head, m.cols) + at(m.x0, m.x1 - m.x0, head + 1, m.cols)) / 2;
  const cy = (at(m.y0, m.y1 - m.y0, layer, m.rows) + at(m.y0, m.y1 - m.y0, layer + 1, m.rows)) / 2;
  const c = await page.evaluate(() => ({ w: document.getElementById('heads-canvas').width, h: document.getElementById('heads-canvas').height }));
  await page.locator('#heads-canvas').click({ position: { x: cx * (box.width / c.w), y: cy * (box.height / c.h) } });
  await waitState(page, ['ready'], 120_000, log);
  // Mask as many top heads as there are retrieval heads (mean score > 0.1), as the model card does.
  const retrieval = Object.values(s.scores).filter((v) => mean(v) > 0.1).length;
  await page.fill('#mask-k', String(Math.max(retrieval, 1)));
  await page.click('#mask-top');
  await page.click('#rerun');
  await waitState(page, ['ready'], 120_000, log);
  // The same sweep with those heads masked, kept as a second run; the charts go back to the first.
  await clickAndWait(page, '#sweep-masked', log);
  await page.selectOption('#run-shown', '0');
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: path.join(DOCS, 'web-lab.png') });
  await page.locator('#results-panel').screenshot({ path: path.join(DOCS, 'web-heatmaps.png') });
  await page.locator('#head-panel').screenshot({ path: path.join(DOCS, 'web-head-view.png') });
  await page.locator('#mask-panel').screenshot({ path: path.join(DOCS, 'web-masking.png') });
  // The masked run beside the unmasked one.
  await page.selectOption('#run-shown', '1');
  await page.selectOption('#run-compare', '0');
  await page.locator('#compare').screenshot({ path: path.join(DOCS, 'web-compare.png') });
  // The lessons at their masking step, in English and in Chinese.
  await page.selectOption('#run-shown', '0');
  await page.click('#lesson-toggle');
  for (let i = 0; i < 4; i++) await page.click('#lesson-next');
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: path.join(DOCS, 'web-lessons.png') });
  await page.selectOption('#lang', 'zh');
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: path.join(DOCS, 'web-lab-zh.png') });
  await page.selectOption('#lang', 'en');
  console.log(`wrote docs/web-{lab,heatmaps,head-view,masking,compare,lessons,lab-zh}.png (best head ${best}, ${retrieval} retrieval heads masked)`);
} finally {
  await close();
  srv.close();
}
