import { context, propagation, ROOT_CONTEXT, SpanKind, SpanStatusCode, trace, type Attributes, type Context, type Span } from '@opentelemetry/api'
import { ConfigError } from './config.ts'
import type { AttemptOutcome } from './processing/attempt.ts'
import type { OrderStatus } from './order.ts'
import type { Claim } from './store/order-store.ts'
import type { DeliveryClaim } from './store/webhook-store.ts'
import type { AttemptResult } from './webhooks/sender.ts'

/*
 * OpenTelemetry traces: one trace per order, from the POST request (plugins/tracing.ts) through
 * each processing attempt, in whichever process runs it, to each webhook attempt. The request's
 * context is kept with the order (its W3C traceparent), so an attempt is a child of the request
 * that made the order. Configured by the standard OTEL_* variables and off unless they ask for
 * it: then the SDK is never loaded, and the hot path pays one check of `tracingOn` per call.
 */

/** Whether traces are recorded: set once at start (startTracing), read on the hot path. */
export let tracingOn = false

type Env = Record<string, string | undefined>

const EXPORTERS = ['otlp', 'console', 'none']
const PROTOCOLS = ['http/protobuf', 'http/json']

/**
 * Tracing is on when OTEL_TRACES_EXPORTER names an exporter other than `none`, or an OTLP endpoint
 * is set (OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT); OTEL_SDK_DISABLED=true
 * turns it off whatever else is set. A value it cannot use throws a ConfigError naming it.
 */
export function tracingExporters (env: Env = process.env): string[] {
  if (env.OTEL_SDK_DISABLED?.trim().toLowerCase() === 'true') return []
  const named = (env.OTEL_TRACES_EXPORTER ?? '').split(',').map((name) => name.trim().toLowerCase()).filter((name) => name !== '')
  for (const name of named) {
    if (!EXPORTERS.includes(name)) throw new ConfigError(`OTEL_TRACES_EXPORTER must list ${EXPORTERS.join(', ')}, got "${name}"`)
  }
  const exporters = named.length > 0 ? named.filter((name) => name !== 'none') : (env.OTEL_EXPORTER_OTLP_ENDPOINT || env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) ? ['otlp'] : []
  if (exporters.includes('otlp')) {
    const protocol = otlpProtocol(env)
    const variable = env.OTEL_EXPORTER_OTLP_TRACES_PROTOCOL ? 'OTEL_EXPORTER_OTLP_TRACES_PROTOCOL' : 'OTEL_EXPORTER_OTLP_PROTOCOL'
    if (!PROTOCOLS.includes(protocol)) throw new ConfigError(`${variable} must be ${PROTOCOLS.join(' or ')} (grpc is not supported), got "${protocol}"`)
  }
  return exporters
}

function otlpProtocol (env: Env): string {
  return (env.OTEL_EXPORTER_OTLP_TRACES_PROTOCOL || env.OTEL_EXPORTER_OTLP_PROTOCOL || 'http/protobuf').trim()
}

let provider: { forceFlush (): Promise<void>, shutdown (): Promise<void> } | undefined

/**
 * Starts the SDK when the OTEL_* variables ask for it (see tracingExporters), once per process:
 * a tracer provider with the W3C trace context propagator, batching spans (OTEL_BSP_*), sampling
 * as OTEL_TRACES_SAMPLER says, named by OTEL_SERVICE_NAME (default order-service) and
 * OTEL_RESOURCE_ATTRIBUTES, all read from process.env. Returns whether tracing is on. Off,
 * nothing of the SDK is loaded.
 */
export async function startTracing (): Promise<boolean> {
  if (provider) return true
  const env = process.env
  const exporters = tracingExporters(env)
  if (exporters.length === 0) return false
  const [{ NodeTracerProvider, BatchSpanProcessor, ConsoleSpanExporter }, { resourceFromAttributes, detectResources, envDetector, hostDetector, processDetector }] =
    await Promise.all([import('@opentelemetry/sdk-trace-node'), import('@opentelemetry/resources')])
  const spanProcessors = await Promise.all(exporters.map(async (name) => {
    if (name === 'console') return new BatchSpanProcessor(new ConsoleSpanExporter())
    // Each reads its endpoint, headers and timeout from the OTEL_EXPORTER_OTLP_* variables.
    const { OTLPTraceExporter } = otlpProtocol(env) === 'http/json'
      ? await import('@opentelemetry/exporter-trace-otlp-http')
      : await import('@opentelemetry/exporter-trace-otlp-proto')
    return new BatchSpanProcessor(new OTLPTraceExporter())
  }))
  const resource = resourceFromAttributes({ 'service.name': 'order-service' })
    .merge(detectResources({ detectors: [hostDetector, processDetector, envDetector] }))
  const started = new NodeTracerProvider({ resource, spanProcessors })
  started.register()
  provider = started
  tracingOn = true
  return true
}

/** Sends the spans still buffered (a process that ends, an app that closes). */
export async function flushTracing (): Promise<void> {
  await provider?.forceFlush()
}

/** Sends the spans still buffered and stops the SDK: the last thing a process does before it exits. */
export async function shutdown (): Promise<void> {
  const stopping = provider
  provider = undefined
  tracingOn = false
  await stopping?.shutdown()
}

const tracer = () => trace.getTracer('order-service')

/** The W3C traceparent of the active span, to keep with an order (undefined when none is active). */
export function currentTraceparent (): string | undefined {
  const carrier: { traceparent?: string } = {}
  propagation.inject(context.active(), carrier)
  return carrier.traceparent
}

/** The context a traceparent kept with an order names; none, a new trace. */
function contextOf (traceparent: string | null | undefined): Context {
  return traceparent ? propagation.extract(ROOT_CONTEXT, { traceparent }) : ROOT_CONTEXT
}

/** Ends `span` as failed: the error recorded as an exception event and the status. */
function failed (span: Span, message: string, type: string): void {
  span.recordException({ name: type, message })
  span.setStatus({ code: SpanStatusCode.ERROR, message })
  span.setAttribute('error.type', type)
}

/**
 * Runs one processing attempt in a span of its own, a child of the request that made the order,
 * with the work inside its context: what the work calls through instrumented clients joins the
 * trace. `statusAfter` says what the order becomes (order.status).
 */
export async function traceAttempt (claim: Claim, run: () => Promise<AttemptOutcome>, statusAfter: (ended: AttemptOutcome) => OrderStatus): Promise<AttemptOutcome> {
  const attributes: Attributes = { 'order.id': claim.order_id, attempt: claim.attempts }
  const span = tracer().startSpan('process order', { kind: SpanKind.CONSUMER, attributes }, contextOf(claim.traceparent))
  try {
    const ended = await context.with(trace.setSpan(context.active(), span), run)
    span.setAttribute('order.status', statusAfter(ended))
    if (!ended.ok) failed(span, ended.error, ended.retryable ? 'attempt_failed' : 'attempt_refused')
    return ended
  } finally {
    span.end()
  }
}

/**
 * Sends one webhook attempt as an HTTP client span, a child of the request that made its order
 * (a test event starts a trace of its own), with the span's `traceparent` among the headers: the
 * Standard Webhooks signature covers the id, timestamp and body, not the headers.
 */
export async function traceWebhook (
  claim: DeliveryClaim, url: string, headers: Record<string, string>, send: (headers: Record<string, string>) => Promise<AttemptResult>
): Promise<AttemptResult> {
  const { origin, pathname, hostname, port, protocol } = new URL(url)
  const attributes: Attributes = {
    'http.request.method': 'POST',
    // Without its query, which may hold a receiver's token.
    'url.full': `${origin}${pathname}`,
    'server.address': hostname,
    'server.port': Number(port) || (protocol === 'https:' ? 443 : 80),
    'webhook.id': claim.id,
    attempt: claim.attempts + 1
  }
  if (claim.order_id !== null) attributes['order.id'] = claim.order_id
  const span = tracer().startSpan('POST', { kind: SpanKind.CLIENT, attributes }, contextOf(claim.traceparent))
  try {
    const traced = { ...headers }
    propagation.inject(trace.setSpan(ROOT_CONTEXT, span), traced)
    const result = await send(traced)
    if (result.statusCode !== null) span.setAttribute('http.response.status_code', result.statusCode)
    if (result.kind !== 'delivered') failed(span, result.error ?? result.kind, result.statusCode === null ? result.kind : String(result.statusCode))
    return result
  } catch (err) {
    failed(span, (err as Error).message, 'exception')
    throw err
  } finally {
    span.end()
  }
}
