// The dashboard's only data sources: the status-change stream and /orders/metrics.
// With API_KEY set on the service they need the key: asked for once, kept for this tab only.
const STATUSES = ['Pending', 'Processing', 'Completed', 'Failed', 'Cancelled']
const WINDOW_S = 300
const text = (id, value) => { document.getElementById(id).textContent = value }

const perSecond = new Map()
const second = () => Math.floor(Date.now() / 1000)
const chart = new Chart(document.getElementById('throughput'), {
  type: 'line',
  data: { labels: [], datasets: [{ label: 'completed/s', data: [], borderColor: '#2f6fde', pointRadius: 0, tension: 0.2, fill: false }] },
  options: { animation: false, scales: { y: { beginAtZero: true } }, plugins: { legend: { display: false } } }
})

function drawThroughput () {
  const now = second()
  for (const s of perSecond.keys()) if (s <= now - WINDOW_S) perSecond.delete(s)
  const seconds = Array.from({ length: WINDOW_S }, (_, i) => now - WINDOW_S + 1 + i)
  chart.data.labels = seconds.map((s) => (s - now) + 's')
  chart.data.datasets[0].data = seconds.map((s) => perSecond.get(s) ?? 0)
  chart.update()
}

const keyForm = document.getElementById('key-form')
const authorization = () => {
  const key = sessionStorage.getItem('apiKey')
  return key ? { authorization: `Bearer ${key}` } : {}
}
let unauthorized = false
function askForKey () {
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

/** GETs JSON or a stream with the key, if any; a 401 asks for the key and ends with null. */
async function get (url) {
  const res = await fetch(url, { headers: authorization() })
  if (res.status === 401) { askForKey(); return null }
  if (!res.ok) throw new Error(`${url}: ${res.status}`)
  return res
}

async function refresh () {
  const res = await get('/orders/metrics')
  if (!res) return
  const m = await res.json()
  for (const status of STATUSES) text(`count-${status}`, m[status.toLowerCase()].count.toLocaleString('en'))
  text('backlog', (m.pending.count + m.processing.count).toLocaleString('en'))
  text('avg-pending', m.average_pending_time.toFixed(3))
  text('avg-processing', m.average_processing_time.toFixed(3))
  text('avg-total', m.average_processing_time_from_creation.toFixed(3))
  const rows = Object.entries(m.http).sort(([a], [b]) => a.localeCompare(b))
    .map(([route, t]) => `<tr><td>${route.replace(/[<&]/g, '')}</td><td class="num">${t.count}</td><td class="num">${t.stages.total.p99.toFixed(2)}</td></tr>`)
  document.getElementById('routes').innerHTML = '<tr><th>Route</th><th class="num">Requests</th><th class="num">p99</th></tr>' + rows.join('')
}

// Counts come from /orders/metrics (exact aggregates); the stream says when to read them again,
// at most a few times a second, and feeds the completions-per-second chart.
let refreshQueued = false
function refreshSoon () {
  if (refreshQueued) return
  refreshQueued = true
  setTimeout(() => { refreshQueued = false; refresh().catch(() => {}) }, 250)
}

function onStatus (change) {
  if (change.status === 'Completed') perSecond.set(second(), (perSecond.get(second()) ?? 0) + 1)
  refreshSoon()
}

// fetch, not EventSource, because EventSource cannot send the Authorization header.
async function follow () {
  const res = await get('/orders/stream')
  if (!res) return
  text('live', 'live')
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

let following = false
function start () {
  refresh().catch(() => {})
  if (following) return
  following = true
  follow().catch(() => {}).finally(() => {
    following = false
    if (unauthorized) return
    text('live', 'reconnecting…')
    setTimeout(start, 1000)
  })
}

start()
setInterval(drawThroughput, 1000)
setInterval(() => { if (!unauthorized) refresh().catch(() => {}) }, 5000)
drawThroughput()
