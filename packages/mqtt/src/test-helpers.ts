// Helpers for the bridge's integration and end-to-end tests (not part of the public API).
import { randomUUID } from 'node:crypto';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import type { CloudEvent, Delivery, Transport } from '@herald/core';

export const MQTT_URL = process.env.HERALD_MQTT_URL ?? 'mqtt://127.0.0.1:1883';
export const MQTT_HOST = new URL(MQTT_URL).host;
export const MQTT_PORT = Number(new URL(MQTT_URL).port || 1883);

/** A topic level and client-id stem no other test uses. */
export function uniquePrefix(name: string): string {
  return `ht-${name}-${randomUUID().slice(0, 8)}`;
}

/** A device: a plain mqtt.js MQTT 5 client with a clean session. */
export async function connectDevice(clientId: string, options: IClientOptions = {}): Promise<MqttClient> {
  return mqtt.connectAsync(MQTT_URL, { protocolVersion: 5, clientId, reconnectPeriod: 0, connectTimeout: 5000, ...options });
}

export interface ReadResult {
  readonly envelopes: CloudEvent[];
  readonly deliveries: Array<Pick<Delivery, 'key' | 'partition' | 'position'>>;
}

/**
 * Reads `topic` from the start in a fresh group until `until` holds (or `timeoutMs` passes, then
 * returns what it has), acking everything.
 */
export async function readTopic(transport: Transport, topic: string, until: (envs: readonly CloudEvent[]) => boolean, timeoutMs: number): Promise<ReadResult> {
  const sub = transport.subscribe(topic, { group: `check-${randomUUID()}`, startFrom: 'earliest' });
  const envelopes: CloudEvent[] = [];
  const deliveries: ReadResult['deliveries'] = [];
  const timer = setTimeout(() => void sub.close({ timeoutMs: 0 }), timeoutMs);
  try {
    if (until(envelopes)) return { envelopes, deliveries };
    for await (const d of sub) {
      if (d.envelope) envelopes.push(d.envelope);
      deliveries.push({ key: d.key, partition: d.partition, position: d.position });
      d.ack();
      if (until(envelopes)) break;
    }
  } finally {
    clearTimeout(timer);
    await sub.close({ timeoutMs: 1000 });
  }
  return { envelopes, deliveries };
}

/** A transport whose `publish` runs `before` first (which may throw or wait), then delegates. */
export function interceptPublish(inner: Transport, before: (call: number) => void | Promise<void>): Transport {
  let calls = 0;
  return {
    get name() {
      return inner.name;
    },
    get capabilities() {
      return inner.capabilities;
    },
    ensureTopic: (t, o) => inner.ensureTopic(t, o),
    async publish(topic, messages) {
      await before(++calls);
      return inner.publish(topic, messages);
    },
    subscribe: (t, o) => inner.subscribe(t, o),
    close: (o) => inner.close(o),
    [Symbol.asyncDispose]: () => inner[Symbol.asyncDispose](),
  };
}

/** Removes a persistent session left on the broker by `clientId` (connect clean, disconnect with expiry 0). */
export async function dropSession(clientId: string): Promise<void> {
  const c = await mqtt.connectAsync(MQTT_URL, { protocolVersion: 5, clientId, clean: true, reconnectPeriod: 0, connectTimeout: 5000, properties: { sessionExpiryInterval: 0 } });
  await c.endAsync();
}
