// The dashboard's only data sources: the status-change stream and /orders/metrics.
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

async function refresh () {
  const m = await (await fetch('/orders/metrics')).json()
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

const stream = new EventSource('/orders/stream')
stream.onopen = () => text('live', 'live')
stream.onerror = () => text('live', 'reconnecting…')
stream.addEventListener('status', (event) => {
  const change = JSON.parse(event.data)
  if (change.status === 'Completed') perSecond.set(second(), (perSecond.get(second()) ?? 0) + 1)
  refreshSoon()
})

refresh().catch(() => {})
setInterval(drawThroughput, 1000)
setInterval(() => refresh().catch(() => {}), 5000)
drawThroughput()
