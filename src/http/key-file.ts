import { readFileSync, watch, type FSWatcher } from 'node:fs'
import { basename, dirname } from 'node:path'
import { KeyFileError, parseKeyFile, type KeyEntry } from './api-key.ts'

/**
 * Changes to a file come as several events (an editor writes, truncates, renames): one reload
 * this long after the last of them.
 */
const DEBOUNCE_MS = 100

/** The keys of an API_KEYS_FILE; a KeyFileError names the file and the line of the first error. */
export function readKeyFile (path: string): KeyEntry[] {
  return parseText(path, readText(path))
}

function readText (path: string): string {
  try {
    return readFileSync(path, 'utf8')
  } catch (err) {
    throw new KeyFileError(`API_KEYS_FILE ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`)
  }
}

function parseText (path: string, text: string): KeyEntry[] {
  try {
    return parseKeyFile(text)
  } catch (err) {
    throw new KeyFileError(`API_KEYS_FILE ${path} ${(err as Error).message}`)
  }
}

export interface KeyFileWatch {
  /** New keys read from the file. */
  loaded: (keys: KeyEntry[]) => void
  /** A reload that failed: the keys in use stay as they were. */
  failed: (err: Error) => void
}

/**
 * Reads the file again on SIGHUP and when its directory changes: the directory, not the file, so
 * that a file replaced by a rename (an atomic write, a Kubernetes secret's symlink swap) is seen
 * too. Only a change of content counts as a reload. Returns the function that stops watching.
 */
export function watchKeyFile (path: string, { loaded, failed }: KeyFileWatch): () => void {
  let last = readText(path)
  let timer: NodeJS.Timeout | undefined
  const reload = () => {
    timer = undefined
    try {
      const text = readText(path)
      if (text === last) return
      last = text
      loaded(parseText(path, text))
    } catch (err) {
      failed(err as Error)
    }
  }
  const onSignal = () => { last = ''; reload() }
  const schedule = (_event: string, filename: string | Buffer | null) => {
    // Some platforms give no name: then any change may be it.
    if (filename !== null && !String(filename).startsWith('..') && String(filename) !== basename(path)) return
    clearTimeout(timer)
    timer = setTimeout(reload, DEBOUNCE_MS)
  }
  process.on('SIGHUP', onSignal)
  const watcher: FSWatcher = watch(dirname(path), schedule)
  // The directory removed or unreadable: the keys in use stay, SIGHUP still reloads.
  watcher.on('error', failed)
  return () => {
    process.off('SIGHUP', onSignal)
    clearTimeout(timer)
    watcher.close()
  }
}
