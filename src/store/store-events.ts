import { ORDER_STATUSES, type OrderStatus } from '../order.ts'
import { ChangeListeners } from './change-log.ts'
import { Listeners } from './listeners.ts'
import type { ChangeListener, ProcessingState, ProcessingStateListener, WorkListener } from './order-store.ts'

/**
 * Who each store tells of what its transactions did (SQLite after its commits, PostgreSQL as its
 * notifications arrive): new work, the processing state, status changes, deliveries due, endpoints changed.
 */
export abstract class StoreEvents {
  protected readonly workListeners = new Listeners<number>()
  protected readonly stateListeners = new Listeners<ProcessingState>()
  protected readonly changeListeners = new ChangeListeners()
  protected readonly deliveryListeners = new Listeners<void>()
  protected readonly endpointListeners = new Listeners<void>()

  onDeliveries (listener: () => void): () => void {
    return this.deliveryListeners.add(listener)
  }

  onEndpoints (listener: () => void): () => void {
    return this.endpointListeners.add(listener)
  }

  onWork (listener: WorkListener): () => void {
    return this.workListeners.add(listener)
  }

  onProcessingState (listener: ProcessingStateListener): () => void {
    return this.stateListeners.add(listener)
  }

  onChanges (listener: ChangeListener, statuses: readonly OrderStatus[] = ORDER_STATUSES): () => void {
    return this.changeListeners.add(listener, statuses)
  }
}
