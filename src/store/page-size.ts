/**
 * A list page ends at the first order that would start past this many bytes of JSON, so one answer
 * holds about 1 MiB at most: a page of 1,000 orders with 1,000 item ids each would be ~17 MB.
 */
export const PAGE_BYTES = 1024 * 1024

/** JSON bytes of an order besides its id, item ids, last error and result, at their longest (439, a null result included). */
export const ORDER_OTHER_BYTES = 445
