import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { dirname, join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import t from 'tap'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const pages = ['README.md', ...readdirSync(join(root, 'docs')).filter((name) => name.endsWith('.md')).map((name) => `docs/${name}`)]

// Code blocks hold shell comments (`# Jaeger ...`) and sample text that are neither headings nor links.
function prose (file: string): string[] {
  let fenced = false
  return readFileSync(file, 'utf8').split('\n').map((line) => {
    if (line.startsWith('```')) fenced = !fenced
    return fenced || line.startsWith('```') ? '' : line
  })
}

// GitHub's anchor for a heading: lower case, punctuation other than `-` and `_` dropped, spaces to `-`.
function slug (heading: string): string {
  return heading.trim().toLowerCase().replace(/[^\p{L}\p{N}\s_-]/gu, '').replace(/ /g, '-')
}

function anchors (file: string): Set<string> {
  return new Set(prose(file).flatMap((line) => /^#{1,6} (.+)$/.exec(line)?.[1] ?? []).map(slug))
}

function links (file: string): Array<{ line: number, target: string }> {
  return prose(file).flatMap((text, i) =>
    [...text.replace(/`[^`]*`/g, '').matchAll(/\]\(([^)\s]+)\)/g)].map((m) => ({ line: i + 1, target: m[1] ?? '' })))
}

t.test('the slug rule is GitHub\'s', async (t) => {
  t.equal(slug('Webhooks: `POST /webhooks`'), 'webhooks-post-webhooks')
  t.equal(slug('Pause and resume processing: `GET /processing`, `POST /processing/pause`, `POST /processing/resume`'),
    'pause-and-resume-processing-get-processing-post-processingpause-post-processingresume')
  t.equal(slug('PostgreSQL per 1,000 orders'), 'postgresql-per-1000-orders')
  t.equal(slug('retry_failed and set-up'), 'retry_failed-and-set-up')
})

t.test('README links every page under docs/, and every page links back to README', async (t) => {
  const fromReadme = new Set(links(join(root, 'README.md')).map(({ target }) => target.split('#')[0]))
  for (const page of pages.filter((page) => page !== 'README.md')) {
    t.ok(fromReadme.has(page), `README links ${page}`)
    t.match(readFileSync(join(root, page), 'utf8').split('\n')[0], /\]\(\.\.\/README\.md\)/, `${page} starts with a link to README`)
  }
})

for (const page of pages) {
  t.test(`${page}: every relative link reaches a file, and every #anchor a heading of it`, async (t) => {
    const source = join(root, page)
    let checked = 0
    for (const { line, target } of links(source)) {
      if (/^[a-z][a-z+.-]*:/i.test(target)) continue // https:, mailto:: not ours to check
      const [path, anchor] = target.split('#') as [string, string | undefined]
      const file = path === '' ? source : join(dirname(source), path)
      const where = `${page}:${line} (${target})`
      checked++
      if (!existsSync(file)) {
        t.fail(`${where}: ${relative(root, file)} does not exist`)
        continue
      }
      if (anchor !== undefined) t.ok(anchors(file).has(anchor), `${where}: #${anchor} is a heading of ${relative(root, file)}`)
    }
    t.ok(checked > 0, `${page} has relative links (its link back to README at least)`)
  })
}
