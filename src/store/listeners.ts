/** Who to tell when something happens, and telling them. */
export class Listeners<T> {
  private readonly listeners = new Set<(value: T) => void>()

  get size (): number {
    return this.listeners.size
  }

  add (listener: (value: T) => void): () => void {
    this.listeners.add(listener)
    return () => { this.listeners.delete(listener) }
  }

  emit (value: T): void {
    for (const listener of this.listeners) listener(value)
  }
}
