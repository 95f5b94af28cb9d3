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

class RouteHistograms {
  count = 0
  readonly stages = Object.fromEntries(STAGES.map((stage) => [stage, newHistogram()])) as Record<Stage, Histogram>
  /** Exact sums for the means: the histogram's own mean walks every bucket (~0.3 ms a read). */
  readonly sums = Object.fromEntries(STAGES.map((stage) => [stage, 0])) as Record<Stage, number>
  summarised: Record<Stage, StageSummary> | null = null
  summarisedAt = 0
}

/** Per-route latency histograms of each request lifecycle stage. */
export class HttpTimings {
  private readonly routes = new Map<string, RouteHistograms>()

  /** Records one request; a stage it never reached (a request refused before validation) is absent. */
  record (route: string, stages: Partial<Record<Stage, number>>): void {
    let histograms = this.routes.get(route)
    if (!histograms) {
      histograms = new RouteHistograms()
      this.routes.set(route, histograms)
    }
    histograms.count++
    for (const stage of STAGES) {
      const ms = stages[stage]
      if (ms !== undefined) {
        const micros = Math.min(Math.max(1, Math.round(ms * MICROS_PER_MS)), HIGHEST_MICROS)
        histograms.stages[stage].recordValue(micros)
        histograms.sums[stage] += micros
      }
    }
  }

  /**
   * Per route: the exact request count, and stage figures at most `maxAgeMs` old. Reading
   * percentiles walks histogram buckets, so a metrics endpoint polled under load reuses them.
   */
  summary (maxAgeMs = HTTP_SUMMARY_MAX_AGE_MS): Record<string, RouteTimings> {
    const summary: Record<string, RouteTimings> = {}
    const now = performance.now()
    for (const [route, histograms] of this.routes) {
      if (histograms.summarised === null || now - histograms.summarisedAt > maxAgeMs) {
        histograms.summarised = summarise(histograms)
        histograms.summarisedAt = now
      }
      summary[route] = { count: histograms.count, stages: histograms.summarised }
    }
    return summary
  }
}

function summarise (histograms: RouteHistograms): Record<Stage, StageSummary> {
  const stages = {} as Record<Stage, StageSummary>
  for (const stage of STAGES) {
    const h = histograms.stages[stage]
    // A percentile is reported as the top of its bucket, which can pass the exact maximum.
    const at = (percentile: number) => toMs(Math.min(h.getValueAtPercentile(percentile), h.maxValue))
    stages[stage] = h.totalCount === 0
      ? { mean: 0, p50: 0, p95: 0, p99: 0, max: 0 }
      : { mean: toMs(histograms.sums[stage] / h.totalCount), p50: at(50), p95: at(95), p99: at(99), max: toMs(h.maxValue) }
  }
  return stages
}
