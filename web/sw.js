// The lab without a network: after the first visit, the page, its two programs, the bundled lab model
// and the default inputs come from this cache when the network is gone (a classroom's Wi-Fi, a USB
// stick opened on a train). Online every request goes to the network first, so a new build or model
// is seen at once, and the copy is refreshed with what came back.
const CACHE = 'headscope-lab-v1';
// What the page loads besides the files its index.html names (those have hashed names, read below).
const FILES = [
  'worker_loader.js', 'worker.js', 'worker_bg.wasm', 'fonts/DejaVuSans.ttf',
  'models/lab/config.json', 'models/lab/generation_config.json', 'models/lab/tokenizer.json',
  'models/lab/tokenizer_config.json', 'models/lab/model.safetensors',
  'haystacks/kjv-john.txt', 'needles/heldout.jsonl', 'cot/two-hop.jsonl', 'cot/word-problems.jsonl',
];

self.addEventListener('install', (event) => {
  event.waitUntil((async () => {
    const cache = await caches.open(CACHE);
    const index = await fetch('./', { cache: 'no-store' });
    const html = await index.clone().text();
    const named = [...html.matchAll(/(?:href|src)="([^"]+\.(?:js|wasm|css))"/g)].map((m) => m[1]);
    await cache.put('./', index);
    await cache.addAll([...new Set([...FILES, ...named])]);
    await self.skipWaiting();
  })());
});

// The page that registered the worker is served by it from now on, not only after a reload.
self.addEventListener('activate', (event) => event.waitUntil(self.clients.claim()));

self.addEventListener('fetch', (event) => {
  const request = event.request;
  // Other origins (a model folder's URL) and other methods (HEAD checks) go to the network untouched.
  if (request.method !== 'GET' || new URL(request.url).origin !== self.location.origin) return;
  event.respondWith((async () => {
    try {
      const response = await fetch(request);
      if (response.ok) {
        const copy = response.clone();
        event.waitUntil(caches.open(CACHE).then((cache) => cache.put(request, copy)));
      }
      return response;
    } catch (offline) {
      // The page's address may carry ?backend=...: its copy is the one of ./
      const kept = await caches.match(request, { ignoreSearch: true });
      if (kept) return kept;
      throw offline;
    }
  })());
});
