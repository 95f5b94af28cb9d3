import { existsSync } from 'node:fs'
import { chromium, type Browser } from 'playwright-core'
import type { Test } from 'tap'

const CHROMIUM = '/usr/bin/chromium'
// Flags that keep Chromium from reaching out to the network this machine does not have.
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync']

/** The reason to skip a browser test, or false when Debian's Chromium is installed. */
export const skipWithoutChromium = existsSync(CHROMIUM) ? false : `no ${CHROMIUM}: apt-get install chromium (.ci/run does) to run the browser test`

/** Debian's Chromium, headless, closed when the test ends; `args` are added to the usual flags. */
export async function launchChromium (t: Test, args: string[] = []): Promise<Browser> {
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: [...ARGS, ...args] })
  t.teardown(() => browser.close())
  return browser
}
