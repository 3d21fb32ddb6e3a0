// The Herald console: one page, live through /api/events (Server-Sent Events).
import { render } from 'preact';
import { useEffect, useMemo, useState } from 'preact/hooks';

interface ServiceInfo {
  name: string;
  state: string;
  pid: number | null;
  restarts: number;
  uptimeMs: number;
  restartInMs: number | null;
  lastExit: { code: number | null; signal: string | null; at: number } | null;
}
interface GroupView {
  group: string;
  handled: number;
  lag: number;
  handleRate: number;
  oldestUnhandledAt: number | null;
}
interface TopicView {
  name: string;
  partitions: number;
  published: number;
  publishRate: number;
  groups: GroupView[];
}
interface Sample {
  at: number;
  topics: Record<string, { published: number; groups: Record<string, { handled: number; lag: number; lagSeconds?: number }> }>;
}
interface DeadLetterSummary {
  id: string;
  group: string;
  topic: string;
  type: string | null;
  key: string | null;
  status: string;
  attempts: number;
  error: string;
  lastFailedAt: number;
}
interface Snapshot {
  name: string;
  at: number;
  services: ServiceInfo[] | null;
  topics: TopicView[];
  history: Sample[];
  deadLetters: { total: number; entries: DeadLetterSummary[] };
  sagas: { available: boolean; byState: Record<string, number> };
  streams: { available: boolean; views: string[] };
  error?: string;
}

async function api<T>(path: string, method: 'GET' | 'POST' = 'GET'): Promise<T> {
  const r = await fetch(path, { method });
  const body = (await r.json()) as T & { error?: { code: string; message: string } };
  if (!r.ok) throw new Error(body.error ? `${body.error.code}: ${body.error.message}` : `HTTP ${r.status}`);
  return body;
}

const COLORS = ['#2563eb', '#dc2626', '#16a34a', '#9333ea', '#ea580c', '#0891b2', '#4d7c0f', '#be185d'];
const fmtTime = (t: number): string => new Date(t).toLocaleTimeString();
const fmtUptime = (ms: number): string => (ms < 60_000 ? `${Math.round(ms / 1000)} s` : ms < 3_600_000 ? `${Math.floor(ms / 60_000)} min` : `${(ms / 3_600_000).toFixed(1)} h`);
const slug = (s: string): string => s.replace(/[^A-Za-z0-9_.-]/g, '_');

function useSnapshot(): { snap: Snapshot | null; live: boolean } {
  const [snap, setSnap] = useState<Snapshot | null>(null);
  const [live, setLive] = useState(false);
  useEffect(() => {
    const es = new EventSource('/api/events');
    es.addEventListener('snapshot', (e) => {
      setSnap(JSON.parse((e as MessageEvent<string>).data) as Snapshot);
      setLive(true);
    });
    es.onerror = () => setLive(false);
    return () => es.close();
  }, []);
  return { snap, live };
}

interface Series {
  label: string;
  points: Array<[number, number]>;
}

/** The smallest of 1, 2, 5 × 10^k at or above `v` (at least 2, so the middle tick is a whole number for counts). */
function niceCeil(v: number): number {
  if (v <= 2) return 2;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

const fmtTick = (v: number): string => (Number.isInteger(v) ? String(v) : v.toFixed(1));

/** A line chart as plain SVG: time on x, value on y, one line per series. */
function LineChart({ title, series, unit, testId }: { title: string; series: Series[]; unit: string; testId: string }) {
  const w = 560;
  const h = 180;
  const pad = { l: 48, r: 8, t: 8, b: 22 };
  const all = series.flatMap((s) => s.points);
  const t0 = Math.min(...all.map((p) => p[0]));
  const t1 = Math.max(...all.map((p) => p[0]));
  const vmax = niceCeil(Math.max(0, ...all.map((p) => p[1])));
  const x = (t: number): number => pad.l + (t1 > t0 ? ((t - t0) / (t1 - t0)) * (w - pad.l - pad.r) : 0);
  const y = (v: number): number => h - pad.b - (v / vmax) * (h - pad.t - pad.b);
  const last = (s: Series): number => s.points[s.points.length - 1]?.[1] ?? 0;
  return (
    <figure data-testid={testId}>
      <figcaption>{title}</figcaption>
      <svg viewBox={`0 0 ${w} ${h}`} width="100%" role="img" aria-label={`${title}: ${series.map((s) => `${s.label} ${last(s)} ${unit}`).join(', ')}`}>
        <line x1={pad.l} y1={h - pad.b} x2={w - pad.r} y2={h - pad.b} stroke="#9ca3af" />
        <line x1={pad.l} y1={pad.t} x2={pad.l} y2={h - pad.b} stroke="#9ca3af" />
        {[0, 0.5, 1].map((f) => (
          <g key={f}>
            <line x1={pad.l} x2={w - pad.r} y1={y(vmax * f)} y2={y(vmax * f)} stroke="#eef0f3" />
            <text x={pad.l - 4} y={y(vmax * f) + 4} font-size="10" text-anchor="end" fill="#4b5563">
              {fmtTick(vmax * f)}
            </text>
          </g>
        ))}
        {all.length > 0 && (
          <>
            <text x={pad.l} y={h - 6} font-size="10" fill="#4b5563">
              {fmtTime(t0)}
            </text>
            <text x={w - pad.r} y={h - 6} font-size="10" text-anchor="end" fill="#4b5563">
              {fmtTime(t1)}
            </text>
          </>
        )}
        {series.map((s, i) => (
          <polyline key={s.label} fill="none" stroke={COLORS[i % COLORS.length]} stroke-width="2" points={s.points.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(' ')} />
        ))}
      </svg>
      <div class="legend">
        {series.map((s, i) => (
          <span key={s.label} style={{ '--c': COLORS[i % COLORS.length] }}>
            {s.label}: {last(s)} {unit}
          </span>
        ))}
      </div>
    </figure>
  );
}

function Services({ services, onError }: { services: ServiceInfo[] | null; onError: (m: string) => void }) {
  const [busy, setBusy] = useState<string | null>(null);
  if (!services) return <p class="muted">No supervisor: this console was started without services.</p>;
  const act = async (name: string, verb: 'stop' | 'start'): Promise<void> => {
    setBusy(name);
    try {
      await api(`/api/services/${encodeURIComponent(name)}/${verb}`, 'POST');
    } catch (e) {
      onError((e as Error).message);
    } finally {
      setBusy(null);
    }
  };
  return (
    <table>
      <thead>
        <tr>
          <th>service</th>
          <th>state</th>
          <th class="num">pid</th>
          <th class="num">restarts</th>
          <th class="num">uptime</th>
          <th>last exit</th>
          <th>actions</th>
        </tr>
      </thead>
      <tbody>
        {services.map((s) => (
          <tr key={s.name} data-testid={`service-row-${slug(s.name)}`}>
            <td>{s.name}</td>
            <td class={`state state-${s.state}`} data-testid={`service-state-${slug(s.name)}`}>
              {s.state}
              {s.restartInMs !== null ? ` (in ${Math.ceil(s.restartInMs / 1000)} s)` : ''}
            </td>
            <td class="num">{s.pid ?? '—'}</td>
            <td class="num">{s.restarts}</td>
            <td class="num">{s.uptimeMs > 0 ? fmtUptime(s.uptimeMs) : '—'}</td>
            <td>{s.lastExit ? (s.lastExit.signal ? `signal ${s.lastExit.signal}` : `code ${s.lastExit.code}`) : '—'}</td>
            <td>
              {s.state === 'running' ? (
                <button class="danger" disabled={busy === s.name} data-testid={`service-stop-${slug(s.name)}`} onClick={() => void act(s.name, 'stop')}>
                  Stop
                </button>
              ) : (
                <button disabled={busy === s.name || s.state === 'stopping'} data-testid={`service-start-${slug(s.name)}`} onClick={() => void act(s.name, 'start')}>
                  Start
                </button>
              )}
            </td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

/** Messages per second between consecutive samples of `value`. */
function ratePoints(history: Sample[], value: (s: Sample) => number | undefined): Array<[number, number]> {
  const pts: Array<[number, number]> = [];
  for (let i = 1; i < history.length; i++) {
    const a = history[i - 1]!;
    const b = history[i]!;
    const va = value(a);
    const vb = value(b);
    if (va === undefined || vb === undefined) continue;
    pts.push([b.at, Math.max(0, Math.round((vb - va) / Math.max(0.001, (b.at - a.at) / 1000)))]);
  }
  return pts;
}

function Topics({ snap }: { snap: Snapshot }) {
  const [only, setOnly] = useState('');
  const lagSeries: Series[] = [];
  const lagSecondsSeries: Series[] = [];
  const rateSeries: Series[] = [];
  const handleSeries: Series[] = [];
  for (const t of snap.topics) {
    if (only && t.name !== only) continue;
    for (const g of t.groups) {
      lagSeries.push({ label: `${t.name} / ${g.group}`, points: snap.history.map((s) => [s.at, s.topics[t.name]?.groups[g.group]?.lag ?? 0]) });
      lagSecondsSeries.push({ label: `${t.name} / ${g.group}`, points: snap.history.map((s) => [s.at, s.topics[t.name]?.groups[g.group]?.lagSeconds ?? 0]) });
      handleSeries.push({ label: `${t.name} / ${g.group}`, points: ratePoints(snap.history, (s) => s.topics[t.name]?.groups[g.group]?.handled) });
    }
    rateSeries.push({ label: `${t.name} published`, points: ratePoints(snap.history, (s) => s.topics[t.name]?.published) });
  }
  if (snap.topics.length === 0) return <p class="muted">No topics yet.</p>;
  return (
    <>
      <table>
        <thead>
          <tr>
            <th>topic</th>
            <th class="num">partitions</th>
            <th class="num">published</th>
            <th class="num">publish/s</th>
            <th>consumer group</th>
            <th class="num">handled</th>
            <th class="num">handle/s</th>
            <th class="num">lag</th>
            <th>oldest unhandled</th>
          </tr>
        </thead>
        <tbody>
          {snap.topics.flatMap((t) =>
            (t.groups.length > 0 ? t.groups : [null]).map((g, i) => (
              <tr key={`${t.name}/${g?.group ?? ''}`} data-testid={`topic-row-${slug(t.name)}${g ? `-${slug(g.group)}` : ''}`}>
                <td>{i === 0 ? t.name : ''}</td>
                <td class="num">{i === 0 ? t.partitions : ''}</td>
                <td class="num" data-testid={i === 0 ? `published-${slug(t.name)}` : undefined}>
                  {i === 0 ? t.published : ''}
                </td>
                <td class="num">{i === 0 ? t.publishRate : ''}</td>
                <td>{g?.group ?? <span class="muted">no groups</span>}</td>
                <td class="num">{g?.handled ?? ''}</td>
                <td class="num">{g?.handleRate ?? ''}</td>
                <td class="num" data-testid={g ? `lag-${slug(t.name)}-${slug(g.group)}` : undefined}>
                  {g?.lag ?? ''}
                </td>
                <td>{g?.oldestUnhandledAt ? fmtTime(g.oldestUnhandledAt) : ''}</td>
              </tr>
            )),
          )}
        </tbody>
      </table>
      <p>
        <label>
          Charts for{' '}
          <select value={only} onChange={(e) => setOnly((e.target as HTMLSelectElement).value)} data-testid="chart-topic">
            <option value="">every topic</option>
            {snap.topics.map((t) => (
              <option key={t.name} value={t.name}>
                {t.name}
              </option>
            ))}
          </select>
        </label>
      </p>
      <div class="charts">
        <LineChart title="Consumer lag (messages) per topic / group" series={lagSeries} unit="msgs" testId="lag-chart" />
        <LineChart title="Consumer lag (seconds: age of the oldest unhandled message) per topic / group" series={lagSecondsSeries} unit="s" testId="lag-seconds-chart" />
        <LineChart title="Publish rate (messages/s) per topic" series={rateSeries} unit="/s" testId="rate-chart" />
        <LineChart title="Handle rate (messages/s) per topic / group" series={handleSeries} unit="/s" testId="handle-chart" />
      </div>
    </>
  );
}

interface DeadLetterEntry extends Omit<DeadLetterSummary, 'error'> {
  envelope: unknown;
  raw: string;
  handler: string;
  partition: number;
  position: string;
  error: { code?: string; message: string; stack?: string };
  firstFailedAt: number;
}

function DeadLetters({ snap, onError }: { snap: Snapshot; onError: (m: string) => void }) {
  const [open, setOpen] = useState<DeadLetterEntry | null>(null);
  const [gone, setGone] = useState<Set<string>>(new Set());
  const entries = snap.deadLetters.entries.filter((e) => !gone.has(e.id));
  const act = async (id: string, verb: 'redrive' | 'discard'): Promise<void> => {
    try {
      await api(`/api/dead-letters/${id}/${verb}`, 'POST');
      if (verb === 'discard') setGone(new Set([...gone, id]));
      if (open?.id === id) setOpen(null);
    } catch (e) {
      onError((e as Error).message);
    }
  };
  const inspect = async (id: string): Promise<void> => {
    try {
      setOpen((await api<{ entry: DeadLetterEntry }>(`/api/dead-letters/${id}`)).entry);
    } catch (e) {
      onError((e as Error).message);
    }
  };
  return (
    <>
      <p data-testid="dead-letter-count">
        {snap.deadLetters.total} dead letter{snap.deadLetters.total === 1 ? '' : 's'}
        {snap.deadLetters.total > entries.length ? ` (oldest ${entries.length} shown)` : ''}
      </p>
      {entries.length > 0 && (
        <table>
          <thead>
            <tr>
              <th>id</th>
              <th>group</th>
              <th>topic</th>
              <th>type</th>
              <th>key</th>
              <th>status</th>
              <th class="num">attempts</th>
              <th>error</th>
              <th>actions</th>
            </tr>
          </thead>
          <tbody>
            {entries.map((e) => (
              <tr key={e.id} data-testid={`dead-letter-row-${e.id}`} class={open?.id === e.id ? 'selected' : ''}>
                <td>{Number(e.id)}</td>
                <td>{e.group}</td>
                <td>{e.topic}</td>
                <td>{e.type ?? '—'}</td>
                <td>{e.key ?? '—'}</td>
                <td>{e.status}</td>
                <td class="num">{e.attempts}</td>
                <td>{e.error}</td>
                <td>
                  <button onClick={() => void inspect(e.id)} data-testid={`dead-letter-inspect-${e.id}`}>
                    Inspect
                  </button>{' '}
                  <button onClick={() => void act(e.id, 'redrive')} disabled={e.status === 'redrive'} data-testid={`dead-letter-redrive-${e.id}`}>
                    Redrive
                  </button>{' '}
                  <button class="danger" onClick={() => void act(e.id, 'discard')} data-testid={`dead-letter-discard-${e.id}`}>
                    Discard
                  </button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {open && (
        <div data-testid="dead-letter-detail">
          <h3>
            Dead letter {Number(open.id)} — handler {open.handler}, partition {open.partition} at {open.position}
          </h3>
          <p>
            Failed {open.attempts} time(s), first {fmtTime(open.firstFailedAt)}, last {fmtTime(open.lastFailedAt)}.
          </p>
          <p class="error">
            {open.error.code ? `${open.error.code}: ` : ''}
            {open.error.message}
          </p>
          {open.error.stack && <pre>{open.error.stack}</pre>}
          <h4>Envelope</h4>
          <pre>{JSON.stringify(open.envelope, null, 2)}</pre>
          <button onClick={() => setOpen(null)}>Close</button>
        </div>
      )}
    </>
  );
}

interface SagaInstance {
  saga: string;
  key: string;
  state: string;
  [k: string]: unknown;
}
interface TimelineEntry {
  at?: number;
  kind?: string;
  [k: string]: unknown;
}

function Sagas({ snap, onError }: { snap: Snapshot; onError: (m: string) => void }) {
  const [state, setState] = useState<string>('');
  const [instances, setInstances] = useState<SagaInstance[]>([]);
  const [timeline, setTimeline] = useState<{ saga: string; key: string; entries: TimelineEntry[] } | null>(null);
  const counts = snap.sagas.byState;
  const countKey = JSON.stringify(counts);
  useEffect(() => {
    if (!snap.sagas.available) return;
    api<{ instances: SagaInstance[] }>(`/api/sagas?limit=50${state ? `&state=${encodeURIComponent(state)}` : ''}`)
      .then((r) => setInstances(r.instances))
      .catch((e: Error) => onError(e.message));
  }, [state, countKey, snap.sagas.available]);
  if (!snap.sagas.available) return <p class="muted">No saga store in this backend.</p>;
  const show = async (s: SagaInstance): Promise<void> => {
    try {
      const r = await api<{ timeline: TimelineEntry[] }>(`/api/sagas/${encodeURIComponent(s.saga)}/${encodeURIComponent(s.key)}`);
      setTimeline({ saga: s.saga, key: s.key, entries: r.timeline });
    } catch (e) {
      onError((e as Error).message);
    }
  };
  return (
    <div class="split">
      <div>
        <p>
          By state:{' '}
          <button onClick={() => setState('')} class={state === '' ? 'selected' : ''}>
            all
          </button>{' '}
          {Object.entries(counts).map(([st, n]) => (
            <span key={st}>
              <button onClick={() => setState(st)} class={state === st ? 'selected' : ''} data-testid={`saga-state-${slug(st)}`}>
                {st}: {n}
              </button>{' '}
            </span>
          ))}
        </p>
        <table class="saga-list">
          <tbody>
            {instances.map((s) => (
              <tr key={`${s.saga}/${s.key}`} data-testid={`saga-row-${slug(s.key)}`} class={timeline?.key === s.key && timeline.saga === s.saga ? 'selected' : ''}>
                <td>{s.saga}</td>
                <td>
                  <a href="#sagas" onClick={() => void show(s)}>
                    {s.key}
                  </a>
                </td>
                <td>{s.state}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      <div data-testid="saga-timeline">
        {timeline ? (
          <>
            <h3>
              {timeline.saga} {timeline.key}
            </h3>
            <ol class="timeline">
              {timeline.entries.map((e, i) => (
                <li key={i} data-kind={String(e.kind ?? '')} class={/compensat/.test(String(e.kind)) ? 'compensation' : /failed|stuck/.test(String(e.kind)) ? 'failed' : ''}>
                  {e.at ? `${fmtTime(e.at)} ` : ''}
                  <strong>{String(e.kind ?? e.type ?? 'step')}</strong> {describeEntry(e)}
                </li>
              ))}
            </ol>
          </>
        ) : (
          <p class="muted">Pick an instance to see its timeline.</p>
        )}
      </div>
    </div>
  );
}

function describeEntry(e: TimelineEntry): string {
  const { at: _at, kind: _kind, type, instanceId: _instance, seq: _seq, messageId: _message, ...rest } = e;
  if (type !== undefined) rest.message = type;
  return Object.entries(rest)
    .filter(([, v]) => v !== undefined && v !== null)
    .map(([k, v]) => `${k}=${typeof v === 'object' ? JSON.stringify(v) : String(v)}`)
    .join(' ');
}

interface Step {
  event: { streamId: string; streamVersion: number; position: string; id: string; type: string; data: unknown; recordedAt: number; correlationId?: string; causationId?: string };
  state: unknown;
}

function Streams({ snap, onError, onCorrelation }: { snap: Snapshot; onError: (m: string) => void; onCorrelation: (id: string) => void }) {
  const [ids, setIds] = useState<string[]>([]);
  const [id, setId] = useState('');
  const [page, setPage] = useState<{ streamId: string; view: string | null; before: unknown; steps: Step[] } | null>(null);
  const [at, setAt] = useState(0);
  useEffect(() => {
    if (!snap.streams.available) return;
    api<{ streams: string[] }>('/api/streams?limit=30')
      .then((r) => setIds(r.streams))
      .catch((e: Error) => onError(e.message));
  }, [Math.floor(snap.at / 5000), snap.streams.available]);
  const open = async (streamId: string): Promise<void> => {
    try {
      const r = await api<{ streamId: string; view: string | null; before: unknown; steps: Step[] }>(`/api/streams/${encodeURIComponent(streamId)}?limit=200`);
      setPage(r);
      setId(streamId);
      setAt(r.steps.length);
    } catch (e) {
      onError((e as Error).message);
    }
  };
  if (!snap.streams.available) return <p class="muted">No event store in this backend.</p>;
  const state = page ? (at === 0 ? page.before : page.steps[at - 1]?.state) : undefined;
  return (
    <div class="split">
      <div>
        <form
          onSubmit={(e) => {
            e.preventDefault();
            void open(id);
          }}
        >
          <label>
            Stream id <input type="text" value={id} onInput={(e) => setId((e.target as HTMLInputElement).value)} data-testid="stream-id-input" />
          </label>{' '}
          <button type="submit">Open</button>
        </form>
        <ul class="stream-list">
          {ids.map((s) => (
            <li key={s}>
              <a href="#streams" onClick={() => void open(s)} data-testid={`stream-link-${slug(s)}`}>
                {s}
              </a>
            </li>
          ))}
        </ul>
      </div>
      <div>
        {page && (
          <>
            <h3>
              {page.streamId} <span class="muted">({page.view ? `view "${page.view}"` : 'no view registered: data merged'})</span>
            </h3>
            <label>
              State after event {at} of {page.steps.length}
              <input type="range" min={0} max={page.steps.length} value={at} onInput={(e) => setAt(Number((e.target as HTMLInputElement).value))} data-testid="time-travel" />
            </label>
            <pre data-testid="stream-state">{JSON.stringify(state, null, 2)}</pre>
            <table>
              <tbody>
                {page.steps.map((s, i) => (
                  <tr key={s.event.id} class={i + 1 === at ? 'selected' : ''} data-testid={`stream-event-${s.event.streamVersion}`}>
                    <td class="num">{s.event.streamVersion}</td>
                    <td>
                      <a href="#streams" onClick={() => setAt(i + 1)}>
                        {s.event.type}
                      </a>
                    </td>
                    <td>{fmtTime(s.event.recordedAt)}</td>
                    <td>
                      {s.event.correlationId && (
                        <a href="#causation" onClick={() => onCorrelation(s.event.correlationId!)}>
                          causation graph
                        </a>
                      )}
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </>
        )}
      </div>
    </div>
  );
}

/** One handler's dealing with a message (`HandlingRecord` of @herald/core). */
interface Handling {
  group: string;
  handler: string;
  at?: number;
  durationMs?: number;
  attempts?: number;
  failed: boolean;
  error?: string;
  from: string;
}
/** A message of the causation graph (`CausationNode` of @herald/core): what it caused in `children`. */
interface GraphNode {
  id: string;
  type: string;
  source: string;
  time?: number;
  where: string[];
  handlers: Handling[];
  failed: boolean;
  children: GraphNode[];
}
interface CausationGraph {
  correlationId: string;
  roots: GraphNode[];
  size: number;
  missing: string[];
}

const fmtMs = (ms: number): string => `${ms < 10 ? Math.round(ms * 10) / 10 : Math.round(ms)} ms`;

function HandlerLine({ h }: { h: Handling }) {
  const parked = h.from === 'dead letter' && !h.failed;
  return (
    <li class={h.failed ? 'handler failed' : 'handler'} data-testid="causation-handler" data-failed={String(h.failed)} title={h.failed && h.error ? h.error : undefined}>
      {h.failed ? '✗' : parked ? '‖' : '✓'} {h.group}/{h.handler}
      {h.durationMs !== undefined && <span class="duration"> {fmtMs(h.durationMs)}</span>}
      {h.attempts ? <span class="muted"> · {h.attempts} attempt{h.attempts === 1 ? '' : 's'}</span> : ''}
      <span class="muted"> ({parked ? 'parked, ' : ''}{h.from})</span>
      {h.failed && h.error && <span class="handler-error">: {h.error}</span>}
    </li>
  );
}

function Causation({ correlation, setCorrelation, onError }: { correlation: string; setCorrelation: (s: string) => void; onError: (m: string) => void }) {
  const [input, setInput] = useState(correlation);
  const [graph, setGraph] = useState<CausationGraph | null>(null);
  useEffect(() => {
    setInput(correlation);
    if (!correlation) return;
    api<CausationGraph>(`/api/causation/${encodeURIComponent(correlation)}`)
      .then(setGraph)
      .catch((e: Error) => onError(e.message));
  }, [correlation]);
  const tree = useMemo(() => {
    if (!graph || graph.size === 0) return null;
    let start = Infinity;
    const visit = (n: GraphNode): void => {
      if (n.time !== undefined) start = Math.min(start, n.time);
      n.children.forEach(visit);
    };
    graph.roots.forEach(visit);
    const draw = (n: GraphNode, depth: number) => (
      <li key={n.id} data-testid={`causation-node-${n.id}`} class={n.failed ? 'failed' : undefined}>
        <strong>{n.type}</strong> <span class="service">{n.source}</span> <span class="muted">{n.where.join(', ')}</span>
        {n.time !== undefined && (
          <span class="muted" title={new Date(n.time).toISOString()}>
            {' '}
            +{fmtMs(n.time - start)} · {fmtTime(n.time)}
          </span>
        )}
        {n.failed && <span class="error"> ✗ failed</span>}
        {n.handlers.length > 0 && (
          <ul class="handlers">
            {n.handlers.map((h, i) => (
              <HandlerLine key={i} h={h} />
            ))}
          </ul>
        )}
        {depth < 50 && n.children.length > 0 && <ul class="tree">{n.children.map((c) => draw(c, depth + 1))}</ul>}
      </li>
    );
    return (
      <>
        <ul class="tree" data-testid="causation-tree">
          {graph.roots.map((r) => draw(r, 0))}
        </ul>
        {graph.missing.length > 0 && <p class="muted">Causes not found (outside this correlation, or purged): {graph.missing.join(', ')}</p>}
      </>
    );
  }, [graph]);
  return (
    <>
      <form
        onSubmit={(e) => {
          e.preventDefault();
          setCorrelation(input.trim());
        }}
      >
        <label>
          Correlation id <input type="text" value={input} onInput={(e) => setInput((e.target as HTMLInputElement).value)} data-testid="correlation-input" />
        </label>{' '}
        <button type="submit">Show</button>
      </form>
      {graph && graph.size === 0 && <p class="muted">Nothing carries this correlation id.</p>}
      {tree}
    </>
  );
}

function App() {
  const { snap, live } = useSnapshot();
  const [error, setError] = useState<string | null>(null);
  const [correlation, setCorrelation] = useState('');
  return (
    <>
      <header>
        <h1>Herald console{snap ? ` — ${snap.name}` : ''}</h1>
        <nav>
          <a href="#services">Services</a>
          <a href="#topics">Topics</a>
          <a href="#dead-letters">Dead letters</a>
          <a href="#sagas">Sagas</a>
          <a href="#streams">Streams</a>
          <a href="#causation">Causation</a>
        </nav>
        <span class={live ? 'live' : 'live down'} data-testid="live">
          {live ? `live · ${snap ? fmtTime(snap.at) : ''}` : 'connecting…'}
        </span>
      </header>
      <main>
        {error && (
          <p class="error" role="alert">
            {error} <button onClick={() => setError(null)}>dismiss</button>
          </p>
        )}
        {snap?.error && <p class="error">Backend: {snap.error}</p>}
        {!snap ? (
          <p>Loading…</p>
        ) : (
          <>
            <section id="services" aria-labelledby="h-services">
              <h2 id="h-services">Services</h2>
              <Services services={snap.services} onError={setError} />
            </section>
            <section id="topics" aria-labelledby="h-topics">
              <h2 id="h-topics">Topics and consumer lag</h2>
              <Topics snap={snap} />
            </section>
            <section id="dead-letters" aria-labelledby="h-dl">
              <h2 id="h-dl">Dead letters</h2>
              <DeadLetters snap={snap} onError={setError} />
            </section>
            <section id="sagas" aria-labelledby="h-sagas">
              <h2 id="h-sagas">Sagas</h2>
              <Sagas snap={snap} onError={setError} />
            </section>
            <section id="streams" aria-labelledby="h-streams">
              <h2 id="h-streams">Streams (time travel)</h2>
              <Streams snap={snap} onError={setError} onCorrelation={setCorrelation} />
            </section>
            <section id="causation" aria-labelledby="h-causation">
              <h2 id="h-causation">Causation graph</h2>
              <Causation correlation={correlation} setCorrelation={setCorrelation} onError={setError} />
            </section>
          </>
        )}
      </main>
    </>
  );
}

render(<App />, document.getElementById('root')!);
