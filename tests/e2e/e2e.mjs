// End-to-end test of the lab page in headless Chromium (WebGPU through SwiftShader).
//
// 1. `headscope detect` runs a small sweep on the lab model (the reference).
// 2. The page runs the same sweep on the CPU path (candle in WebAssembly): the heatmaps must appear,
//    the exported head_scores.json and tests.jsonl must match the CLI's (same greedy tokens, same hits,
//    head scores within 1e-6).
// 3. The page runs it on WebGPU: same greedy tokens as the CPU path, the same argmax for >= 99 % of
//    (step, head) pairs, head scores within 0.02.
// 4. The page's other views and its errors: a head's view, masking and the before/after rerun,
//    importing a head-score file, and bad inputs that must give messages, not crashes.
//
// Run it with `scripts/web.sh e2e` (builds the page first). Exit code 0 = every check passed.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { serve, launch, openLab, runSweep, labState, waitState, until, clickAndWait } from './lib.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const DIST = process.env.HEADSCOPE_DIST ?? path.join(ROOT, 'dist');
const SWEEP = { lengths: '256:512:2', depths: 2, maxNew: 32 }; // v4 restates the needle: 16 tokens cut the San Francisco answer short
// Every score the page offers, measured by the CLI's reference run too.
const SCORE_KINDS = ['eq1', 'official', 'soft', 'qr', 'induction', 'echo'];
// The chain-of-thought demo: two two-hop tasks, K heads, 48-token reasoning.
const COT = { tasks: 2, k: 2, maxStep: 48 };
const failures = [];

function check(ok, what, detail = '') {
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${what}${detail ? `: ${detail}` : ''}`);
  if (!ok) failures.push(what);
}

/** The reference: `headscope detect` on the same inputs. */
function cliDetect() {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'headscope-e2e-'));
  const args = [
    'run', '-q', '--locked', '-p', 'headscope-cli', '--', 'detect', '--out', out,
    '--haystack', 'public/haystacks/kjv-john.txt', '--lengths', SWEEP.lengths, '--depths', String(SWEEP.depths),
    '--max-new-tokens', String(SWEEP.maxNew), '--plain', '--score', SCORE_KINDS.join(','),
  ];
  console.log(`reference: cargo ${args.join(' ')}`);
  execFileSync('cargo', args, { cwd: ROOT, stdio: ['ignore', 'inherit', 'inherit'] });
  const scores = JSON.parse(fs.readFileSync(path.join(out, 'head_scores.json'), 'utf8'));
  const kinds = Object.fromEntries(SCORE_KINDS.filter((k) => k !== 'eq1')
    .map((k) => [k, JSON.parse(fs.readFileSync(path.join(out, `head_scores_${k}.json`), 'utf8'))]));
  const tests = fs.readFileSync(path.join(out, 'tests.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  // The chain-of-thought reference: `headscope cot` on the first tasks, masks from these scores.
  const tasks = path.join(out, 'cot-tasks.jsonl');
  const taskLines = fs.readFileSync(path.join(ROOT, 'public/cot/two-hop.jsonl'), 'utf8').trim().split('\n').slice(0, COT.tasks);
  fs.writeFileSync(tasks, taskLines.join('\n') + '\n');
  const cotArgs = [
    'run', '-q', '--locked', '-p', 'headscope-cli', '--', 'cot', '--out', path.join(out, 'cot'), '--tasks', tasks,
    '--scores', path.join(out, 'head_scores.json'), '--k', String(COT.k), '--seeds', '1',
    '--max-new-tokens-step', String(COT.maxStep), '--plain',
  ];
  console.log(`reference: cargo ${cotArgs.join(' ')}`);
  execFileSync('cargo', cotArgs, { cwd: ROOT, stdio: ['ignore', 'inherit', 'inherit'] });
  const cot = {};
  for (const mask of ['none', `top-${COT.k}`, `random-${COT.k}-s0`]) {
    cot[mask] = fs.readFileSync(path.join(out, 'cot', mask, 'cot.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  }
  fs.rmSync(out, { recursive: true, force: true });
  return { scores, kinds, tests, cot };
}

const mean = (v) => (v.length ? v.reduce((a, b) => a + b, 0) / v.length : 0);

/** Largest difference of per-head mean scores, and the heads present in only one. */
function scoreDiff(a, b) {
  let max = 0;
  const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
  for (const k of keys) {
    if (!(k in a) || !(k in b)) return { max: Infinity, missing: k };
    max = Math.max(max, Math.abs(mean(a[k]) - mean(b[k])));
  }
  return { max, heads: keys.size };
}

/** How much of the drawing on a canvas is not white, and how many colours it uses. */
async function canvasInk(page, id) {
  return page.evaluate((id) => {
    const c = document.getElementById(id);
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let ink = 0;
    const colours = new Set();
    for (let i = 0; i < d.length; i += 4) {
      if (d[i] < 250 || d[i + 1] < 250 || d[i + 2] < 250) ink++;
      colours.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
    }
    return { share: ink / (d.length / 4), colours: colours.size, width: c.width, height: c.height };
  }, id);
}

/** Clicks an export button and returns the downloaded file's text. */
async function download(page, button) {
  const [dl] = await Promise.all([page.waitForEvent('download'), page.click(button)]);
  const file = await dl.path();
  return { name: dl.suggestedFilename(), text: fs.readFileSync(file, 'utf8') };
}

/** Where to click on the heatmap canvas (CSS pixels from its corner) to hit the centre of cell (layer,
 * head), from the cell map the page publishes (headscope-plot's CellMap of the drawn chart). */
async function headCellPoint(page, layer, head) {
  await page.locator('#heads-canvas').scrollIntoViewIfNeeded();
  const box = await page.locator('#heads-canvas').boundingBox();
  const m = await page.evaluate(() => {
    const c = document.getElementById('heads-canvas');
    return { cells: JSON.parse(window.__headscope.headCells), w: c.width, h: c.height };
  });
  const { x0, y0, x1, y1, rows, cols } = m.cells;
  if (layer >= rows || head >= cols) return null;
  // The cell spans of CellMap::cell_rect: origin + floor(k * len / n).
  const at = (o, len, k, n) => o + Math.floor((k * len) / n);
  const cx = (at(x0, x1 - x0, head, cols) + at(x0, x1 - x0, head + 1, cols)) / 2;
  const cy = (at(y0, y1 - y0, layer, rows) + at(y0, y1 - y0, layer + 1, rows)) / 2;
  return { x: cx * (box.width / m.w), y: cy * (box.height / m.h) };
}

async function main() {
  const reference = cliDetect();
  const srv = await serve(DIST);
  const { browser, close } = await launch();
  try {
    // ---- CPU path vs the CLI ----------------------------------------------------------------------
    const cpu = await openLab(browser, srv.url, 'cpu');
    const cpuModel = (await labState(cpu.page)).model;
    check(cpuModel && !cpuModel.gpu, 'the CPU path loads the lab model', cpuModel?.backend);
    await cpu.page.check('#measure-every');
    const c = await runSweep(cpu.page, { ...SWEEP, log: cpu.log });
    check(c.tests.length === reference.tests.length, 'the page ran every test of the sweep', `${c.tests.length} of ${reference.tests.length}`);
    check(!(await cpu.page.locator('#sweep-note').isVisible()), 'a haystack longer than the prompts gets no repetition note');
    for (const id of ['niah-canvas', 'heads-canvas', 'activation-canvas']) {
      const ink = await canvasInk(cpu.page, id);
      check(ink.share > 0.1 && ink.colours > 20, `heatmap #${id} is drawn`, `${(ink.share * 100).toFixed(0)} % inked, ${ink.colours} colours, ${ink.width}x${ink.height}`);
    }
    const scoresFile = await download(cpu.page, '#export-scores');
    const testsFile = await download(cpu.page, '#export-tests');
    const pageScores = JSON.parse(scoresFile.text);
    const pageTests = testsFile.text.trim().split('\n').map((l) => JSON.parse(l));
    check(scoresFile.name === 'head_scores.json' && testsFile.name === 'tests.jsonl', 'exports are named as the CLI names them');
    let sameTokens = 0;
    let sameHits = 0;
    for (const r of reference.tests) {
      const p = pageTests.find((t) => t.id === r.id);
      if (!p) continue;
      if (JSON.stringify(p.generated_ids) === JSON.stringify(r.generated_ids)) sameTokens++;
      if (JSON.stringify(p.hits) === JSON.stringify(r.hits)) sameHits++;
      if (p.prompt_hash !== r.prompt_hash) check(false, `test ${r.id} has the CLI's prompt`, `${p.prompt_hash} vs ${r.prompt_hash}`);
    }
    check(sameTokens === reference.tests.length, 'CPU page and CLI generate the same greedy tokens', `${sameTokens}/${reference.tests.length} tests`);
    check(sameHits === reference.tests.length, 'CPU page and CLI find the same retrieval hits', `${sameHits}/${reference.tests.length} tests`);
    const d = scoreDiff(pageScores, reference.scores);
    check(d.max <= 1e-6, 'head_scores.json of the page equals the CLI\'s', `max |mean difference| ${d.max} over ${d.heads} heads`);

    // Every other score from the same sweep (the data-free ones from one more pass), exported under
    // the CLI's file names with the CLI's values; soft and qr come from attention weights, so they
    // agree to float rounding (wasm's and the native build's sums run in other orders).
    for (const kind of SCORE_KINDS.filter((k) => k !== 'eq1')) {
      await cpu.page.selectOption('#score-kind', kind);
      await waitState(cpu.page, ['ready'], 300_000, cpu.log);
      const f = await download(cpu.page, '#export-scores');
      const kd = scoreDiff(JSON.parse(f.text), reference.kinds[kind]);
      check(f.name === `head_scores_${kind}.json` && kd.max <= 1e-4, `the page's ${kind} scores equal the CLI's`,
        `${f.name}, max |mean difference| ${kd.max} over ${kd.heads} heads`);
    }
    await cpu.page.selectOption('#score-kind', 'eq1');

    // The chain-of-thought demo answers as `headscope cot` does, under the same three masks.
    await cpu.page.selectOption('#cot-set', 'two-hop');
    await cpu.page.fill('#cot-count', String(COT.tasks));
    await cpu.page.fill('#cot-k', String(COT.k));
    await cpu.page.fill('#cot-seed', '0');
    await cpu.page.fill('#cot-max', String(COT.maxStep));
    await clickAndWait(cpu.page, '#cot-run', cpu.log, 600_000);
    const cot = (await labState(cpu.page)).cot;
    let cotSame = 0;
    let cotAll = 0;
    for (const [mask, records] of Object.entries(reference.cot)) {
      for (const r of records) {
        cotAll++;
        const p = cot.find((a) => a.mask === mask && a.record.id === r.id && a.record.mode === r.mode);
        if (p && p.record.generated === r.generated && p.record.correct === r.correct) cotSame++;
      }
    }
    const cells = await cpu.page.locator('#cot-table td').count();
    check(cotAll === COT.tasks * 2 * 3 && cotSame === cotAll && cot.length === cotAll && cells === 6,
      'the chain-of-thought demo answers as headscope cot does under no mask, top-K and random-K', `${cotSame}/${cotAll} answers, ${cells} table cells`);

    // The KV-budget slider: letting go of it reruns the selected test with the top-K heads' KV heads
    // whole and a 32-position window elsewhere, and says what memory that saved.
    await cpu.page.selectOption('#kv-policy', 'heads');
    await cpu.page.fill('#mask-k', '2');
    await cpu.page.$eval('#kv-window', (e) => { e.value = '32'; e.dispatchEvent(new Event('input')); e.dispatchEvent(new Event('change')); });
    await cpu.page.waitForFunction(() => document.body.dataset.state !== 'ready', null, { timeout: 5_000 }).catch(() => {});
    await waitState(cpu.page, ['ready'], 300_000, cpu.log);
    const kv = await cpu.page.evaluate(() => {
      const r = document.getElementById('kv-result');
      return { saved: Number(r.dataset.saved), columns: r.children.length, info: document.getElementById('kv-info').textContent,
        shown: document.getElementById('kv-window-value').textContent };
    });
    check(kv.columns === 2 && kv.saved > 50 && kv.info.includes('KiB') && kv.shown === '32',
      'the KV slider reruns the test under the plan and shows the memory saved', `${kv.info}`);

    // ---- WebGPU vs the CPU path --------------------------------------------------------------------
    const gpu = await openLab(browser, srv.url, 'gpu');
    const gpuModel = (await labState(gpu.page)).model;
    check(gpuModel && gpuModel.gpu, 'the WebGPU path loads the lab model', gpuModel?.backend);
    if (gpuModel?.gpu) {
      const g = await runSweep(gpu.page, { ...SWEEP, log: gpu.log });
      let tokensSame = 0;
      let pairs = 0;
      let agree = 0;
      for (const t of c.tests) {
        const o = g.tests.find((x) => x.id === t.id);
        if (!o) continue;
        if (JSON.stringify(o.generated_ids) === JSON.stringify(t.generated_ids)) tokensSame++;
        const a = c.traces[t.id] ?? [];
        const b = g.traces[t.id] ?? [];
        for (let s = 0; s < Math.min(a.length, b.length); s++) {
          for (let h = 0; h < a[s].length; h++) {
            pairs++;
            if (a[s][h] === b[s][h]) agree++;
          }
        }
      }
      check(tokensSame === c.tests.length, 'WebGPU and CPU generate the same greedy tokens', `${tokensSame}/${c.tests.length} tests`);
      check(pairs > 0 && agree / pairs >= 0.99, 'WebGPU and CPU agree on the argmax of >= 99 % of (step, head) pairs', `${agree}/${pairs} = ${((100 * agree) / Math.max(pairs, 1)).toFixed(2)} %`);
      const gd = scoreDiff(g.scores, c.scores);
      check(gd.max <= 0.02, 'WebGPU head scores match the CPU path\'s', `max |mean difference| ${gd.max}`);
      console.log(`timings: CPU sweep ${c.sweep.seconds.toFixed(1)} s (${c.sweep.decode_tokens_per_second.toFixed(0)} tok/s decode), WebGPU sweep ${g.sweep.seconds.toFixed(1)} s (${g.sweep.decode_tokens_per_second.toFixed(0)} tok/s decode)`);
    }
    await gpu.page.close();

    // The parallel kernel set (what a real GPU gets: tiled matmul, flash prefill, parallel decode) compiled by the browser's WebGPU and held to
    // the CPU path on the same sweep (SwiftShader would choose the serial ones by itself).
    {
      const par = await openLab(browser, srv.url, 'gpu&kernels=parallel');
      const parModel = (await labState(par.page)).model;
      if (parModel?.gpu) {
        const g = await runSweep(par.page, { ...SWEEP, log: par.log });
        const same = c.tests.filter((t) => JSON.stringify(g.tests.find((x) => x.id === t.id)?.generated_ids) === JSON.stringify(t.generated_ids)).length;
        const gd = scoreDiff(g.scores, c.scores);
        check(same === c.tests.length && gd.max <= 0.02, 'WebGPU with the parallel kernel set generates the CPU path\'s tokens and scores',
          `${same}/${c.tests.length} tests, max |mean difference| ${gd.max}`);
      } else {
        check(false, 'WebGPU with the parallel decode kernels loads the lab model', JSON.stringify(parModel));
      }
      await par.page.close();
    }

    // A laptop's screen (1366x768) shows the inputs, the Run button and the top of the results at once.
    {
      const small = await openLab(browser, srv.url, 'cpu', { width: 1366, height: 768 });
      const run = await small.page.locator('#run').boundingBox();
      const results = await small.page.locator('#summary').boundingBox();
      const needle = await small.page.locator('#needle').boundingBox();
      check(run.y + run.height <= 768 && results.y + results.height <= 768 && needle.y >= 0,
        'at 1366x768 the inputs, Run and the results fit one screen', `Run at y ${Math.round(run.y)}, results at y ${Math.round(results.y)}`);
      await small.page.close();
    }

    // Offline: after a first visit the service worker keeps the page and the lab model; with the
    // network cut, the page loads again and runs a sweep.
    {
      const context = await browser.newContext({ viewport: { width: 1400, height: 1000 } });
      const p = await context.newPage();
      const offlineLog = [];
      p.on('pageerror', (e) => offlineLog.push(`[pageerror] ${e.message}`));
      await p.goto(`${srv.url}?backend=cpu`);
      await waitState(p, ['ready'], 300_000, offlineLog);
      await p.waitForFunction(async () => {
        const r = await navigator.serviceWorker.getRegistration();
        const kept = await (await caches.open('headscope-lab-v1')).keys();
        return Boolean(r?.active) && kept.some((k) => k.url.endsWith('model.safetensors')) && kept.some((k) => k.url.endsWith('.wasm'));
      }, null, { timeout: 120_000, polling: 500 });
      await context.setOffline(true);
      await p.reload();
      await waitState(p, ['ready'], 300_000, offlineLog);
      await p.fill('#lengths', '256');
      await p.fill('#depths', '2');
      await clickAndWait(p, '#run', offlineLog, 300_000);
      const offline = await labState(p);
      check(offline.tests.length === 2 && offline.sweep && !offline.sweep.cancelled && offlineLog.length === 0,
        'with the network cut after a first visit, the page loads and runs a sweep', `${offline.tests.length} tests`);
      await context.close();
    }

    // auto: WebGPU on a hardware adapter; on a software one (SwiftShader here) the faster CPU path,
    // with the reason on the page.
    const auto = await openLab(browser, srv.url, 'auto');
    const autoModel = (await labState(auto.page)).model;
    const software = /software|swiftshader/i.test(gpuModel?.backend ?? '');
    check(autoModel && (gpuModel?.gpu && !software ? autoModel.gpu : !autoModel.gpu && Boolean(autoModel.fallback_reason)),
      'auto uses WebGPU only on a hardware adapter, and says why when it does not', autoModel?.fallback_reason ?? autoModel?.backend);
    await auto.page.close();

    // ---- the other views, on the CPU page ----------------------------------------------------------
    const page = cpu.page;
    const ranked = Object.entries(c.scores).map(([k, v]) => [k, mean(v)]).sort((a, b) => b[1] - a[1]);
    const [layer, head] = ranked[0][0].split('-').map(Number);
    const point = await headCellPoint(page, layer, head);
    check(point !== null, `the heatmap cell of head ${layer}-${head} is found`);
    if (point) {
      await page.locator('#heads-canvas').click({ position: point });
      await waitState(page, ['ready'], 120_000, cpu.log);
      const s = await labState(page);
      const rows = await page.locator('#head-steps tr').count();
      check(s.headView && s.headView.head === `${layer}-${head}` && rows === s.headView.steps.length + 1,
        `clicking head ${layer}-${head} shows where it looked at every step`, `${rows - 1} steps`);
      check(s.headView.steps.some((st) => st.hit) === (ranked[0][1] > 0), 'the head view marks the copied answer tokens');
      // Shift+click masks the head; "mask top-K" replaces the set.
      await page.locator('#heads-canvas').click({ position: point, modifiers: ['Shift'] });
      check((await page.locator('#masked-list .chip').allTextContents()).join(',') === `${layer}-${head}`, 'Shift+click masks a head');
    }
    await page.fill('#mask-k', '2');
    await page.click('#mask-top');
    const masked = await page.locator('#masked-list .chip').allTextContents();
    check(masked.length === 2 && masked[0] === ranked[0][0], 'mask top-K takes the best heads', masked.join(','));
    await page.click('#rerun');
    await waitState(page, ['ready'], 120_000, cpu.log);
    const before = await page.getAttribute('#rerun-result', 'data-before');
    const after = await page.getAttribute('#rerun-result', 'data-after');
    const cols = await page.locator('#rerun-result > div').count();
    check(cols === 2 && before !== null && after !== null, 'the rerun shows the answer before and after masking side by side', `${JSON.stringify(before)} -> ${JSON.stringify(after)}`);
    await page.fill('#mask-random-k', '3');
    await page.fill('#mask-seed', '7');
    await page.click('#mask-random');
    const random = await page.locator('#masked-list .chip').allTextContents();
    check(random.length === 3 && random.every((h) => mean(c.scores[h]) <= 0.1), 'mask K random draws only non-retrieval heads', random.join(','));

    // Runs: a masked sweep is kept beside the unmasked one, and masking plans still rank heads by the
    // unmasked run.
    await page.fill('#mask-k', '2');
    await page.click('#mask-top');
    await clickAndWait(page, '#sweep-masked', cpu.log);
    const runs = await page.locator('#runs tr').allTextContents();
    const options = await page.locator('#run-shown option').allTextContents();
    check(runs.length === 3 && options.length === 2 && options[1].includes('top-2') && runs[2].includes('points'),
      'a masked sweep is kept as a second run, named by its mask, with its pass rate beside the unmasked run', runs.slice(1).join(' | '));
    await page.click('#mask-clear');
    await page.click('#mask-top');
    check((await page.locator('#masked-list .chip').allTextContents()).join(',') === masked.join(','),
      'while a masked run is shown, top-K still ranks heads by the unmasked run', masked.join(','));
    await page.selectOption('#run-shown', '0');
    check((await labState(page)).tests.length === c.tests.length, 'choosing a run shows its tests again');
    // A typo in the lengths is answered at once and the runs stay.
    const lengthsBefore = await page.inputValue('#lengths');
    await page.fill('#lengths', '256:abc');
    await page.click('#run');
    const typo = await page.textContent('#error-text');
    check(typo.includes('context lengths') && (await page.locator('#runs tr').count()) === 3 && !(await page.textContent('#progress-text')).includes('starting'),
      'a typo in the lengths is reported and keeps the runs', typo);
    await page.fill('#lengths', lengthsBefore);
    await page.click('#error-close');
    // A picture chosen as the haystack is refused, not read as text.
    const haystackBefore = await page.inputValue('#haystack');
    await page.setInputFiles('#haystack-file', path.join(ROOT, 'docs/web-lab.png'));
    await page.waitForFunction(() => document.getElementById('error-text').textContent.includes('not a text file'), null, { timeout: 30_000 });
    check((await page.inputValue('#haystack')) === haystackBefore, 'an image chosen as the haystack is refused with a message and the haystack kept');
    await page.click('#error-close');

    // Import: the page's own export, then a published file when the shared folder is present.
    const exported = path.join(os.tmpdir(), 'headscope-e2e-scores.json');
    fs.writeFileSync(exported, scoresFile.text);
    await page.setInputFiles('#import-scores', exported);
    await page.waitForFunction(() => document.getElementById('import-info').textContent.includes('layers'));
    check((await page.textContent('#import-info')).includes('8 layers x 12 heads'), 'an exported head-score file imports back', await page.textContent('#import-info'));
    const published = path.join(ROOT, '../shared/refs/head_score/Mistral-7B-v0.2-hf.json');
    if (fs.existsSync(published)) {
      await page.setInputFiles('#import-scores', published);
      await page.waitForFunction(() => document.getElementById('import-info').textContent.includes('Mistral'));
      const ink = await canvasInk(page, 'heads-canvas');
      check(ink.width > 640 && ink.colours > 20, 'a published 32 x 32 head-score file is drawn', `${ink.width}x${ink.height}`);
      await page.click('#mask-top');
      const err = await page.textContent('#error-text');
      check(err.includes('32 x 32') || err.includes('32 layers'), 'masking by scores of another model is refused with a message', err);
    } else {
      console.log('skip: ../shared/refs/head_score is absent (published files ship with the developers\' shared folder)');
    }
    // A hybrid's file: Jamba-v0.1's detect run on the lent H200 (4 attention layers of 32 heads; random
    // weights, so no test passed and every list is empty). It opens and its grid is drawn.
    await page.setInputFiles('#import-scores', path.join(ROOT, 'bench/results/2026-12-06/table1/jamba-v0.1/detect/head_scores.json'));
    await page.waitForFunction(() => document.getElementById('import-info').textContent.includes('4 layers x 32 heads'), null, { timeout: 30_000 });
    const jambaInk = await canvasInk(page, 'heads-canvas');
    const jambaCells = JSON.parse(await page.evaluate(() => window.__headscopeHeadCells || '{}'));
    check(jambaInk.width > 640 && jambaCells.rows === 4 && jambaCells.cols === 32,
      'a Jamba head-score file (4 attention layers x 32 heads) imports and its grid is drawn', `${jambaInk.width}x${jambaInk.height}, ${jambaCells.rows} x ${jambaCells.cols} cells`);

    // Remember and share: a copied link opens the same experiment in a fresh browser and runs to the
    // same head scores; a reload restores the session; "Start over" forgets it.
    const form = ['#needle', '#question', '#answer', '#lengths', '#depths'];
    const formBefore = await Promise.all(form.map((f) => page.inputValue(f)));
    const experiment = ['The secret ingredient of the lighthouse soup is smoked fennel.',
      'What is the secret ingredient of the lighthouse soup?', 'smoked fennel', '256:384:2', '2'];
    for (const [i, f] of form.entries()) await page.fill(f, experiment[i]);
    await page.selectOption('#scores-source', 'sweep');
    await page.click('#mask-clear');
    await page.fill('#mask-k', '2');
    await page.click('#mask-top');
    const sharedMask = await page.locator('#masked-list .chip').allTextContents();
    await clickAndWait(page, '#run', cpu.log);
    const here = await labState(page);
    await page.click('#copy-link');
    const link = page.url();
    check(link.includes('#state='), 'Copy link puts the experiment in the address bar', `${link.length} characters`);
    const context = await browser.newContext({ viewport: { width: 1400, height: 1000 } });
    const fresh = await context.newPage();
    const freshLog = [];
    fresh.on('pageerror', (e) => freshLog.push(`[pageerror] ${e.message}`));
    await fresh.goto(link);
    await waitState(fresh, ['ready'], 300_000, freshLog);
    const opened = await Promise.all(form.map((f) => fresh.inputValue(f)));
    const freshMask = await fresh.locator('#masked-list .chip').allTextContents();
    check(JSON.stringify(opened) === JSON.stringify(experiment) && sharedMask.length === 2 && freshMask.join(',') === sharedMask.join(','),
      'the link opens the same inputs and masked heads in a fresh browser', `${opened[3]} x ${opened[4]}, masked ${freshMask.join(',')}`);
    await clickAndWait(fresh, '#run', freshLog);
    const there = await labState(fresh);
    check(there.tests.length === here.tests.length && JSON.stringify(there.scores) === JSON.stringify(here.scores),
      'run there, the link\'s experiment gives the same head scores', `${there.tests.length} tests`);
    await fresh.fill('#lengths', '300');
    await fresh.goto(link.split('#')[0]);
    await waitState(fresh, ['ready'], 300_000, freshLog);
    check((await fresh.inputValue('#lengths')) === '300' && (await fresh.inputValue('#needle')) === experiment[0]
      && (await fresh.locator('#masked-list .chip').count()) === sharedMask.length,
      'a reload restores the last session\'s inputs and masks');
    await fresh.click('#start-over');
    await fresh.waitForFunction(() => document.getElementById('lengths').value !== '300', null, { timeout: 60_000 });
    await waitState(fresh, ['ready'], 300_000, freshLog);
    check((await fresh.inputValue('#needle')) !== experiment[0] && (await fresh.locator('#masked-list .chip').count()) === 0
      && freshLog.length === 0, 'Start over forgets them', freshLog.join(' | '));
    await context.close();
    for (const [i, f] of form.entries()) await page.fill(f, formBefore[i]);
    await page.click('#mask-clear');

    // Cancelling a sweep stops it between tests and keeps what finished. Its haystack is the short
    // village text, which 1024-token prompts repeat: the page says so.
    const longHaystack = await page.inputValue('#haystack');
    await page.fill('#haystack', fs.readFileSync(path.join(ROOT, 'public/haystacks/village.txt'), 'utf8'));
    await page.fill('#answer', 'eat a sandwich and sit in Dolores Park on a sunny day');
    await page.fill('#lengths', '256:1024:5');
    await page.fill('#depths', '5');
    await page.click('#run');
    await page.waitForFunction(() => (window.__headscope?.testsDone ?? 0) >= 1, null, { timeout: 120_000 });
    await page.click('#cancel');
    await waitState(page, ['ready'], 120_000, cpu.log);
    const cancelled = await labState(page);
    check(cancelled.sweep?.cancelled === true && cancelled.tests.length >= 1 && cancelled.tests.length < 25,
      'Cancel stops a sweep and keeps the finished tests', `${cancelled.tests.length} of 25 ran`);
    const repeatNote = await page.locator('#sweep-note').isVisible() ? await page.textContent('#sweep-note') : '';
    check(/1024-token prompts repeat it about [3-4] times/.test(repeatNote),
      'a haystack the prompts repeat is said to repeat', repeatNote);
    await page.fill('#haystack', longHaystack);

    // Other model sources: a chosen folder, and a URL (fetched once, then served from the Cache API).
    await page.setInputFiles('#model-files', path.join(ROOT, 'public/models/lab'));
    // The files are read before the load starts: wait for the model to change, not for 'ready'.
    await page.waitForFunction(() => JSON.parse(window.__headscope?.model ?? 'null')?.name === 'lab', null, { timeout: 120_000 })
      .catch(() => {});
    await waitState(page, ['ready'], 120_000, cpu.log);
    const picked = (await labState(page)).model;
    check(picked?.name === 'lab' && picked.hash === cpuModel.hash, 'a chosen model folder loads (same content hash as the bundled model)', picked?.name);
    await page.fill('#model-url', `${srv.url}models/lab`);
    await page.click('#load-url');
    await waitState(page, ['ready'], 120_000, cpu.log);
    const fromUrl = (await labState(page)).model;
    const cached = await page.evaluate(async () => (await (await caches.open('headscope-models-v1')).keys()).map((r) => r.url));
    check(fromUrl?.hash === cpuModel.hash && cached.some((u) => u.endsWith('/models/lab/model.safetensors')),
      'a model URL loads and its files are kept in the Cache API', `${cached.length} cached files`);

    // A kept copy is checked with the server: an unchanged model is not downloaded again (a HEAD
    // request each), a model changed at the same URL is. A second server, on another origin, serves a
    // copy of the lab model that the test can change.
    const changing = fs.mkdtempSync(path.join(os.tmpdir(), 'headscope-e2e-changing-'));
    for (const f of ['config.json', 'tokenizer.json', 'tokenizer_config.json', 'generation_config.json', 'model.safetensors']) {
      fs.copyFileSync(path.join(ROOT, 'public/models/lab', f), path.join(changing, f));
    }
    const srv2 = await serve(changing);
    const weights = '/model.safetensors';
    // Loads the URL and waits until the server has seen `requests` (a function) hold, then for the page.
    const loadFrom = async (requests, what) => {
      await page.fill('#model-url', srv2.url.replace(/\/$/, ''));
      await page.click('#load-url');
      await until(requests, 60_000, what).catch(async (e) => {
        const shown = await page.evaluate(() => document.getElementById('error-text').textContent);
        throw new Error(`${e.message}; the page says: ${shown}\n${cpu.log.slice(-10).join('\n')}`);
      });
      await waitState(page, ['ready'], 120_000, cpu.log);
      return (await labState(page)).model;
    };
    const first = await loadFrom(() => srv2.requests('GET', weights) === 1, 'the model file is downloaded');
    const again = await loadFrom(() => srv2.requests('HEAD', weights) === 1, 'the kept model file is checked');
    // One weight changes (the lowest bit of the file's last byte: a mantissa bit of the last tensor).
    const file = path.join(changing, 'model.safetensors');
    const bytes = fs.readFileSync(file);
    bytes[bytes.length - 1] ^= 1;
    fs.writeFileSync(file, bytes);
    fs.utimesSync(file, new Date(), new Date(Date.now() + 10_000));
    const changed = await loadFrom(() => srv2.requests('GET', weights) === 2, 'the changed model file is downloaded');
    check(first?.hash === cpuModel.hash && again?.hash === first.hash && srv2.requests('GET', weights) === 2
      && srv2.requests('GET', '/config.json') === 1 && changed?.hash !== first.hash,
      'a kept model is checked with its server: unchanged files are not downloaded again, a file changed at its URL is',
      `hashes ${first?.hash?.slice(0, 8)} ${again?.hash?.slice(0, 8)} ${changed?.hash?.slice(0, 8)}`);
    // An optional file deleted from the folder is dropped from the cache as well.
    const kept = () => page.evaluate(async () => (await (await caches.open('headscope-models-v1')).keys()).map((r) => r.url));
    const optional = `${srv2.url.replace(/\/$/, '')}/generation_config.json`;
    const keptBefore = (await kept()).includes(optional);
    fs.rmSync(path.join(changing, 'generation_config.json'));
    const checks = srv2.requests('HEAD', weights);
    const without = await loadFrom(() => srv2.requests('HEAD', weights) === checks + 1, 'the model is loaded again');
    const keptAfter = (await kept()).includes(optional);
    check(keptBefore && !keptAfter && without?.layers === 8,
      'an optional file deleted from the model folder is dropped from the cache, and the model still loads',
      `kept before ${keptBefore}, after ${keptAfter}`);
    srv2.close();
    fs.rmSync(changing, { recursive: true, force: true });

    // Bad inputs: messages in the page, never a crash.
    await page.selectOption('#scores-source', 'sweep');
    await page.fill('#answer', 'ride a cable car');
    await page.click('#run');
    await page.waitForFunction(() => document.getElementById('error-text').textContent.includes('not part of the needle'), null, { timeout: 30_000 });
    check(true, 'an answer that is not in the needle is reported');
    await page.fill('#answer', 'eat a sandwich and sit in Dolores Park on a sunny day');
    await page.fill('#lengths', '9000');
    await page.click('#run');
    await page.waitForFunction(() => document.getElementById('error-text').textContent.includes('max_position_embeddings'), null, { timeout: 30_000 });
    check(true, 'a context longer than the model handles is reported');
    const notModel = fs.mkdtempSync(path.join(os.tmpdir(), 'headscope-e2e-notmodel-'));
    fs.writeFileSync(path.join(notModel, 'notes.txt'), 'not a model');
    await page.setInputFiles('#model-files', notModel);
    await page.waitForFunction(() => document.getElementById('error-text').textContent.includes('config.json'), null, { timeout: 30_000 });
    check(true, 'a file that is not a model is reported', await page.textContent('#error-text'));
    await page.click('#load-bundled');
    await waitState(page, ['ready'], 120_000, cpu.log);
    const crashes = cpu.log.filter((l) => l.includes('panicked') || l.includes('[pageerror]'));
    check(crashes.length === 0, 'no panic or page error during the whole run', crashes.join(' | '));
  } finally {
    await close();
    srv.close();
  }
  if (failures.length) {
    console.log(`\n${failures.length} check(s) failed: ${failures.join('; ')}`);
    process.exit(1);
  }
  console.log('\nall end-to-end checks passed');
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
