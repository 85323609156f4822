/*
 * The capmesh dashboard (GET /ui). Plain browser JavaScript, no build step:
 * it follows this controller's GET /watch (Server-Sent Events, resumed by
 * event id) for workers, their health and the controllers, and polls
 * GET /ui/mesh each second for registry hashes, links and self-preservation.
 * Everything from the controller is written with textContent (worker ids
 * and capability names are whatever workers registered).
 */
'use strict'

const MESH_POLL_MS = 1000
const FEED_MAX = 200
const WORKERS_SHOWN = 200
const LATENCY_SAMPLES = 200
const STATE_POINTS = 150
const STATE_SAMPLE_MS = 2000
const RECONNECT_MS = 2000
/** A worker removed and added back at another controller within this long moved (ms), e.g. its gone controller's entries were dropped before it re-attached. */
const REMOVED_MS = 60_000
const REMOVED_KEPT = 10_000
const STATES = ['healthy', 'pending', 'draining', 'unhealthy']
/** Colours of the registry-hash groups: controllers of one colour agree. */
const GROUP_COLOURS = ['#9ae6b4', '#90cdf4', '#fbd38d', '#d6bcfa', '#feb2b2', '#81e6d9', '#fbb6ce', '#c3dafe']

const state = {
  self: null,
  /** worker_id → the worker as /workers lists it. */
  workers: new Map(),
  /** controller_id → what the watch and /ui/mesh said of it. */
  controllers: new Map(),
  mesh: null,
  lastEventId: null,
  /** This controller's clock minus ours (ms), from the quickest /ui/mesh round trip. */
  offset: 0,
  bestRtt: Infinity,
  latency: [],
  /** worker_id → { from, to, at } of its last move. */
  moved: new Map(),
  /** worker_id → { from, at } of workers removed lately: one added back elsewhere soon after moved (its old entry went first). */
  removed: new Map(),
  failovers: 0,
  streamOk: false,
  meshOk: false
}

const $ = id => document.getElementById(id)
const el = (tag, props, ...children) => {
  const e = document.createElement(tag)
  if (props != null) {
    for (const [k, v] of Object.entries(props)) {
      if (k === 'text') e.textContent = v
      else if (k === 'class') e.className = v
      else if (k === 'data') for (const [dk, dv] of Object.entries(v)) e.dataset[dk] = dv
      else e.setAttribute(k, v)
    }
  }
  for (const c of children) e.append(c)
  return e
}
const svg = (tag, attrs, text) => {
  const e = document.createElementNS('http://www.w3.org/2000/svg', tag)
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v))
  if (text != null) e.textContent = text
  return e
}
const hhmmss = t => new Date(t).toTimeString().slice(0, 8)
const capsOf = w => [...new Set(w.capabilities.map(c => c.name))]

// ------------------------------------------------------------------ feed

function feed (kind, text, listId = 'feed') {
  const list = $(listId)
  list.prepend(el('li', { data: { kind } }, el('time', { text: hhmmss(Date.now()) }), text))
  while (list.childElementCount > FEED_MAX) list.lastElementChild.remove()
}

// ---------------------------------------------------------------- watch

/** Applies one /watch event to the local state and says what happened in the feed. */
function onEvent (name, data, live) {
  switch (name) {
    case 'snapshot': {
      state.self = data.controller_id
      state.workers = new Map(data.workers.map(w => [w.worker_id, w]))
      for (const c of data.controllers) {
        const known = state.controllers.get(c.controller_id) ?? {}
        state.controllers.set(c.controller_id, { ...known, ...c })
      }
      feed('snapshot', `snapshot: ${data.workers.length} workers, ${data.controllers.length} controllers`)
      break
    }
    case 'worker_added':
    case 'worker_updated': {
      const w = data.worker
      const was = state.workers.get(w.worker_id)?.controller_id ?? recentlyRemoved(w.worker_id)
      state.workers.set(w.worker_id, w)
      state.removed.delete(w.worker_id)
      if (was != null && was !== w.controller_id) {
        state.failovers++
        state.moved.set(w.worker_id, { from: was, to: w.controller_id, at: Date.now() })
        const text = `${w.worker_id} moved ${was} → ${w.controller_id} (incarnation ${w.incarnation})`
        feed('failover', text)
        feed('failover', text, 'failovers')
      } else if (name === 'worker_added') {
        feed(name, `+ ${w.worker_id} (${capsOf(w).join(', ')}) at ${w.controller_id}`)
      } else {
        feed(name, `${w.worker_id} updated at ${w.controller_id} (incarnation ${w.incarnation})`)
      }
      // A write made at another controller, arriving here: how long it took (their clock to ours, via this controller's).
      if (live && w.controller_id !== state.self) sampleLatency(w)
      break
    }
    case 'worker_removed':
      state.workers.delete(data.worker_id)
      state.removed.set(data.worker_id, { from: data.controller_id, at: Date.now() })
      if (state.removed.size > REMOVED_KEPT) state.removed.delete(state.removed.keys().next().value)
      feed(name, `− ${data.worker_id} removed (was at ${data.controller_id})`)
      break
    case 'worker_state': {
      const w = state.workers.get(data.worker_id)
      if (w != null) state.workers.set(data.worker_id, { ...w, state: data.to, load: data.load })
      feed(name, `${data.worker_id} ${data.from} → ${data.to}`)
      break
    }
    case 'controller_status': {
      const c = state.controllers.get(data.controller_id) ?? { controller_id: data.controller_id, self: false, self_preservation: false }
      state.controllers.set(data.controller_id, { ...c, status: data.to })
      feed(name, `controller ${data.controller_id} ${data.from} → ${data.to}`)
      break
    }
    case 'self_preservation': {
      const c = state.controllers.get(data.controller_id)
      if (c != null) state.controllers.set(data.controller_id, { ...c, self_preservation: data.on })
      feed(name, `controller ${data.controller_id} ${data.on ? 'entered' : 'left'} self-preservation${data.reason != null ? ` (${data.reason} silent)` : ''}`)
      break
    }
    case 'overflow':
      feed(name, `stream cut off (${data.reason}): reconnecting`)
      break
  }
  schedule()
}

/** The controller a worker removed within REMOVED_MS was at, if any. */
function recentlyRemoved (id) {
  const r = state.removed.get(id)
  return r != null && Date.now() - r.at < REMOVED_MS ? r.from : null
}

function sampleLatency (w) {
  const ms = Date.now() + state.offset - Date.parse(w.registered_at)
  if (!Number.isFinite(ms)) return
  state.latency.push({ t: Date.now(), ms: Math.max(0, ms), worker: w.worker_id, from: w.controller_id })
  if (state.latency.length > LATENCY_SAMPLES) state.latency.shift()
}

const EVENTS = ['snapshot', 'worker_added', 'worker_updated', 'worker_removed', 'worker_state', 'controller_status', 'self_preservation', 'overflow']

/**
 * Follows /watch. The browser's EventSource reconnects by itself with
 * Last-Event-ID after a network error; after a refusal (an HTTP error, e.g.
 * 503 too many watchers) or an overflow it stops, and this reopens it from
 * the last id seen.
 */
function watch () {
  const url = state.lastEventId != null ? `/watch?since=${encodeURIComponent(state.lastEventId)}` : '/watch'
  const es = new EventSource(url)
  let live = false
  es.onopen = () => { state.streamOk = true; schedule() }
  for (const name of EVENTS) {
    es.addEventListener(name, ev => {
      if (ev.lastEventId !== '') state.lastEventId = ev.lastEventId
      if (name === 'overflow') {
        es.close()
        state.streamOk = false
        setTimeout(watch, RECONNECT_MS)
      }
      onEvent(name, JSON.parse(ev.data), live || name !== 'snapshot')
      if (name === 'snapshot') live = true
    })
  }
  es.onerror = () => {
    state.streamOk = false
    schedule()
    if (es.readyState === EventSource.CLOSED) setTimeout(watch, RECONNECT_MS)
  }
}

// ----------------------------------------------------------------- mesh

async function pollMesh () {
  try {
    const t0 = Date.now()
    const res = await fetch('/ui/mesh', { cache: 'no-store' })
    const t1 = Date.now()
    if (!res.ok) throw new Error(`HTTP ${res.status}`)
    const mesh = await res.json()
    if (t1 - t0 <= state.bestRtt) {
      state.bestRtt = t1 - t0
      state.offset = Date.parse(mesh.now) - (t0 + t1) / 2
    }
    state.mesh = mesh
    state.self = mesh.controller_id
    for (const c of mesh.controllers) {
      state.controllers.set(c.controller_id, { ...(state.controllers.get(c.controller_id) ?? {}), ...c })
    }
    state.meshOk = true
  } catch {
    state.meshOk = false
  }
  schedule()
  setTimeout(pollMesh, MESH_POLL_MS)
}

// --------------------------------------------------------------- render

let scheduled = false
function schedule () {
  if (scheduled) return
  scheduled = true
  setTimeout(() => { scheduled = false; render() }, 50)
}

function render () {
  renderHeader()
  renderMesh()
  renderCapabilities()
  renderWorkers()
  renderLatency()
  if (state.mesh != null && state.self != null && document.body.dataset.ready !== 'true' && state.streamOk) document.body.dataset.ready = 'true'
}

function renderHeader () {
  $('self-id').textContent = state.self ?? '…'
  const status = $('status')
  const s = state.mesh?.status ?? '…'
  status.textContent = s.replace('_', '-')
  status.dataset.state = s
  const conn = $('conn')
  conn.dataset.state = state.streamOk && state.meshOk ? 'live' : state.streamOk || state.meshOk ? 'connecting' : 'down'
  conn.textContent = state.streamOk && state.meshOk ? 'live' : state.streamOk || state.meshOk ? 'reconnecting' : 'disconnected'
  const alive = [...state.controllers.values()].filter(c => c.status === 'alive').length
  $('summary').textContent = `${alive}/${state.controllers.size} controllers alive · ${state.workers.size} workers · ${state.failovers} failovers seen`
}

/** Controllers whose last registry hash is the same get the same colour. */
function hashGroups () {
  const groups = new Map()
  const ids = [...state.controllers.values()].filter(c => c.registry_hash != null && c.status !== 'gone').map(c => c.registry_hash)
  // The hash most controllers share gets the first colour, so a healthy mesh is one colour.
  const counts = new Map()
  for (const h of ids) counts.set(h, (counts.get(h) ?? 0) + 1)
  for (const [h] of [...counts].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))) groups.set(h, GROUP_COLOURS[groups.size % GROUP_COLOURS.length])
  return groups
}

function ownedCounts () {
  const n = new Map()
  for (const w of state.workers.values()) n.set(w.controller_id, (n.get(w.controller_id) ?? 0) + 1)
  return n
}

function orderedControllers () {
  return [...state.controllers.values()].sort((a, b) => (b.self === true) - (a.self === true) || (a.controller_id < b.controller_id ? -1 : 1))
}

function linkClass (c) {
  if (c.link == null || !c.link.connected) return 'down'
  return c.link.in_sync === true && c.link.sync_state === 'ok' ? 'ok' : 'syncing'
}

function renderMesh () {
  const groups = hashGroups()
  const owned = ownedCounts()
  const cs = orderedControllers()
  // The graph: this controller at the top, the others around a circle.
  const g = $('mesh-graph')
  const W = 400; const H = 260; const R = Math.min(W, H) / 2 - 40
  const pos = new Map(cs.map((c, i) => {
    const a = -Math.PI / 2 + (2 * Math.PI * i) / Math.max(cs.length, 1)
    return [c.controller_id, cs.length === 1 ? [W / 2, H / 2] : [W / 2 + R * Math.cos(a) * 1.4, H / 2 + R * Math.sin(a)]]
  }))
  const parts = []
  const self = cs.find(c => c.self)
  if (self != null) {
    for (const c of cs) {
      if (c.self || (c.link == null && c.status === 'gone')) continue
      const [x1, y1] = pos.get(self.controller_id); const [x2, y2] = pos.get(c.controller_id)
      parts.push(svg('line', { x1, y1, x2, y2, class: linkClass(c), 'data-link': c.controller_id }))
    }
  }
  for (const c of cs) {
    const [x, y] = pos.get(c.controller_id)
    const cls = [c.self ? 'self' : '', c.self_preservation ? 'sp' : '', c.status === 'gone' ? 'gone' : ''].filter(Boolean).join(' ')
    parts.push(svg('circle', { cx: x, cy: y, r: 22, fill: groups.get(c.registry_hash) ?? '#edf2f7', class: cls, 'data-controller': c.controller_id, 'data-status': c.status ?? 'unknown' }))
    parts.push(svg('text', { x, y: y + 4 }, c.controller_id.length > 10 ? c.controller_id.slice(0, 9) + '…' : c.controller_id))
    parts.push(svg('text', { x, y: y + 36, class: 'sub' }, `${c.status ?? 'unknown'}${c.self_preservation ? ' · SP' : ''} · ${owned.get(c.controller_id) ?? 0}w`))
  }
  g.replaceChildren(...parts)

  const ourHash = state.mesh?.registry_hash
  const rows = cs.map(c => {
    const colour = groups.get(c.registry_hash)
    const swatch = el('span', { class: 'swatch' })
    if (colour != null) swatch.style.background = colour
    const agrees = c.self ? '—' : c.registry_hash == null || ourHash == null ? '?' : c.registry_hash === ourHash ? 'yes' : 'no'
    const heard = c.self ? 'self' : c.last_heard_ms_ago == null ? '—' : `${(c.last_heard_ms_ago / 1000).toFixed(1)} s ago`
    const link = c.self ? '—' : c.link == null ? 'none' : !c.link.connected ? 'down' : `${c.link.in_sync === true ? 'in sync' : 'syncing'}${c.link.last_sync_ms != null ? `, ${c.link.last_sync_ms.toFixed(0)} ms` : ''}`
    return el('tr', { data: { controller: c.controller_id }, class: c.status === 'gone' ? 'gone' : '' },
      el('td', { text: c.controller_id + (c.self ? ' (this)' : '') }),
      el('td', { class: 'status', text: (c.status ?? 'unknown') + (c.self_preservation ? ' · self-preservation' : ''), data: { status: c.status ?? 'unknown' } }),
      el('td', { class: 'mono' }, swatch, c.registry_hash ?? '—'),
      el('td', { text: agrees, data: { agrees } }),
      el('td', { class: 'num', text: String(owned.get(c.controller_id) ?? 0) }),
      el('td', { text: heard }),
      el('td', { text: link, data: { link: c.self ? 'self' : linkClass(c) } }))
  })
  $('controllers').tBodies[0].replaceChildren(...rows)
}

function renderCapabilities () {
  const byCap = new Map()
  for (const w of state.workers.values()) {
    for (const name of capsOf(w)) {
      let row = byCap.get(name)
      if (row == null) byCap.set(name, row = { healthy: 0, pending: 0, draining: 0, unhealthy: 0 })
      row[w.state] = (row[w.state] ?? 0) + 1
    }
  }
  const rows = [...byCap].sort((a, b) => a[0] < b[0] ? -1 : 1).map(([name, n]) => el('tr', { data: { capability: name } },
    el('td', { text: name }),
    ...STATES.map(s => el('td', { class: 'num', text: String(n[s]), data: n[s] > 0 ? { state: s } : {} }))))
  $('capabilities').tBodies[0].replaceChildren(...rows)
}

function renderWorkers () {
  const q = $('worker-filter').value.trim().toLowerCase()
  const all = [...state.workers.values()].filter(w => q === '' || w.worker_id.toLowerCase().includes(q) || w.controller_id.toLowerCase().includes(q) || capsOf(w).some(c => c.toLowerCase().includes(q)))
  // Moved workers first (a failover is what one looks for), then by id.
  all.sort((a, b) => (state.moved.has(b.worker_id) - state.moved.has(a.worker_id)) || (a.worker_id < b.worker_id ? -1 : 1))
  const rows = all.slice(0, WORKERS_SHOWN).map(w => {
    const m = state.moved.get(w.worker_id)
    return el('tr', { data: { worker: w.worker_id, owner: w.controller_id }, class: m != null ? 'moved' : '' },
      el('td', { text: w.worker_id }),
      el('td', { text: capsOf(w).join(', ') }),
      el('td', { class: 'state', text: w.state, data: { state: w.state } }),
      el('td', { text: m != null ? `${w.controller_id} (from ${m.from})` : w.controller_id }),
      el('td', { class: 'num', text: String(w.incarnation) }))
  })
  $('workers').tBodies[0].replaceChildren(...rows)
  $('workers-more').textContent = all.length > WORKERS_SHOWN ? `showing ${WORKERS_SHOWN} of ${all.length}` : ''
}

function quantile (sorted, q) {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]
}

function renderLatency () {
  const s = state.latency
  if (s.length > 0) {
    const sorted = s.map(x => x.ms).sort((a, b) => a - b)
    const last = s[s.length - 1]
    $('latency').textContent = `registration at another controller → this dashboard: p50 ${quantile(sorted, 0.5).toFixed(0)} ms, p95 ${quantile(sorted, 0.95).toFixed(0)} ms, max ${sorted[sorted.length - 1].toFixed(0)} ms over the last ${s.length}; last ${last.worker} from ${last.from}, ${last.ms.toFixed(0)} ms`
  }
  if (charts.latency != null) {
    charts.latency.data.datasets[0].data = s.map(x => ({ x: x.t, y: x.ms }))
    charts.latency.update('none')
  }
}

// --------------------------------------------------------------- charts

const charts = { latency: null, states: null }
const timeAxis = { type: 'linear', ticks: { maxTicksLimit: 6, callback: v => hhmmss(v) } }

function makeCharts () {
  if (typeof Chart === 'undefined') return
  charts.latency = new Chart($('latency-chart'), {
    type: 'scatter',
    data: { datasets: [{ label: 'propagation (ms)', data: [], backgroundColor: '#2b6cb0', pointRadius: 3 }] },
    options: { maintainAspectRatio: false, animation: false, parsing: false, plugins: { legend: { display: false } }, scales: { x: timeAxis, y: { beginAtZero: true, title: { display: true, text: 'ms' } } } }
  })
  const colours = { healthy: '#2f855a', pending: '#b7791f', draining: '#805ad5', unhealthy: '#c53030' }
  charts.states = new Chart($('states-chart'), {
    type: 'line',
    data: { datasets: STATES.map(s => ({ label: s, data: [], borderColor: colours[s], backgroundColor: colours[s], pointRadius: 0, borderWidth: 2, stepped: true })) },
    options: { maintainAspectRatio: false, animation: false, parsing: false, plugins: { legend: { position: 'bottom', labels: { boxWidth: 10 } } }, scales: { x: timeAxis, y: { beginAtZero: true, ticks: { precision: 0 }, title: { display: true, text: 'workers' } } } }
  })
}

function sampleStates () {
  if (charts.states != null && state.streamOk) {
    const n = { healthy: 0, pending: 0, draining: 0, unhealthy: 0 }
    for (const w of state.workers.values()) n[w.state] = (n[w.state] ?? 0) + 1
    const t = Date.now()
    charts.states.data.datasets.forEach((d, i) => {
      d.data.push({ x: t, y: n[STATES[i]] })
      if (d.data.length > STATE_POINTS) d.data.shift()
    })
    charts.states.update('none')
  }
  setTimeout(sampleStates, STATE_SAMPLE_MS)
}

// ----------------------------------------------------------------- start

$('worker-filter').addEventListener('input', schedule)
makeCharts()
watch()
pollMesh()
sampleStates()
