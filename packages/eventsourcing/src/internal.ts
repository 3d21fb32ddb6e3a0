// Internals shared by Herald's own backends (@herald/sqlite, @herald/postgres); no stability promise.
export {
  categoryOf,
  checkCategory,
  checkDirection,
  checkExpected,
  checkExpectedVersion,
  checkMaxCount,
  checkMetadata,
  checkPositionArg,
  checkStreamId,
  checkVersionArg,
  decodeRow,
  finishDecode,
  encodeJson,
  exactRetry,
  prepareEvents,
  visibility,
  show,
} from './backend.ts';
export type { PreparedEvent, StoredRow } from './backend.ts';
export { streamDeleted, idempotencyConflict, invalidArgument, closedError } from './errors.ts';
export { CatchUpSubscription } from './subscription.ts';
export type { CatchUpSource } from './subscription.ts';
export { projectionFailed, checkRebuildOptions, resolveRetry, retryDelay, wants } from './projections.ts';
export { checkSave, checkListOptions, encodeCursor, decodeCursor, parseStoredInstance, parseStoredTimelineEntry } from './saga-store.ts';
