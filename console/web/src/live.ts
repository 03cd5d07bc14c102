// Live updates without reloads. The route table is a blocking query
// (GET /api/2.0/gantry/routes?index=N&wait=...): it answers as soon as a
// replica starts or stops, a deployment changes state or a config switches,
// so a page that re-reads its endpoints when it answers shows changes
// within a round trip. Only admins may read the route table; for other
// callers (403) the console falls back to polling.

import { ApiError, request, type RouteTable } from './api';

type Listener = (rt: RouteTable | null) => void | Promise<void>;

const listeners = new Set<Listener>();
let table: RouteTable | null = null;
let busy = false;
let started = false;
let wake: (() => void) | null = null;

/** subscribe calls fn on every change (and at once); the returned
 * function unsubscribes. */
export function subscribe(fn: Listener): () => void {
  listeners.add(fn);
  void fn(table);
  if (!started) {
    started = true;
    void loop();
  }
  return () => listeners.delete(fn);
}

/** routeTable is the latest route table, or null for non-admins. */
export function routeTable(): RouteTable | null {
  return table;
}

/** setBusy shortens the wait while something is rolling out: an
 * endpoint's own state (IN_PROGRESS → NOT_UPDATING) is not in the route
 * table, so the console re-reads it every 1.5 s until it settles. */
export function setBusy(b: boolean): void {
  const was = busy;
  busy = b;
  if (b && !was && wake) wake();
}

/** poke re-reads now, after the console itself changed something. */
export function poke(): void {
  if (wake) wake();
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    wake = () => {
      clearTimeout(t);
      resolve();
    };
  });
}

async function notify(): Promise<void> {
  await Promise.allSettled([...listeners].map((fn) => fn(table)));
}

async function loop(): Promise<void> {
  let index = 0;
  let poll = false; // not an admin: plain polling
  for (;;) {
    if (poll || document.hidden) {
      await sleep(busy ? 1500 : 5000);
      if (!document.hidden) await notify();
      continue;
    }
    const ctl = new AbortController();
    wake = () => ctl.abort();
    try {
      const wait = busy ? '1500ms' : '25s';
      const a = await request<RouteTable>('GET', `/api/2.0/gantry/routes?index=${index}&wait=${wait}`, { signal: ctl.signal });
      index = Number(a.headers.get('X-Gantry-Index') ?? a.data.index ?? 0);
      table = a.data;
      await notify();
    } catch (e) {
      if (e instanceof ApiError && e.status === 403) {
        poll = true;
        table = null;
      } else if (!(e instanceof DOMException && e.name === 'AbortError')) {
        await sleep(2000); // the server is away: try again soon
      }
      await notify();
    }
  }
}
