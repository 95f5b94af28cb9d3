/** The operationIds clients are generated with: renaming one breaks every client, so they are fixed here. */
export const OPERATION_IDS = [
  'createOrder', 'listOrders', 'getOrder', 'deleteOrder', 'deleteUserOrders', 'cancelOrder', 'retryOrder', 'retryFailedOrders', 'createOrderBatch', 'streamOrders',
  'getOrderMetrics', 'getOrderCompletions', 'populateOrders', 'getProcessing', 'pauseProcessing', 'resumeProcessing',
  'createWebhook', 'listWebhooks', 'getWebhook', 'deleteWebhook', 'testWebhook', 'redeliverWebhook', 'listWebhookDeliveries',
  'health', 'ready', 'metrics', 'dashboard', 'dashboardScript', 'dashboardChartScript'
]
