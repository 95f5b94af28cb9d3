import { once } from 'node:events'
import { createServer } from 'node:http'
import type { Test } from 'tap'

/** One span as a collector received it, its attributes flattened. */
export interface ReceivedSpan {
  service: string
  traceId: string
  spanId: string
  parentSpanId: string
  name: string
  /** OTLP's SpanKind: 1 internal, 2 server, 3 client, 4 producer, 5 consumer. */
  kind: number
  attributes: Record<string, string | number | boolean>
  /** 0 unset, 1 ok, 2 error. */
  status: { code: number, message?: string }
  events: Array<{ name: string, attributes: Record<string, string | number | boolean> }>
}

interface JsonValue { stringValue?: string, intValue?: string | number, boolValue?: boolean, doubleValue?: number }
interface JsonAttribute { key: string, value: JsonValue }

/** OTLP/JSON writes ids as hex; the spec's protobuf-JSON mapping as base64: either reads as hex. */
function hex (id: string | undefined): string {
  if (!id) return ''
  return /^[0-9a-f]+$/.test(id) ? id : Buffer.from(id, 'base64').toString('hex')
}

function flatten (attributes: JsonAttribute[] = []): Record<string, string | number | boolean> {
  return Object.fromEntries(attributes.map(({ key, value }) => [key,
    value.stringValue ?? (value.intValue !== undefined ? Number(value.intValue) : undefined) ?? value.boolValue ?? value.doubleValue ?? '']))
}

/**
 * An OTLP/HTTP trace receiver on a random port of 127.0.0.1, for exporters set to
 * OTEL_EXPORTER_OTLP_PROTOCOL=http/json: it decodes each export (JSON.parse) and keeps its spans.
 */
export class OtlpCollector {
  readonly spans: ReceivedSpan[] = []
  private readonly server = createServer((request, response) => {
    const chunks: Buffer[] = []
    request.on('data', (chunk: Buffer) => chunks.push(chunk))
    request.on('end', () => {
      if (request.url === '/v1/traces' && String(request.headers['content-type']).startsWith('application/json')) {
        this.add(JSON.parse(Buffer.concat(chunks).toString()))
        response.writeHead(200, { 'content-type': 'application/json' }).end('{}')
      } else {
        response.writeHead(415).end()
      }
    })
  })

  static async start (t: Test): Promise<OtlpCollector> {
    const collector = new OtlpCollector()
    const { server } = collector
    server.listen(0, '127.0.0.1')
    await once(server, 'listening')
    t.teardown(() => new Promise((resolve) => { server.closeAllConnections(); server.close(resolve) }))
    return collector
  }

  get endpoint (): string {
    const { port } = this.server.address() as { port: number }
    return `http://127.0.0.1:${port}`
  }

  /** The spans of one trace. */
  trace (traceId: string): ReceivedSpan[] {
    return this.spans.filter((span) => span.traceId === traceId)
  }

  private add (request: { resourceSpans?: Array<{ resource?: { attributes?: JsonAttribute[] }, scopeSpans?: Array<{ spans?: any[] }> }> }): void {
    for (const { resource, scopeSpans = [] } of request.resourceSpans ?? []) {
      const service = String(flatten(resource?.attributes)['service.name'])
      for (const { spans = [] } of scopeSpans) {
        for (const span of spans) {
          this.spans.push({
            service,
            traceId: hex(span.traceId),
            spanId: hex(span.spanId),
            parentSpanId: hex(span.parentSpanId),
            name: span.name,
            kind: span.kind,
            attributes: flatten(span.attributes),
            status: { code: span.status?.code ?? 0, message: span.status?.message },
            events: (span.events ?? []).map((event: { name: string, attributes?: JsonAttribute[] }) => ({ name: event.name, attributes: flatten(event.attributes) }))
          })
        }
      }
    }
  }
}
