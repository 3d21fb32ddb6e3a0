/**
 * Recorded events as CloudEvents, so an event-sourced service can publish them (an outbox
 * relay, a relay from `$all` by checkpoint) without a second event format.
 */
import { type CloudEvent, createEnvelope, dataschemaFor, type ExtensionValue } from '@herald/core';
import type { RecordedEvent } from './types.ts';

export interface ToCloudEventOptions {
  /** The CloudEvents `source` (a URI-reference naming the producing service), e.g. `'urn:herald:orders'`. */
  readonly source: string;
  /** Partition key (default: the stream id, so a stream's events stay in order on a transport). */
  readonly partitionKey?: string;
}

/**
 * `type`, `id`, `time` (recorded time, RFC 3339), `data`, `dataschema`
 * (`urn:herald:schema:<type>:v<schemaVersion>`), `subject` = stream id, `sequence` = global
 * position (decimal), `partitionkey`, `correlationid`, `causationid`, and `metadata` entries as
 * extensions (names must be CloudEvents-valid: lower-case a-z0-9, at most 20 characters).
 * Throws `HERALD_ERR_ENVELOPE_INVALID` when they are not.
 */
export function toCloudEvent(event: RecordedEvent, options: ToCloudEventOptions): CloudEvent {
  const extensions: Record<string, ExtensionValue> = {};
  if (event.metadata) for (const [k, v] of Object.entries(event.metadata)) extensions[k] = v;
  return createEnvelope({
    type: event.type,
    source: options.source,
    id: event.id,
    time: new Date(event.recordedAt),
    data: event.data,
    dataschema: dataschemaFor(event.type, event.schemaVersion),
    subject: event.streamId,
    sequence: String(event.position),
    partitionkey: options.partitionKey ?? event.streamId,
    ...(event.correlationId !== undefined ? { correlationid: event.correlationId } : {}),
    ...(event.causationId !== undefined ? { causationid: event.causationId } : {}),
    ...(Object.keys(extensions).length > 0 ? { extensions } : {}),
  });
}
