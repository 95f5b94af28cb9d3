import { build, type Histogram } from 'hdr-histogram-js'

/** Stage percentiles are refreshed at most this often for readers that poll; counts are always exact. */
const HTTP_SUMMARY_MAX_AGE_MS = 1000

export const STAGES = ['parsing', 'validation', 'handler', 'serialization', 'send', 'total'] as const
export type Stage = typeof STAGES[number]

export interface StageSummary { mean: number, p50: number, p95: number, p99: number, max: number }
export interface RouteTimings { count: number, stages: Record<Stage, StageSummary> }

/**
 * Histograms record whole microseconds with 2 significant digits (1%): a percentile read walks the
 * buckets, and 3 digits made each /orders/metrics read eight times slower for precision nobody reads.
 */
const MICROS_PER_MS = 1000
/** One minute: a longer stage is recorded as one minute. A wider range makes every read slower. */
const HIGHEST_MICROS = 60_000_000

function newHistogram (): Histogram {
  return build({ lowestDiscernibleValue: 1, highestTrackableValue: HIGHEST_MICROS, numberOfSignificantValueDigits: 2 })
}

function toMs (micros: number): number {
  return Math.round(micros) / MICROS_PER_MS
}

/** The histograms of one route: recorded on every request, so recording allocates nothing. */
export class RouteHistograms {
  count = 0
  private readonly histograms = STAGES.map(newHistogram)
  /** Exact sums for the means: the histogram's own mean walks every bucket (~0.3 ms a read). */
  private readonly sums = new Float64Array(STAGES.length)
  private summarised: Record<Stage, StageSummary> | null = null
  private summarisedAt = 0

  /** One request's stages in milliseconds, in STAGES order; NaN for a stage it never reached (refused before validation). */
  record (parsing: number, validation: number, handler: number, serialization: number, send: number, total: number): void {
    this.count++
    this.add(0, parsing)
    this.add(1, validation)
    this.add(2, handler)
    this.add(3, serialization)
    this.add(4, send)
    this.add(5, total)
  }

  private add (stage: number, ms: number): void {
    if (Number.isNaN(ms)) return
    const micros = Math.min(Math.max(1, Math.round(ms * MICROS_PER_MS)), HIGHEST_MICROS)
    this.histograms[stage]!.recordValue(micros)
    this.sums[stage]! += micros
  }

  /** Stage figures at most `maxAgeMs` old: reading percentiles walks histogram buckets. */
  stages (now: number, maxAgeMs: number): Record<Stage, StageSummary> {
    if (this.summarised === null || now - this.summarisedAt > maxAgeMs) {
      this.summarised = Object.fromEntries(STAGES.map((stage, i) => [stage, this.summarise(i)])) as Record<Stage, StageSummary>
      this.summarisedAt = now
    }
    return this.summarised
  }

  private summarise (stage: number): StageSummary {
    const h = this.histograms[stage]!
    if (h.totalCount === 0) return { mean: 0, p50: 0, p95: 0, p99: 0, max: 0 }
    // A percentile is reported as the top of its bucket, which can pass the exact maximum.
    const at = (percentile: number) => toMs(Math.min(h.getValueAtPercentile(percentile), h.maxValue))
    return { mean: toMs(this.sums[stage]! / h.totalCount), p50: at(50), p95: at(95), p99: at(99), max: toMs(h.maxValue) }
  }
}

/** Per-route latency histograms of each request lifecycle stage. */
export class HttpTimings {
  private readonly routes = new Map<string, RouteHistograms>()

  /** The histograms of a route ("GET /orders/:order_id"), made on first use; a request handler keeps them. */
  route (name: string): RouteHistograms {
    let histograms = this.routes.get(name)
    if (!histograms) {
      histograms = new RouteHistograms()
      this.routes.set(name, histograms)
    }
    return histograms
  }

  /**
   * Per route that has answered a request: the exact request count, and stage figures at most
   * `maxAgeMs` old, so that a metrics endpoint polled under load reuses them.
   */
  summary (maxAgeMs = HTTP_SUMMARY_MAX_AGE_MS): Record<string, RouteTimings> {
    const summary: Record<string, RouteTimings> = {}
    const now = performance.now()
    for (const [route, histograms] of this.routes) {
      if (histograms.count > 0) summary[route] = { count: histograms.count, stages: histograms.stages(now, maxAgeMs) }
    }
    return summary
  }
}
