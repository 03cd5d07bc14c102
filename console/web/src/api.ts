// Calls to Gantry's own API, on the origin that served the console: no
// other host is ever contacted (the server's Content-Security-Policy says
// connect-src 'self' too).

const TOKEN_KEY = 'gantry.token';

/** The bearer token lives in sessionStorage: it goes when the tab closes
 * and never appears in a URL, a cookie or the history. */
export function getToken(): string | null {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(token: string | null): void {
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
}

/** ApiError is a non-2xx answer in API.md's shape. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

export interface CallOptions {
  body?: unknown;
  /** raw sends body as is (a File for model uploads). */
  raw?: BodyInit;
  contentType?: string;
  signal?: AbortSignal;
}

export interface Answer<T> {
  status: number;
  headers: Headers;
  data: T;
}

/** request calls Gantry and returns the answer, throwing ApiError on a
 * non-2xx status. A 401 also tells the app, which asks for a token. */
export async function request<T>(method: string, path: string, opts: CallOptions = {}): Promise<Answer<T>> {
  const headers: Record<string, string> = { Accept: 'application/json' };
  const token = getToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  let body: BodyInit | undefined = opts.raw;
  if (opts.body !== undefined) {
    body = JSON.stringify(opts.body);
    headers['Content-Type'] = 'application/json';
  }
  if (opts.contentType) headers['Content-Type'] = opts.contentType;
  const resp = await fetch(path, { method, headers, body, signal: opts.signal, credentials: 'omit', cache: 'no-store' });
  const text = await resp.text();
  let data: unknown = text;
  if ((resp.headers.get('Content-Type') ?? '').includes('json') && text) {
    try {
      data = JSON.parse(text);
    } catch {
      // keep the text: the message below quotes it
    }
  }
  if (!resp.ok) {
    const e = data as { error_code?: string; message?: string; error?: string };
    const err = new ApiError(
      resp.status,
      e?.error_code ?? String(resp.status),
      e?.message ?? e?.error ?? (typeof data === 'string' && data ? data : resp.statusText),
    );
    if (resp.status === 401) window.dispatchEvent(new CustomEvent('gantry:unauthenticated', { detail: err }));
    throw err;
  }
  return { status: resp.status, headers: resp.headers, data: data as T };
}

export async function call<T>(method: string, path: string, opts: CallOptions = {}): Promise<T> {
  return (await request<T>(method, path, opts)).data;
}

export const enc = encodeURIComponent;

// Shapes of API.md and the README's extensions that the console reads.

export interface Replicas {
  desired: number;
  ready: number;
  starts?: ReplicaStart[];
}

/** One replica's cold start (README, API: Gantry extensions): its phase
 * and when each phase began, in Unix ms. */
export interface ReplicaStart {
  id: string;
  phase: 'schedule' | 'download' | 'process_start' | 'model_load' | 'ready' | 'first_response' | 'first_token' | string;
  requested_ms?: number;
  /** Nomad only: when the model's artifact began to download. */
  downloading_ms?: number;
  started_ms?: number;
  answered_ms?: number;
  ready_ms?: number;
  /** The first answered request's arrival and its answer's first byte
   * (first token): the last phase, first_response or first_token. */
  first_request_ms?: number;
  first_response_ms?: number;
}

export interface ServedEntity {
  name?: string;
  entity_name?: string;
  entity_version?: string;
  workload_size?: string;
  workload_type?: string;
  scale_to_zero_enabled?: boolean;
  min_provisioned_concurrency?: number;
  max_provisioned_concurrency?: number;
  environment_vars?: Record<string, string>;
  replica_concurrency?: number;
  external_model?: Record<string, unknown>;
  state?: { deployment?: string; deployment_state_message?: string };
  scaled_to_zero?: boolean;
  replicas?: Replicas;
}

export interface Route {
  served_model_name: string;
  traffic_percentage: number;
  shadow?: boolean;
}

export interface AutoCapture {
  catalog_name?: string;
  schema_name?: string;
  table_name_prefix?: string;
  enabled?: boolean;
  state?: { payload_table?: { name?: string } };
}

export interface EndpointConfig {
  served_entities: ServedEntity[];
  traffic_config?: { routes: Route[] };
  auto_capture_config?: AutoCapture;
  config_version?: number;
}

export interface Endpoint {
  name: string;
  id: string;
  creator?: string;
  creation_timestamp: number;
  last_updated_timestamp: number;
  state: { ready: string; config_update: string; message?: string };
  config?: EndpointConfig;
  pending_config?: EndpointConfig & { start_time: number };
  tags: { key: string; value?: string }[];
  permission_level?: string;
  endpoint_url?: string;
  ai_gateway?: { inference_table_config?: AutoCapture };
}

export interface ColSpec {
  name?: string;
  type: string;
  required?: boolean;
}

export interface ModelVersion {
  name: string;
  version: string;
  flavors: string[];
  signature?: { inputs?: ColSpec[]; outputs?: ColSpec[] };
  size_bytes: number;
  creation_timestamp: number;
}

export interface QueryResult {
  columns: string[];
  types: string[];
  rows: string[][];
}

export interface RouteTable {
  index: number;
  endpoints: {
    name: string;
    config_version: number;
    entities: { name: string; deployment: string; state: string; message?: string; replicas: { id: string; addr: string }[] }[];
  }[];
}

export interface MonitorMetric {
  window_start: string;
  served_entity: string;
  slice_key?: string;
  slice_value?: string;
  column: string;
  drift_type?: string;
  metric: string;
  value: number | null;
  threshold?: number;
  crossed?: boolean;
}

export interface Monitor {
  name: string;
  endpoint: string;
  granularity: string;
  columns?: { name: string; kind: string }[];
  thresholds?: Record<string, number>;
}

/** tableOf is the endpoint's inference table, when capture is on. */
export function tableOf(ep: Endpoint): string | null {
  const c = ep.config?.auto_capture_config ?? ep.ai_gateway?.inference_table_config;
  return c?.enabled ? (c.state?.payload_table?.name ?? 'on') : null;
}

/** query runs read-only SQL over an endpoint's inference table; {table}
 * stands for its name. */
export function query(endpoint: string, sql: string, signal?: AbortSignal): Promise<QueryResult> {
  return call<QueryResult>('POST', '/api/2.0/gantry/tables/query', { body: { endpoint, sql }, signal });
}
