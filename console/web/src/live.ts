// Live updates without reloads. The endpoints list and each endpoint are
// blocking queries for any caller (GET /api/2.0/serving-endpoints[/{name}]
// ?index=N&wait=25s): the server holds the call until the answer this
// caller would get differs from the one it had (a state, a replica, a
// cold-start phase, a grant), so a page shows a change within a round
// trip, and never polls. The index is the X-Gantry-Index of the last
// answer, an opaque fingerprint of it (README, API: Gantry extensions).

import { ApiError, request } from './api';

// Under a minute, so that no proxy in front of Gantry times the call out.
const WAIT = '25s';

/** Every live watch's wake-up, for poke. */
const watches = new Set<() => void>();

/** poke re-reads every watched path now, after the console itself changed
 * something (the server would wake the watches too, a round trip later). */
export function poke(): void {
  for (const wake of watches) wake();
}

const seeds = new Map<string, unknown>();

/** seed gives the next watch of path an answer to show first: that of the
 * write that led to the page, which the server gave a moment ago. */
export function seed(path: string, data: unknown): void {
  seeds.clear(); // only the next page's
  seeds.set(path, data);
}

/** watch calls onData with path's answer at once and then each time it
 * changes, and onError with a failed call (it tries again a few seconds
 * later: the server may be restarting). The returned function stops it. */
export function watch<T>(path: string, onData: (data: T) => void | Promise<void>, onError?: (e: unknown) => void | Promise<void>): () => void {
  let stopped = false;
  let index = '';
  let ctl: AbortController | null = null;
  let wakeSleep: (() => void) | null = null;
  const sleep = (ms: number) =>
    new Promise<void>((resolve) => {
      const t = setTimeout(resolve, ms);
      wakeSleep = () => {
        clearTimeout(t);
        resolve();
      };
    });
  const wake = () => {
    index = ''; // answer at once
    ctl?.abort();
    wakeSleep?.();
  };
  watches.add(wake);

  const first = seeds.get(path) as T | undefined;
  seeds.delete(path);

  void (async () => {
    if (first !== undefined) await onData(first);
    while (!stopped) {
      ctl = new AbortController();
      const sep = path.includes('?') ? '&' : '?';
      const url = index ? `${path}${sep}index=${encodeURIComponent(index)}&wait=${WAIT}` : path;
      try {
        const a = await request<T>('GET', url, { signal: ctl.signal });
        if (stopped) return;
        const next = a.headers.get('X-Gantry-Index') ?? '';
        const changed = !index || next !== index;
        index = next;
        if (changed) await onData(a.data);
        // A server without the blocking query answers at once and names
        // no index: fall back to polling rather than spinning.
        if (!next) await sleep(5000);
      } catch (e) {
        if (stopped) return;
        if (e instanceof DOMException && e.name === 'AbortError') continue; // poked
        index = '';
        await onError?.(e);
        await sleep(e instanceof ApiError ? 5000 : 2000);
      }
    }
  })();

  return () => {
    stopped = true;
    watches.delete(wake);
    ctl?.abort();
    wakeSleep?.();
  };
}
