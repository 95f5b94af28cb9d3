// A processing step (PROCESSOR_MODULE): sends each order to a fulfilment service and keeps the
// tracking id it answers as the order's result. See "Processing step" in the README.
const FULFILMENT_URL = process.env.FULFILMENT_URL
// Thrown while loading, this stops the service's start with one line saying so.
if (!FULFILMENT_URL) throw new Error('FULFILMENT_URL is not set')

/** Answers that sending the same order again cannot change: the order fails at once. */
const isFinal = (status) => status >= 400 && status < 500 && status !== 408 && status !== 429

export default async function fulfil (order, { signal, attempt, log }) {
  log.info({ url: FULFILMENT_URL }, 'sending the order to fulfilment')
  const res = await fetch(FULFILMENT_URL, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      // An attempt may run again (after a timeout, or when a worker died before recording it):
      // the service on the other side uses this key to do the work once.
      'idempotency-key': order.order_id
    },
    body: JSON.stringify({ order_id: order.order_id, user_id: order.user_id, item_ids: order.item_ids, total_amount: order.total_amount }),
    // Aborts the request at ATTEMPT_TIMEOUT_MS, and when the service stops.
    signal
  })
  if (!res.ok) {
    const error = new Error(`fulfilment answered ${res.status} on attempt ${attempt}: ${(await res.text()).slice(0, 200)}`)
    if (isFinal(res.status)) error.retryable = false
    throw error
  }
  const { tracking_id: trackingId } = await res.json()
  return { tracking_id: trackingId }
}
