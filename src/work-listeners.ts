import type { WorkListener } from './store.ts'

/** Who to tell when new work becomes claimable. */
export class WorkListeners {
  private readonly listeners = new Set<WorkListener>()

  add (listener: WorkListener): () => void {
    this.listeners.add(listener)
    return () => { this.listeners.delete(listener) }
  }

  emit (availableAt: number): void {
    for (const listener of this.listeners) listener(availableAt)
  }
}
