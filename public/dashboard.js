// The dashboard reads and acts only through the service's API: the status-change stream says when
// to read again; /orders/metrics gives the counts, /orders/metrics/completions the chart; orders,
// processing and webhooks are listed and changed through their own routes.
// With API_KEY set on the service every request needs the key: asked for once, kept for this tab only.
const STATUSES = ['Pending', 'Processing', 'Completed', 'Failed', 'Cancelled']
const WINDOW_S = 300
const PAGE_SIZE = 10
const byId = (id) => document.getElementById(id)
const text = (id, value) => { byId(id).textContent = value }
/** Text made safe to put into HTML: order ids, errors and URLs come from users. */
const esc = (value) => String(value).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`)
const none = '<span class="muted">–</span>'

/** Shows what an action did, or why it failed (`error`), under its panel. */
function say (id, message, error = false) {
  const element = byId(id)
  element.textContent = message
  element.classList.toggle('error', error)
}

/** A time as people read it: the time of day today, with the date otherwise. */
function when (iso) {
  const date = new Date(iso)
  const time = date.toLocaleTimeString('en-GB')
  return date.toDateString() === new Date().toDateString() ? time : `${date.toLocaleDateString('en-CA')} ${time}`
}

const keyForm = byId('key-form')
const authorization = () => {
  const key = sessionStorage.getItem('apiKey')
  return key ? { authorization: `Bearer ${key}` } : {}
}
let unauthorized = false
/** Asks for the key after a 401, unless the request was sent with a key since replaced (still under way when a new one was given). */
function askForKey (sent) {
  if (sent.authorization !== authorization().authorization) return
  unauthorized = true
  text('live', 'needs the API key')
  keyForm.hidden = false
}
keyForm.addEventListener('submit', (event) => {
  event.preventDefault()
  sessionStorage.setItem('apiKey', keyForm.elements.key.value)
  keyForm.hidden = true
  unauthorized = false
  text('live', 'connecting…')
  start()
})

/** GETs a stream with the key, if any; a 401 asks for the key and ends with null. */
async function get (url) {
  const headers = authorization()
  const res = await fetch(url, { headers })
  if (res.status === 401) { askForKey(headers); return null }
  if (!res.ok) throw new Error(`${url}: ${res.status}`)
  return res
}

/**
 * Sends a request with the key, if any, and reads its JSON answer: { ok, status, body }. A 401 asks
 * for the key and ends with null. The page's own origin sends it, so the cross-site rules let it through.
 */
async function api (method, url, body) {
  const headers = authorization()
  if (body !== undefined) headers['content-type'] = 'application/json'
  const res = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) })
  if (res.status === 401) { askForKey(headers); return null }
  return { ok: res.ok, status: res.status, body: await res.json() }
}

/** The answer's body, or an error carrying the API's message. */
function bodyOf (answer) {
  if (!answer.ok) throw new Error(answer.body.error ?? `status ${answer.status}`)
  return answer.body
}

// Completions per second: the server's own history of the last five minutes, so that a page opened
// after a burst shows it. The stream says when there are new ones; the history is then read again,
// at most once a second (each redraw), so the chart is always the server's count, never a guess.
const chart = new Chart(byId('throughput'), {
  type: 'line',
  data: { labels: [], datasets: [{ label: 'completed/s', data: [], borderColor: '#2f6fde', pointRadius: 0, tension: 0.2, fill: false }] },
  options: {
    animation: false,
    maintainAspectRatio: false,
    scales: { y: { beginAtZero: true, ticks: { precision: 0 } }, x: { ticks: { maxTicksLimit: 11 } } },
    plugins: { legend: { display: false } }
  }
})
let completions = { counts: new Array(WINDOW_S).fill(0), readAt: Date.now() }
let completionsStale = true

async function readCompletions () {
  const answer = await api('GET', '/orders/metrics/completions')
  if (answer) completions = { counts: bodyOf(answer).completed, readAt: Date.now() }
}

function drawThroughput () {
  // The seconds since the last read had no completions: the stream would have said so.
  const passed = Math.min(WINDOW_S, Math.floor((Date.now() - completions.readAt) / 1000))
  const counts = [...completions.counts.slice(passed), ...new Array(passed).fill(0)]
  chart.data.labels = counts.map((_, i) => `${i - WINDOW_S + 1}s`)
  chart.data.datasets[0].data = counts
  chart.update()
}

async function tick () {
  if (completionsStale && !unauthorized) {
    completionsStale = false
    await readCompletions().catch(() => { completionsStale = true })
  }
  drawThroughput()
}

// Counts and stage times come from /orders/metrics (exact aggregates).
let processingState = null
async function refresh () {
  const answer = await api('GET', '/orders/metrics')
  if (!answer) return
  const m = bodyOf(answer)
  for (const status of STATUSES) text(`count-${status}`, m[status.toLowerCase()].count.toLocaleString('en'))
  text('backlog', (m.pending.count + m.processing.count).toLocaleString('en'))
  text('avg-pending', m.average_pending_time.toFixed(3))
  text('avg-processing', m.average_processing_time.toFixed(3))
  text('avg-total', m.average_processing_time_from_creation.toFixed(3))
  const rows = Object.entries(m.http).sort(([a], [b]) => a.localeCompare(b))
    .map(([route, t]) => `<tr><td>${esc(route)}</td><td class="num">${t.count}</td><td class="num">${t.stages.total.p99.toFixed(2)}</td></tr>`)
  byId('routes').innerHTML = '<tr><th>Route</th><th class="num">Requests</th><th class="num">p99</th></tr>' + rows.join('')
  // Paused or resumed elsewhere (curl, another page): read since when.
  if (m.processing_state !== processingState) await readProcessing()
}

// Processing: a switch showing the state and since when.
function showProcessing ({ state, since }) {
  processingState = state
  const badge = byId('processing-state')
  badge.textContent = state
  badge.className = `badge state ${state}`
  text('processing-since', `since ${when(since)}`)
  const toggle = byId('processing-toggle')
  toggle.textContent = state === 'running' ? 'Pause' : 'Resume'
  toggle.disabled = false
}

async function readProcessing () {
  const answer = await api('GET', '/processing')
  if (answer) showProcessing(bodyOf(answer))
}

byId('processing-toggle').addEventListener('click', async () => {
  const toggle = byId('processing-toggle')
  toggle.disabled = true
  say('processing-message', '')
  try {
    const answer = await api('POST', `/processing/${processingState === 'running' ? 'pause' : 'resume'}`)
    if (answer) showProcessing(bodyOf(answer))
  } catch (err) {
    say('processing-message', err.message, true)
  } finally {
    toggle.disabled = false
  }
})

// The order list: newest first, filtered, a page at a time. cursors[i] is the cursor of page i
// (null for the first), so "Newer" goes back to a page already seen.
const list = { status: '', user: '', cursors: [null], page: 0, next: null, ids: new Set(), ticket: 0 }
let selected = null

function orderRow (o) {
  return `<tr data-id="${esc(o.order_id)}"${o.order_id === selected ? ' class="selected"' : ''}>` +
    `<td class="id">${esc(o.order_id)}</td><td class="num">${o.user_id}</td>` +
    `<td><span class="badge ${esc(o.status)}">${esc(o.status)}</span></td><td>${esc(when(o.created_at))}</td>` +
    `<td class="num">${o.attempts}</td><td class="num">${o.total_amount.toFixed(2)}</td></tr>`
}

async function loadOrders () {
  const ticket = ++list.ticket
  const params = new URLSearchParams({ order: 'desc', limit: String(PAGE_SIZE) })
  if (list.status) params.set('status', list.status)
  if (list.user !== '') params.set('user_id', list.user)
  const cursor = list.cursors[list.page]
  if (cursor) params.set('cursor', cursor)
  const answer = await api('GET', `/orders?${params}`)
  // An answer to an older request (the filters changed meanwhile) is dropped.
  if (!answer || ticket !== list.ticket) return
  if (!answer.ok) {
    say('orders-message', answer.body.error, true)
    return
  }
  const { orders, next_cursor: next } = answer.body
  list.next = next
  list.ids = new Set(orders.map((o) => o.order_id))
  byId('orders').tBodies[0].innerHTML = orders.length > 0
    ? orders.map(orderRow).join('')
    : '<tr><td colspan="6" class="muted">No orders here.</td></tr>'
  text('page', `Page ${list.page + 1}`)
  byId('newer').disabled = list.page === 0
  byId('older').disabled = next === null
}

byId('filters').addEventListener('submit', (event) => {
  event.preventDefault()
  const form = event.target
  list.status = form.elements.status.value
  list.user = form.elements.user.value.trim()
  list.cursors = [null]
  list.page = 0
  say('orders-message', '')
  loadOrders().catch((err) => say('orders-message', err.message, true))
})
byId('filters').elements.status.addEventListener('change', () => byId('filters').requestSubmit())
byId('older').addEventListener('click', () => {
  list.cursors[list.page + 1] = list.next
  list.page++
  loadOrders().catch((err) => say('orders-message', err.message, true))
})
byId('newer').addEventListener('click', () => {
  list.page = Math.max(0, list.page - 1)
  loadOrders().catch((err) => say('orders-message', err.message, true))
})
byId('orders').tBodies[0].addEventListener('click', (event) => {
  const row = event.target.closest('tr[data-id]')
  if (row) openOrder(row.dataset.id).catch((err) => say('order-message', err.message, true))
})

byId('retry-failed').addEventListener('click', async () => {
  const button = byId('retry-failed')
  button.disabled = true
  try {
    const answer = await api('POST', '/orders/retry-failed', {})
    if (!answer) return
    const { retried, remaining_failed: remaining } = bodyOf(answer)
    say('orders-message', `Retried ${retried.toLocaleString('en')} failed order${retried === 1 ? '' : 's'}; ${remaining.toLocaleString('en')} still Failed.`)
    refreshSoon()
    await loadOrders()
  } catch (err) {
    say('orders-message', err.message, true)
  } finally {
    button.disabled = false
  }
})

// One order, every field of it as GET /orders/:id answers, with what can be done to it.
let orderTicket = 0
function showOrder (order) {
  selected = order.order_id
  const value = (key, v) => {
    if (v === null) return none
    if (key === 'status') return `<span class="badge ${esc(v)}">${esc(v)}</span>`
    if (key === 'item_ids') return esc(v.join(', '))
    if (key === 'result' || typeof v === 'object') return `<pre>${esc(JSON.stringify(v, null, 2))}</pre>`
    return esc(v)
  }
  byId('order').innerHTML = `<table>${Object.entries(order).map(([key, v]) => `<tr><th>${esc(key)}</th><td data-field="${esc(key)}">${value(key, v)}</td></tr>`).join('')}</table>`
  byId('cancel').hidden = order.status !== 'Pending'
  byId('retry').hidden = order.status !== 'Failed'
  for (const row of byId('orders').tBodies[0].rows) row.classList.toggle('selected', row.dataset.id === selected)
}

/** Shows one order; `keepMessage` leaves what the last action said. */
async function openOrder (id, keepMessage = false) {
  const ticket = ++orderTicket
  if (!keepMessage) say('order-message', '')
  const answer = await api('GET', `/orders/${encodeURIComponent(id)}`)
  if (!answer || ticket !== orderTicket) return
  if (answer.ok) return showOrder(answer.body)
  selected = null
  byId('cancel').hidden = true
  byId('retry').hidden = true
  byId('order').innerHTML = answer.status === 404
    ? `<p class="error">Order “${esc(id)}” not found.</p>`
    : `<p class="error">${esc(answer.body.error)}</p>`
}

byId('search').addEventListener('submit', (event) => {
  event.preventDefault()
  openOrder(event.target.elements.id.value.trim()).catch((err) => say('order-message', err.message, true))
})

/** Cancels or retries the order shown; a refusal (409: its status changed meanwhile) shows the API's message. */
async function act (action, done) {
  const id = selected
  if (id === null) return
  const answer = await api('POST', `/orders/${encodeURIComponent(id)}/${action}`)
  if (!answer) return
  if (answer.ok) {
    showOrder(answer.body)
    say('order-message', done)
  } else {
    say('order-message', answer.body.error, true)
    await openOrder(id, true)
  }
  refreshSoon()
  await loadOrders()
}
byId('cancel').addEventListener('click', () => act('cancel', 'Cancelled.').catch((err) => say('order-message', err.message, true)))
byId('retry').addEventListener('click', () => act('retry', 'Sent back to Pending for a fresh run.').catch((err) => say('order-message', err.message, true)))

// Webhook endpoints with their delivery counts and last error; an endpoint's latest failed deliveries on demand.
let expanded = null
function failedDeliveries (deliveries) {
  if (deliveries.length === 0) return '<span class="muted">No failed deliveries.</span>'
  const rows = deliveries.map((d) => `<tr><td>${esc(when(d.created_at))}</td><td class="id">${d.order_id === null ? none : esc(d.order_id)}</td>` +
    `<td>${esc(d.event_type)}</td><td class="num">${d.attempts}</td><td class="num">${d.last_status_code ?? '–'}</td><td class="error">${d.last_error === null ? none : esc(d.last_error)}</td></tr>`)
  return '<table><tr><th>Created</th><th>Order</th><th>Event</th><th class="num">Attempts</th><th class="num">Status</th><th>Last error</th></tr>' +
    rows.join('') + '</table>'
}

async function loadWebhooks () {
  const answer = await api('GET', '/webhooks')
  if (!answer) return
  const { webhooks } = bodyOf(answer)
  let failed = null
  if (expanded !== null && webhooks.some((w) => w.id === expanded)) {
    const deliveries = await api('GET', `/webhooks/${encodeURIComponent(expanded)}/deliveries?status=failed&limit=5`)
    if (deliveries?.ok) failed = deliveries.body.deliveries
  }
  const rows = webhooks.map((w) => {
    const row = `<tr data-endpoint="${esc(w.id)}"><td class="url">${esc(w.url)}${w.description ? `<div class="muted">${esc(w.description)}</div>` : ''}</td>` +
      `<td>${esc(w.events.join(', '))}</td><td class="num">${w.deliveries.pending}</td><td class="num">${w.deliveries.delivered}</td>` +
      `<td class="num">${w.deliveries.failed}</td>` +
      `<td class="error">${w.last_error === null ? none : `${esc(w.last_error)} <span class="muted">${esc(when(w.last_error_at))}</span>`}</td>` +
      `<td>${w.deliveries.failed > 0 ? `<button type="button" data-failed="${esc(w.id)}">${w.id === expanded ? 'Hide' : 'Failed'}</button>` : ''}</td></tr>`
    return w.id === expanded && failed !== null ? `${row}<tr class="deliveries"><td colspan="7">${failedDeliveries(failed)}</td></tr>` : row
  })
  byId('webhooks').tBodies[0].innerHTML = rows.length > 0
    ? rows.join('')
    : '<tr><td colspan="7" class="muted">No endpoints: register one with POST /webhooks.</td></tr>'
  say('webhooks-message', '', true)
}

byId('webhooks').tBodies[0].addEventListener('click', (event) => {
  const button = event.target.closest('button[data-failed]')
  if (!button) return
  expanded = expanded === button.dataset.failed ? null : button.dataset.failed
  loadWebhooks().catch((err) => say('webhooks-message', err.message, true))
})

// The stream says what to read again, at most a few times a second: the counts always; the list
// when it may show a change (its first page gains new orders); the order shown when it changed.
let refreshQueued = false
let listStale = false
let orderStale = false
function refreshSoon () {
  if (refreshQueued) return
  refreshQueued = true
  setTimeout(() => {
    refreshQueued = false
    refresh().catch(() => {})
    if (listStale) loadOrders().catch(() => {})
    if (orderStale && selected !== null) openOrder(selected, true).catch(() => {})
    listStale = false
    orderStale = false
  }, 250)
}

function onStatus (change) {
  if (change.status === 'Completed') completionsStale = true
  if (list.page === 0 || list.ids.has(change.order_id)) listStale = true
  if (change.order_id === selected) orderStale = true
  refreshSoon()
}

// fetch, not EventSource, because EventSource cannot send the Authorization header.
async function follow () {
  const res = await get('/orders/stream')
  if (!res) return
  text('live', 'live')
  connected()
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader()
  let buffered = ''
  for (;;) {
    const { value, done } = await reader.read()
    if (done) throw new Error('stream ended')
    buffered += value
    const events = buffered.split('\n\n')
    buffered = events.pop()
    for (const event of events) {
      const data = event.split('\n').find((line) => line.startsWith('data: '))
      if (event.startsWith('event: status') && data) onStatus(JSON.parse(data.slice('data: '.length)))
    }
  }
}

/** Back after an outage: what failed while the server was away is cleared, and the figures are fresh again (start() read them). */
function connected () {
  document.body.classList.remove('stale')
  for (const id of ['processing-message', 'orders-message', 'order-message', 'webhooks-message']) say(id, '')
}

let following = false
function start () {
  // Whatever happened while the stream was away is read afresh.
  completionsStale = true
  refresh().catch(() => {})
  readProcessing().catch((err) => say('processing-message', err.message, true))
  loadOrders().catch((err) => say('orders-message', err.message, true))
  loadWebhooks().catch((err) => say('webhooks-message', err.message, true))
  if (following) return
  following = true
  follow().catch(() => {}).finally(() => {
    following = false
    if (unauthorized) return
    // Nothing below is read again until the stream is back: say so rather than show old figures as current.
    document.body.classList.add('stale')
    text('live', 'disconnected: figures are stale, reconnecting…')
    setTimeout(start, 1000)
  })
}

start()
setInterval(() => { tick().catch(() => {}) }, 1000)
setInterval(() => {
  if (unauthorized) return
  refresh().catch(() => {})
  loadWebhooks().catch((err) => say('webhooks-message', err.message, true))
}, 5000)
drawThroughput()
