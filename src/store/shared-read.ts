/**
 * Concurrent callers of one read share a query, as group commit shares a transaction among writes:
 * a caller joins the next query to start, never one already under way, so each answer is read
 * after its caller asked (a client that has just been answered 201 sees its order counted). While
 * a query runs, callers gather for the next one; so the database answers at most one query of
 * this kind at a time however many callers there are.
 */
export class SharedRead<T> {
  /** The query under way, if any. */
  private running: Promise<T> | null = null
  /** The query that starts once it ends, shared by everyone who asked meanwhile. */
  private next: Promise<T> | null = null

  constructor (private readonly read: () => Promise<T>) {}

  get (): Promise<T> {
    if (this.next) return this.next
    if (!this.running) return this.start()
    this.next = this.running.then(() => {}, () => {}).then(() => {
      this.next = null
      return this.start()
    })
    return this.next
  }

  private start (): Promise<T> {
    const query = this.read()
    this.running = query
    const done = () => { if (this.running === query) this.running = null }
    query.then(done, done)
    return query
  }
}
