/** Where a store reports what goes wrong outside any request (a pino logger fits). */
export interface StoreLog {
  warn (details: object, message: string): void
  info (details: object, message: string): void
}
