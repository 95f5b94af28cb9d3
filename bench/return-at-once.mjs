// The processing step of the benchmark's module scenario: it returns at once, with a small result.
export default async (order) => ({ tracking_id: `TRK-${order.order_id}` })
