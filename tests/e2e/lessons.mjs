// The guided track walked as a class would, in headless Chromium at a laptop's size (1366x768, CPU
// path): every step's preset is loaded, its "Try" done, and its outcome checked; axe-core checks the
// page for serious or critical accessibility violations at every step.
//
// Run by `scripts/web.sh e2e` (after building the page); `node tests/e2e/lessons.mjs` on a built dist/.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { serve, launch, openLab, labState, waitState, clickAndWait } from './lib.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const DIST = process.env.HEADSCOPE_DIST ?? path.join(ROOT, 'dist');
const AXE = createRequire(import.meta.url).resolve('axe-core/axe.min.js');
let failures = 0;
function check(ok, what, detail = '') {
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${what}${detail ? `: ${detail}` : ''}`);
  if (!ok) failures += 1;
}

const passRate = (tests) => tests.filter((t) => t.recall >= 0.5).length / Math.max(tests.length, 1);
const pct = (x) => `${(100 * x).toFixed(0)} %`;

/** axe-core's serious and critical violations on the page as it stands. */
async function axe(page) {
  if (!(await page.evaluate(() => typeof window.axe !== 'undefined'))) await page.addScriptTag({ path: AXE });
  const r = await page.evaluate(async () => {
    const result = await window.axe.run(document, { resultTypes: ['violations'] });
    return result.violations.map((v) => ({ id: v.id, impact: v.impact, nodes: v.nodes.map((n) => n.target.join(' ')).slice(0, 3) }));
  });
  return r.filter((v) => v.impact === 'serious' || v.impact === 'critical');
}

async function step(page, n, log) {
  const count = await page.textContent('#lesson-count');
  check(count.startsWith(`step ${n} of`), `lesson step ${n} is shown`, `${count}: ${await page.textContent('#lesson-title')}`);
  const bad = await axe(page);
  check(bad.length === 0, `axe-core: no serious or critical violation at step ${n}`, bad.map((v) => `${v.id} (${v.impact}) ${v.nodes.join(', ')}`).join('; '));
  await page.click('#lesson-load');
  await waitState(page, ['ready'], 600_000, log);
}

async function next(page) {
  await page.click('#lesson-next');
}

async function main() {
  const srv = await serve(DIST);
  const { browser, close } = await launch();
  try {
    const { page, log } = await openLab(browser, srv.url, 'cpu', { width: 1366, height: 768 });
    const before = await axe(page);
    check(before.length === 0, 'axe-core: no serious or critical violation before the lessons', before.map((v) => `${v.id} ${v.nodes.join(', ')}`).join('; '));
    await page.click('#lesson-toggle');
    check(await page.isVisible('#lesson-panel'), 'the Lessons button opens the side panel');
    const glossary = await page.locator('#glossary-list dt').count();
    check(glossary >= 10, 'the glossary lists the page\'s terms', `${glossary} terms`);
    const runButton = await page.locator('#run').boundingBox();
    check(runButton && runButton.x + runButton.width < 1366 - 340, 'with the lessons open the Run button is not under the panel', JSON.stringify(runButton));

    // 1. A needle in a haystack: the San Francisco needle, 15 tests.
    await step(page, 1, log);
    check((await page.inputValue('#needle')).includes('San Francisco') && (await page.inputValue('#lengths')) === '256:1024:3',
      'step 1 loads the San Francisco needle and 256:1024:3');
    await clickAndWait(page, '#run', log);
    const first = await labState(page);
    check(first.tests.length === 15, 'step 1: the sweep runs 15 tests', `${first.tests.length} tests, ${pct(passRate(first.tests))} pass`);
    check(passRate(first.tests) > 0, 'step 1: the model finds the needle in some tests', pct(passRate(first.tests)));

    // 2. Scores: a few heads above 0.1.
    await next(page);
    await step(page, 2, log);
    const scores = (await labState(page)).scores;
    const means = Object.values(scores).map((v) => v.reduce((a, b) => a + b, 0) / Math.max(v.length, 1));
    const retrieval = means.filter((m) => m > 0.1).length;
    check(retrieval >= 1 && retrieval <= means.length / 4, 'step 2: a few heads score above 0.1', `${retrieval} of ${means.length}`);

    // The keyboard and the palette, on step 2's heatmaps.
    await page.focus('#heads-canvas');
    await page.keyboard.press('ArrowRight');
    await page.keyboard.press('ArrowDown');
    const cursor = await page.textContent('#heads-cursor');
    check(cursor.startsWith('head 1-1: retrieval score'), 'arrow keys move between heads on the heatmap, read out for screen readers', cursor);
    await page.keyboard.press('Enter');
    await page.waitForFunction(() => document.body.dataset.state !== 'ready', null, { timeout: 5_000 }).catch(() => {});
    await waitState(page, ['ready'], 120_000, log);
    check((await labState(page)).headView?.head === '1-1', 'Enter on the heatmap shows where that head looked');
    await page.focus('#heads-canvas');
    await page.keyboard.press('Shift+Enter');
    const chips = await page.locator('#masked-list .chip').allTextContents();
    await page.focus('#heads-canvas');
    await page.keyboard.press('Shift+Enter');
    check(chips.join() === '1-1' && (await page.locator('#masked-list .chip').count()) === 0, 'Shift+Enter masks the head and unmasks it again', chips.join());
    await page.focus('#tests');
    await page.keyboard.press('ArrowDown');
    const selected = await page.getAttribute('#tests li.selected', 'data-index');
    check(selected === '1', 'the arrow keys choose a test in the test list', `test ${selected}`);
    const grid = () => page.evaluate(() => document.getElementById('niah-canvas').toDataURL());
    const red = await grid();
    await page.selectOption('#palette', 'colour-blind');
    check((await grid()) !== red, 'the colour-blind palette redraws the needle grid');
    await page.selectOption('#palette', 'niah');
    check((await grid()) === red, 'and the usual palette draws it as before');

    // 3. The best head's view opens by itself.
    await next(page);
    await step(page, 3, log);
    const view = (await labState(page)).headView;
    const best = Object.entries(scores).map(([h, v]) => [h, v.reduce((a, b) => a + b, 0) / v.length]).sort((a, b) => b[1] - a[1])[0][0];
    check(view?.head === best, 'step 3: the view of the best head is shown', `${view?.head} (best ${best})`);
    check(view && view.steps.some((s) => s.hit), 'step 3: the best head copies from the needle in its view', `${view?.steps.filter((s) => s.hit).length} hits in ${view?.steps.length} steps`);

    // 4. The held-out needles as a batch.
    await next(page);
    await step(page, 4, log);
    await page.waitForFunction(() => document.getElementById('needles-info').textContent.includes('needles from'), null, { timeout: 30_000 });
    const batch = await page.textContent('#needles-info');
    await clickAndWait(page, '#run', log);
    const held = await labState(page);
    const needles = new Set(held.tests.map((t) => t.needle_index)).size;
    check(needles >= 5 && held.tests.length === needles * 3, 'step 4: a batch of held-out needles runs at 3 depths', `${batch}; ${held.tests.length} tests, ${pct(passRate(held.tests))} pass`);

    // 5. Masking: top-3 against random-3 on step 1's inputs.
    await next(page);
    await step(page, 5, log);
    const masked = await page.locator('#masked-list .chip').count();
    check(masked === 3 && (await page.inputValue('#lengths')) === '256:1024:3', 'step 5 masks the 3 best heads on step 1\'s inputs', `${masked} heads masked`);
    await clickAndWait(page, '#sweep-masked', log);
    const top = await labState(page);
    // The masked run is shown beside step 1's unmasked run of the same tests, with the score change.
    const compared = await page.textContent('#compare-summary');
    check(await page.isVisible('#compare') && compared.includes('run 1:') && compared.includes('points'),
      'step 5: the masked run is shown beside the unmasked run of the same tests', compared);
    await page.click('#mask-random');
    await clickAndWait(page, '#sweep-masked', log);
    const random = await labState(page);
    // Random-3 keeps passing, so its score change against run 1 is drawn.
    const versus = await page.textContent('#compare-summary');
    const drawn = await page.evaluate(() => {
      const c = document.getElementById('compare-diff-canvas');
      const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      const colours = new Set();
      for (let i = 0; i < px.length; i += 4) colours.add((px[i] << 16) | (px[i + 1] << 8) | px[i + 2]);
      return { width: c.width, colours: colours.size };
    });
    check(versus.includes('run 1:') && !versus.includes('no score change') && drawn.colours > 20,
      'step 5: the random-3 run is compared with run 1 on a score-change heatmap', `${versus}; ${drawn.colours} colours`);
    const [u, t, r] = [passRate(first.tests), passRate(top.tests), passRate(random.tests)];
    check(top.tests.length === 15 && random.tests.length === 15, 'step 5: both masked sweeps ran');
    check(t < u, 'step 5: masking the top-3 heads lowers the pass rate', `unmasked ${pct(u)}, top-3 ${pct(t)}, random-3 ${pct(r)}`);
    check(r > t, 'step 5: masking 3 random heads hurts less than the top-3', `random-3 ${pct(r)} vs top-3 ${pct(t)}`);
    const rows = await page.locator('#runs tbody tr, #runs tr').count();
    check(rows >= 4, 'step 5: the run table keeps the unmasked and masked runs', `${rows} rows`);

    // 6. Longer contexts.
    await next(page);
    await step(page, 6, log);
    check((await page.locator('#masked-list .chip').count()) === 0, 'step 6 clears the masks');
    await clickAndWait(page, '#run', log);
    const long = await labState(page);
    const lengths = [...new Set(long.tests.map((t) => t.length))];
    check(long.tests.length === needles * 2 && lengths.join() === '4096', 'step 6: the held-out needles run at 4096 tokens',
      `${long.tests.length} tests; ${pct(passRate(long.tests))} pass (at 512: ${pct(passRate(held.tests))})`);

    // 7. A head-score file: a published one where the shared folder has it, else the page's own export.
    await next(page);
    await step(page, 7, log);
    const published = path.join(ROOT, '../shared/refs/head_score/llama-2-7b-80k.json');
    let file = published;
    if (!fs.existsSync(published)) {
      console.log('skip: ../shared/refs is absent; step 7 imports the page\'s own export instead of a published file');
      file = path.join(os.tmpdir(), 'headscope-lesson-scores.json');
      fs.writeFileSync(file, JSON.stringify(scores));
    }
    await page.setInputFiles('#import-scores', file);
    await page.waitForFunction(() => document.getElementById('import-info').textContent.includes('layers'), null, { timeout: 30_000 });
    check(await page.evaluate(() => document.getElementById('scores-source').value === 'imported'), 'step 7: the imported file is shown',
      await page.textContent('#import-info'));
    check(await page.isDisabled('#lesson-next'), 'step 7 is the last step');
    const bad = await axe(page);
    check(bad.length === 0, 'axe-core: no serious or critical violation after the last step', bad.map((v) => v.id).join(', '));

    // Save the session to a file and open it in a fresh browser: the runs and their results come back.
    const [dl] = await Promise.all([page.waitForEvent('download'), page.click('#save-session')]);
    const sessionFile = path.join(os.tmpdir(), 'headscope-lesson-session.json');
    await dl.saveAs(sessionFile);
    const savedRuns = await page.locator('#run-shown option').count();
    const fresh = await browser.newContext();
    const other = await fresh.newPage({ viewport: { width: 1366, height: 768 } });
    await other.goto(`${srv.url}?backend=cpu`);
    await waitState(other, ['ready'], 300_000, log);
    await other.setInputFiles('#open-session', sessionFile);
    await other.waitForFunction(() => document.getElementById('status').textContent.startsWith('opened'), null, { timeout: 30_000 });
    const reopened = await other.locator('#run-shown option').count();
    check(reopened === savedRuns && savedRuns === 5, 'a saved session opens with every run in a fresh browser', `${reopened} of ${savedRuns} runs`);
    await other.selectOption('#run-shown', '0');
    const firstAgain = await labState(other);
    check(JSON.stringify(firstAgain.tests.map((t) => [t.id, t.recall])) === JSON.stringify(first.tests.map((t) => [t.id, t.recall])),
      'the reopened first run has step 1\'s tests and answers', `${firstAgain.tests.length} tests`);
    fs.writeFileSync(sessionFile, '{"0-0": [0.5]}');
    await other.setInputFiles('#open-session', sessionFile);
    await other.waitForFunction(() => !document.getElementById('error').hidden, null, { timeout: 30_000 });
    const refused = await other.textContent('#error-text');
    check(refused.includes('not a saved session'), 'a head-score file opened as a session is refused with a message', refused);
    await fresh.close();

    // The step travels with the page's state: a reload opens the lessons where they were.
    await page.reload();
    await waitState(page, ['ready'], 300_000, log);
    check(await page.isVisible('#lesson-panel') && (await page.textContent('#lesson-count')).startsWith('step 7'), 'a reload reopens the lessons at the same step');
    // The page in Simplified Chinese: the markup's strings, the lesson and the glossary switch; the
    // choice is remembered.
    await page.selectOption('#lang', 'zh');
    const zh = { run: await page.textContent('#run'), title: await page.textContent('#lesson-title'),
      count: await page.textContent('#lesson-count'), body: await page.textContent('#lesson-body'),
      term: await page.textContent('#glossary-list dt'), lang: await page.getAttribute('html', 'lang') };
    check(zh.run === '运行测试' && zh.lang === 'zh-Hans' && zh.count.startsWith('第 7 步'), 'the page switches to Simplified Chinese', JSON.stringify(zh).slice(0, 200));
    check(/[\u4e00-\u9fff]/.test(zh.title) && !/[a-z]{4,}/.test(zh.body.replace(/head_score|json|HeadScope|Llama|Mistral|Qwen|Yi/g, '')), 'the lesson reads in Chinese', zh.body.slice(0, 80));
    // Everything the page writes itself reads in Chinese too: the status line, the summary, the run
    // table and lists, the model panel, the progress and the chart controls (the experiment's own
    // text, i.e. needles, answers, contexts and file or model names, stays as it is).
    const english = await page.evaluate(() => {
      const content = 'textarea, input, .answer, .question, .ctx, .id, #head-steps td:nth-child(2), a[href^="http"], #lang, #error';
      const names = /lab model \(bundled\)|HeadScope lab|HeadScope|JSON|WebGPU|WebAssembly|CPU|GPU|KV|GQA|ROUGE|HeadKV|QRHead|RazorAttention|\bsoft\b|\bqr\b|JSONL|Shift|Enter|Llama|llama|Mistral|Mixtral|Qwen|\bYi\b|[\w.*-]*\.(json|jsonl|txt|png)|head_score|\bK\b/g;
      const found = [];
      const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
      for (let n = walk.nextNode(); n; n = walk.nextNode()) {
        const el = n.parentElement;
        if (!el || el.closest(content) || el.closest('[hidden]') || !el.getClientRects().length) continue;
        const text = n.textContent.replace(names, '');
        if (/[A-Za-z]{3,}/.test(text)) found.push(n.textContent.trim().slice(0, 80));
      }
      // The choices of the drop-down lists (run shown, compare with, masking mode, ...).
      for (const o of document.querySelectorAll('select:not(#lang) option')) {
        if (/[A-Za-z]{3,}/.test(o.textContent.replace(names, ''))) found.push(`option: ${o.textContent.trim().slice(0, 80)}`);
      }
      return found;
    });
    check(english.length === 0, 'the Chinese page shows no English text of its own', english.slice(0, 30).join(' | '));
    const zhAxe = await axe(page);
    check(zhAxe.length === 0, 'axe-core: no serious or critical violation in Chinese', zhAxe.map((v) => v.id).join(', '));
    await page.reload();
    await waitState(page, ['ready'], 300_000, log);
    check((await page.textContent('#run')) === '运行测试', 'a reload keeps the language');
    await page.selectOption('#lang', 'en');
    check((await page.textContent('#run')) === 'Run the sweep', 'and English comes back');
    await page.click('#lesson-close');
    check(!(await page.isVisible('#lesson-panel')), 'the close button hides the lessons');
    const errors = (await labState(page)).errors;
    check(errors.length === 0, 'no error was shown during the lessons', errors.join(' | '));
  } finally {
    await close();
    srv.close();
  }
  if (failures > 0) {
    console.log(`${failures} check(s) failed`);
    process.exit(1);
  }
  console.log('every lesson step works');
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
